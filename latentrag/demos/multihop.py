"""Demo section: a bridge question where dense retrieval misses the second hop, and the hop tree."""

from __future__ import annotations

import time
from typing import Any, TextIO

from latentrag.compressors.relevance import RelevanceFilter
from latentrag.retrievers.dense import DenseRetriever
from latentrag.retrievers.multihop import MultiHopRetriever

QUESTIONS = ["What river runs through the city where Albert Einstein was born?"]


def run(store: Any, out: TextIO) -> None:
    print("\n== Multi-hop retrieval (MultiHopRetriever defaults: dense + BM25 hop 1, title links, k=4) ==", file=out)
    dense = DenseRetriever(store, k=4)
    multi = MultiHopRetriever(store, k=4)
    multi.retrieve("warm-up")
    for q in QUESTIONS:
        t0 = time.perf_counter()
        d_hits = dense.retrieve(q)
        d_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        trace = multi.trace(q)
        m_ms = (time.perf_counter() - t0) * 1000
        print(f"\nQ: {q}", file=out)
        print(f"  dense     [{d_ms:5.1f} ms]: {[h.id for h in d_hits]}", file=out)
        print(f"  multi-hop [{m_ms:5.1f} ms]: {[h.id for h in trace.hits]}  (no LLM call between hops)", file=out)
        dense_ids = {d.id for d in d_hits}
        new = [f"{h.id} (hop {h.meta['hop']}, {h.meta['via']})" for h in trace.hits if h.id not in dense_ids]
        if new:
            print(f"  not in the dense list: {', '.join(new)}", file=out)
        print("  hop tree (#n = rank in the final list):", file=out)
        for line in trace.render(width=60).splitlines()[2:]:
            print(f"    {line}", file=out)
        kept = RelevanceFilter().compress(q, trace.hits)
        print(f"  RelevanceFilter() keeps {[(h.id, round(h.meta['relevance'], 2)) for h in kept]} of "
              f"{len(trace.hits)} (a later-hop passage is judged by how it was found, not by its question "
              "similarity alone)", file=out)
