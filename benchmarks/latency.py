"""Query latency end to end (query encoding included, no embedding cache), one query at a time, with the
retrievers interleaved per query so load from other processes falls on every arm alike: DenseRetriever (the
baseline), HybridRetriever, MultiHopRetriever (default: hybrid first stage, links, no hop network), the same with
the hop network's branches (``hop_network=True``, the previous default) and MultiHopRetriever with the dense first
stage (hop network on), over the shared multi-hop dev corpus (14,178 passages, FaissStore flat), k=10.

    python benchmarks/latency.py [--per-set 50]

Prints one JSON line (p50/p95 ms and the p50 ratio to dense).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import data_root, report

from latentrag.encoders import default_encoder
from latentrag.retrievers import DenseRetriever, HybridRetriever, MultiHopRetriever
from latentrag.training.multihop import DiskEmbeddingCache, load_dev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-set", type=int, default=50, help="questions per dev set")
    args = ap.parse_args()
    store, sets = load_dev(data_root(), DiskEmbeddingCache(default_encoder()))
    store.encoder = default_encoder(cache_size=0)  # new questions: every query is encoded
    questions = [q for ds in sets.values() for q in ds.questions[: args.per_set]]
    arms = {"dense": DenseRetriever(store, k=10), "hybrid": HybridRetriever(store, k=10),
            "multihop": MultiHopRetriever(store, k=10),
            "multihop_with_hop_network": MultiHopRetriever(store, k=10, hop_network=True),
            "multihop_dense_first_stage": MultiHopRetriever(store, k=10, first_stage="dense")}
    for r in arms.values():
        r.retrieve("a warm-up question")
    ms: dict[str, list[float]] = {a: [] for a in arms}
    for q in questions:
        for name, r in arms.items():
            t0 = time.perf_counter()
            r.retrieve(q)
            ms[name].append((time.perf_counter() - t0) * 1000)
    out: dict[str, object] = {"queries": len(questions), "passages": len(store), "k": 10, "baseline": "dense"}
    for name, v in ms.items():
        out[name] = {"p50_ms": round(float(np.median(v)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2),
                     "p50_ratio_vs_dense": round(float(np.median(v) / np.median(ms["dense"])), 2)}
    report("latency", out)


if __name__ == "__main__":
    main()
