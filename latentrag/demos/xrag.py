"""Demo section: one question answered by the local frozen LM in each xRAG mode, with tokens and timings,
then token-budget compression of the same passages for an API LLM."""

from __future__ import annotations

import time
from typing import Any, TextIO

from latentrag.retrievers.dense import DenseRetriever

QUESTION = "Who directed the film about a giant shark?"


def run(store: Any, out: TextIO) -> None:
    from latentrag.compressors import TokenBudgetCompressor, XRAGReader

    hits = DenseRetriever(store, k=3).retrieve(QUESTION)
    print("\n== Context compression ==", file=out)
    t0 = time.perf_counter()
    reader = XRAGReader()
    print(f"xRAG reader: {reader.lm.name} + projector ({reader.tokens_per_doc} soft token(s) per passage), "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=out)
    print(f"Q: {QUESTION}  (3 retrieved passages)", file=out)
    for mode in ("text", "xrag", "none"):
        t0 = time.perf_counter()
        first = reader.answer_batch([QUESTION], [hits], mode=mode, max_new_tokens=1)[0]
        ttft = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        answer = reader.answer_batch([QUESTION], [hits], mode=mode, max_new_tokens=24)[0]
        total = (time.perf_counter() - t0) * 1000
        print(f"  {mode:<5} {first.prompt_tokens:>4} prompt tokens, first token {ttft:6.0f} ms, "
              f"answer {total:6.0f} ms: {answer.text[:80]!r}", file=out)
    budget = TokenBudgetCompressor(ratio=0.25)
    kept = budget.compress(QUESTION, hits)
    before = sum(h.meta.get("original_tokens", 0) for h in kept)
    after = sum(h.meta.get("kept_tokens", 0) for h in kept)
    print(f"\nTokenBudgetCompressor(ratio=0.25) for an API LLM: {len(hits)} passages -> {len(kept)}, "
          f"{after} of {before} tokens in the kept passages:", file=out)
    for h in kept:
        print(f"  {h.id:<14} {h.text[:100]}", file=out)
