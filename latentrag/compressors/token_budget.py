"""``TokenBudgetCompressor``: query-aware extractive compression of retrieved text to a token budget.

For API LLMs that only take text. Every hit is split into sentences; each sentence is scored against
the query; the best sentences are kept until the budget (counted with tiktoken) is full, and each hit
keeps its surviving sentences in their original order. Hits keep their order; a hit with no
surviving sentence is dropped. Scores are cosines between the query and sentence embeddings
(``scorer="embedding"``, the shipped MiniLM, cached) or an IDF-weighted word overlap
(``scorer="lexical"``, no model, about 20x faster). ``rank_prior`` optionally favours sentences of
earlier hits (0 by default: on the dev QA of ``benchmarks/compression.py`` it did not help).

Each kept hit records ``original_tokens``, ``kept_tokens`` and ``kept_ratio`` in its metadata.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from latentrag.compressors.base import BaseCompressor
from latentrag.encoders import Encoder, default_encoder, load_encoder
from latentrag.errors import InvalidInputError, check_positive_int
from latentrag.tokens import get_encoding
from latentrag.types import Hit

SCORERS = ("embedding", "lexical")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_WORD = re.compile(r"\w+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (a light rule: end punctuation before a capital or digit, or a line break).

    >>> split_sentences("Jaws is a 1975 film. It was directed by Spielberg.\\nBox office: $470M")
    ['Jaws is a 1975 film.', 'It was directed by Spielberg.', 'Box office: $470M']
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class TokenBudgetCompressor(BaseCompressor):
    """Keep the sentences that best match the query until ``budget_tokens`` (or ``ratio`` of the input) is full.

    Exactly one of ``budget_tokens`` (an absolute tiktoken budget for all hits together) and ``ratio``
    (a fraction of the input's tokens, e.g. 0.25) is given. ``encoding`` is the tiktoken encoding of the
    target LLM (``cl100k_base`` for GPT-4-class models, ``o200k_base`` for GPT-4o).
    """

    #: bookkeeping keys that framework adapters keep out of LLM prompts
    llm_hidden_keys = ("original_tokens", "kept_tokens", "kept_ratio")

    def __init__(
        self,
        budget_tokens: int | None = None,
        *,
        ratio: float | None = None,
        encoding: str = "cl100k_base",
        scorer: str = "embedding",
        encoder: Encoder | str | None = None,
        rank_prior: float = 0.0,
    ) -> None:
        if (budget_tokens is None) == (ratio is None):
            msg = f"give exactly one of budget_tokens and ratio, got budget_tokens={budget_tokens!r}, ratio={ratio!r}."
            raise InvalidInputError(msg)
        if budget_tokens is not None:
            check_positive_int("budget_tokens", budget_tokens)
        if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
            msg = f"ratio must be a number in (0, 1], got {ratio!r}."
            raise InvalidInputError(msg)
        if scorer not in SCORERS:
            msg = f"scorer must be one of {list(SCORERS)}, got {scorer!r}."
            raise InvalidInputError(msg)
        self.budget_tokens, self.ratio, self.scorer = budget_tokens, ratio, scorer
        self.encoding_name = encoding
        self.rank_prior = float(rank_prior)
        self._enc = get_encoding(encoding)
        self._encoder = None
        if scorer == "embedding":
            self._encoder = default_encoder() if encoder is None else load_encoder(encoder)

    def _count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._enc.encode_ordinary_batch(list(texts))]

    def _scores(self, query: str, sentences: list[str]) -> np.ndarray:
        if self._encoder is not None:
            vecs = self._encoder.encode([query, *sentences])
            return vecs[1:] @ vecs[0]
        return lexical_scores(query, sentences)

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        per_hit = [split_sentences(h.text) for h in hits]
        flat = [(i, j, s) for i, sents in enumerate(per_hit) for j, s in enumerate(sents)]
        if not flat:
            return []
        lengths = self._count([s for _, _, s in flat])
        originals = self._count([h.text for h in hits])
        total = sum(originals)
        budget = self.budget_tokens if self.budget_tokens is not None else max(1, int(total * float(self.ratio or 1)))
        scores = self._scores(query, [s for _, _, s in flat])
        prior = np.array([self.rank_prior * (1 - i / max(len(hits), 1)) for i, _, _ in flat])
        kept: set[int] = set()
        used = 0
        for idx in np.argsort(-(scores + prior), kind="stable"):
            # a sentence joins with one separator token at most; greedy fill, smaller sentences may still fit
            if used + lengths[idx] <= budget:
                kept.add(int(idx))
                used += lengths[idx]
        out = []
        for i, h in enumerate(hits):
            parts = [flat[k][2] for k in sorted(kept) if flat[k][0] == i]
            if not parts:
                continue
            text = " ".join(parts)
            n = self._count([text])[0]
            meta: dict[str, Any] = {**h.meta, "original_tokens": originals[i], "kept_tokens": n,
                                    "kept_ratio": round(n / max(originals[i], 1), 4)}
            out.append(h.copy(text=text, metadata=meta))
        return out


def lexical_scores(query: str, sentences: list[str]) -> np.ndarray:
    """IDF-weighted overlap of query words with each sentence, IDF over the sentences themselves."""
    q_words = set(_WORD.findall(query.lower()))
    docs = [set(_WORD.findall(s.lower())) for s in sentences]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    idf = {w: math.log(1 + n / df[w]) for w in q_words if df.get(w)}
    norm = sum(idf.values()) or 1.0
    return np.array([sum(idf.get(w, 0.0) for w in d & q_words) / norm for d in docs], dtype=np.float32)
