"""Demo section: single-hop dense retrieval (the baseline every other section builds on), with timings."""

from __future__ import annotations

import time
from typing import Any, TextIO

from latentrag.retrievers.dense import DenseRetriever

QUESTIONS = [
    "Who directed the film about a giant shark?",
    "Which element did Marie Curie discover with her husband?",
    "How do vaccines protect against disease?",
]


def run(store: Any, out: TextIO) -> None:
    print("\n== Dense retrieval (DenseRetriever, k=3) ==", file=out)
    retriever = DenseRetriever(store, k=3)
    retriever.retrieve("warm-up")
    for q in QUESTIONS:
        t0 = time.perf_counter()
        hits = retriever.retrieve(q)
        ms = (time.perf_counter() - t0) * 1000
        print(f"\nQ: {q}  [{ms:.1f} ms]", file=out)
        for h in hits:
            print(f"  {h.score:.3f}  {h.id:<14} {h.text[:90]}", file=out)
