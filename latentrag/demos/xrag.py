"""Demo section: one question answered by the local frozen LM in each xRAG mode, with prompt size, time to the
first token, and whether the answer is right; then token-budget compression of the same passages for an API LLM.

The question is one whose answer passage the dense retriever ranks first, so every mode gets the right
passage and the answers show what each way of reading it keeps: the passages as text, the best one as
text and the others as soft tokens (mixed), as 4 soft tokens each (xRAG), or no passage at all.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from latentrag.retrievers.dense import DenseRetriever

QUESTION = "Where was Kurt Cobain born?"
#: The passage that answers it, and the string a right answer contains.
GOLD_ID, EXPECTED = "cobain", "Aberdeen"
K = 3
MAX_NEW_TOKENS = 24
RATIO = 0.25  # TokenBudgetCompressor keeps this share of the passages' tokens
MODES = (
    ("text", "the passages as text"),
    ("mixed", "the best-ranked passage as text, the others as soft tokens"),
    ("xrag", "4 soft tokens per passage"),
    ("none", "no passage"),
)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar and no deprecation notices from transformers inside the section
    (restored after): they say nothing to someone running the demo."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated.*")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def run(store: Any, out: TextIO) -> None:
    with _quiet_transformers():
        _run(store, out)


def _run(store: Any, out: TextIO) -> None:
    from latentrag.compressors import TokenBudgetCompressor, XRAGReader
    from latentrag.tokens import count_tokens

    print("\n== Context compression (XRAGReader on SmolLM2-135M, TokenBudgetCompressor) ==", file=out)
    hits = DenseRetriever(store, k=K).retrieve(QUESTION)
    t0 = time.perf_counter()
    reader = XRAGReader()
    print(f"xRAG reader: {reader.lm.name} + projector ({reader.tokens_per_doc} soft tokens per passage), "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=out)
    rank = next((i for i, h in enumerate(hits, 1) if h.id == GOLD_ID), None)
    where = f"ranked #{rank}" if rank else "not retrieved"
    print(f"\nQ: {QUESTION}\n  DenseRetriever top {K}: {[h.id for h in hits]}, the answer passage {GOLD_ID!r} is "
          f"{where}\n  a right answer contains {EXPECTED!r} (greedy decoding, up to {MAX_NEW_TOKENS} new tokens)",
          file=out)
    reader.answer("warm-up", [], mode="none", max_new_tokens=1)  # one-time allocations stay out of the timings
    right = []
    for mode, what in MODES:
        prompt = reader.prompt_tokens(QUESTION, hits, mode=mode)
        t0 = time.perf_counter()
        first_ms = None
        pieces = []
        for piece in reader.stream(QUESTION, hits, mode=mode, max_new_tokens=MAX_NEW_TOKENS):
            if first_ms is None:
                first_ms = (time.perf_counter() - t0) * 1000
            pieces.append(piece)
        total_ms = (time.perf_counter() - t0) * 1000
        answer = "".join(pieces).strip()
        ok = EXPECTED.lower() in answer.lower()
        if ok:
            right.append(mode)
        first = f"{first_ms:5.0f} ms" if first_ms is not None else "   - (no token)"
        print(f"\n  {mode:<5} ({what}): {prompt} prompt tokens, first token {first}, answer in {total_ms:.0f} ms",
              file=out)
        print(f"    {answer!r}", file=out)
        print(f"    {'RIGHT' if ok else 'WRONG'}: the answer {'contains' if ok else 'does not contain'} "
              f"{EXPECTED!r}", file=out)
    wrong = [m for m, _ in MODES if m not in right]
    print(f"\n  right: {', '.join(right) or 'no mode'}; wrong: {', '.join(wrong) or 'no mode'}. Soft tokens buy a "
          "shorter prompt and a faster first token, not accuracy;\n  mixed reading keeps the best-ranked passage as "
          "text (measured: README, Benchmarks, Context compression)", file=out)
    budget = TokenBudgetCompressor(ratio=RATIO)
    kept = budget.compress(QUESTION, hits)
    before = sum(count_tokens(h.text) for h in hits)
    after = sum(h.meta.get("kept_tokens", 0) for h in kept)
    still = any(EXPECTED.lower() in h.text.lower() for h in kept)
    print(f"\nTokenBudgetCompressor(ratio={RATIO}) for an API LLM: {len(hits)} passages, {before} tiktoken tokens "
          f"-> {len(kept)} {'passage' if len(kept) == 1 else 'passages'}, {after} tokens; {EXPECTED!r} is "
          f"{'still in' if still else 'cut from'} the kept text:", file=out)
    for h in kept:
        print(f"  {h.id:<14} {h.text[:100]}", file=out)
