"""FaissStore index types on real embeddings: recall@10 against exact ``flat`` search, bytes per
vector, index memory and search latency (batched and one query at a time). The ``+rerank`` arms re-score
the compressed index's top 400 with the exact vectors, memory-mapped from the saved store (their bytes per
vector are what stays in memory; the exact rows, 1,536 bytes each, are on disk).

    python benchmarks/store.py [--plot]

Corpus: every passage of the shared multi-hop train and dev files (MiniLM embeddings, cached under
``.cache/multihop``); queries: the dev questions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import data_root, plot_path, report

from latentrag.encoders import default_encoder
from latentrag.stores.faiss import FaissStore
from latentrag.training.multihop import DiskEmbeddingCache, expand_paths, load_examples

#: candidates the ``+rerank`` arms re-score with the exact vectors (``FaissStore(rerank=...)``)
RERANK = 400


def corpus_and_queries() -> tuple[np.ndarray, np.ndarray]:
    root = data_root() / "multihop"
    ex = load_examples(expand_paths([str(root / "train*.jsonl"), str(root / "dev_*.jsonl")]))
    texts = list(dict.fromkeys(t for e in ex for t in (*e.gold, *e.pool)))
    dev = [e.question for e in ex][-1000:]  # the last files read are the dev sets
    cache = DiskEmbeddingCache(default_encoder())
    return cache.embed(texts), cache.embed(dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    x, q = corpus_and_queries()
    ids = [str(i) for i in range(len(x))]
    enc = default_encoder()
    results = {}
    truth = None
    tmp = Path(tempfile.mkdtemp(prefix="latentrag-store-bench-"))
    for kind in ("flat", "hnsw", "pq", "ivfpq", "pq+rerank", "ivfpq+rerank"):
        index, _, rerank = kind.partition("+")
        t0 = time.perf_counter()
        store = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=enc, index=index,
                                      rerank=RERANK if rerank else 0)
        store.search(q[:1], 1)  # trains the PQ types
        build_s = time.perf_counter() - t0
        if rerank:  # opened from disk: the exact vectors are memory-mapped, the index alone is in memory
            store.save(tmp / kind)
            store = FaissStore.load(tmp / kind, encoder=enc)
        t0 = time.perf_counter()
        res = store.search(q, args.k)
        batch_ms = (time.perf_counter() - t0) * 1000 / len(q)
        t0 = time.perf_counter()
        for row in q[:200]:
            store.search(row[None, :], args.k)
        single_ms = (time.perf_counter() - t0) * 1000 / 200
        got = [{h.id for h in r} for r in res]
        if truth is None:
            truth = got
        recall = float(np.mean([len(a & b) / args.k for a, b in zip(truth, got, strict=True)]))
        before = store.nbytes()
        if rerank:  # in memory per vector (codes and quantisers, amortised); the exact rows stay on disk
            per_vec = before / len(x)
        else:
            extra = 2000
            store.add([f"x{i}" for i in range(extra)], ids=[f"x{i}" for i in range(extra)], vectors=x[:extra])
            per_vec = (store.nbytes() - before) / extra
        results[kind] = {
            f"recall@{args.k}_vs_flat": round(recall, 4), "bytes_per_vector": round(per_vec, 1),
            "index_mb": round(before / 2**20, 2), "build_s": round(build_s, 2),
            "ms_per_query_batched": round(batch_ms, 4), "ms_per_query_single": round(single_ms, 4),
        }
    shutil.rmtree(tmp, ignore_errors=True)
    flat = results["flat"]
    for v in results.values():
        v["size_ratio_vs_flat"] = round(flat["bytes_per_vector"] / max(v["bytes_per_vector"], 1e-9), 1)
        v["latency_ratio_vs_flat"] = round(v["ms_per_query_single"] / flat["ms_per_query_single"], 3)
    report("store", {"n_vectors": len(x), "n_queries": len(q), "dim": int(x.shape[1]), "baseline": "flat",
                     "index_types": results})
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.4))
        for kind, v in results.items():
            ax.scatter(v["bytes_per_vector"], v[f"recall@{args.k}_vs_flat"], s=40)
            ax.annotate(f"{kind} ({v['ms_per_query_single']:.2f} ms)", (v["bytes_per_vector"],
                        v[f"recall@{args.k}_vs_flat"]), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per vector")
        ax.set_ylabel(f"recall@{args.k} vs flat")
        ax.set_title(f"FaissStore index types, {len(x)} MiniLM vectors")
        fig.tight_layout()
        fig.savefig(plot_path("store"), dpi=120)


if __name__ == "__main__":
    main()
