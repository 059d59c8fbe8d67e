"""Demo section: dense top-20, then the reranker's order (bi-encoder cosine, late-interaction MaxSim and BM25
mixed) and the relevance filter's cut."""

from __future__ import annotations

import time
from typing import Any, TextIO

from latentrag.retrievers.dense import DenseRetriever

QUESTIONS = ["Which singer was born in Stone Town?", "Which element did Marie Curie discover?",
             "What is the boiling point of liquid nitrogen on Mars?"]


def run(store: Any, out: TextIO) -> None:
    from latentrag.compressors import CrossEncoderReranker, RelevanceFilter

    print("\n== Reranking and relevance filtering (CrossEncoderReranker + RelevanceFilter) ==", file=out)
    dense = DenseRetriever(store, k=20)
    t0 = time.perf_counter()
    reranker, keep = CrossEncoderReranker(), RelevanceFilter(max_k=5)
    print(f"reranker {reranker.model_name} loaded in {time.perf_counter() - t0:.1f} s; "
          f"filter threshold p >= {keep.threshold:.2f}", file=out)
    for q in QUESTIONS:
        hits = dense.retrieve(q)
        t0 = time.perf_counter()
        ranked = reranker.compress(q, hits)
        rr_ms = (time.perf_counter() - t0) * 1000
        kept = keep.compress(q, ranked)
        print(f"\nQ: {q}", file=out)
        print(f"  dense top-5 of 20: {[h.id for h in hits[:5]]}", file=out)
        print(f"  reranked top-5   : {[h.id for h in ranked[:5]]}  [{rr_ms:.0f} ms for 20 pairs]", file=out)
        if ranked and hits and ranked[0].id != hits[0].id:
            print(f"  the reranker puts {ranked[0].id!r} first: {ranked[0].text[:90]}...", file=out)
        if kept:
            print(f"  kept by the filter: {[(h.id, round(h.meta['relevance'], 2)) for h in kept]}", file=out)
        else:
            best = max(keep.hit_probabilities(q, ranked[:1])[0], default=0.0)
            print(f"  kept by the filter: nothing (the best passage has p = {best:.2f} < {keep.threshold:.2f}: the "
                  "LLM gets no context)", file=out)
