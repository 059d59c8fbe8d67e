"""BM25 over one query's candidates, with document frequencies that do not come from those candidates.

A reranker is handed a few dozen candidates, not a corpus, so it cannot know how rare a query word is:
inside a BM25 top-100, the query's main word is in every candidate. :class:`TermStats` carries document
frequencies measured once on a general English corpus (``latentrag train reranker-fusion`` builds the
shipped table from ~40k Wikipedia, MS MARCO, WikiQA and TrecQA passages of ``shared/data``, never the
reported test sets) and scores candidates with Okapi BM25 (Anserini's ``k1=0.9, b=0.4``; the average
length is the candidates'). Words are lower-cased ``\\w\\w+`` runs minus English stop words, as
:class:`~latentrag.retrievers.BM25Index` tokenises (bm25s' defaults).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from latentrag.errors import ModelLoadError

_WORDS = re.compile(r"(?u)\b\w\w+\b")


def _stopwords() -> frozenset[str]:
    from bm25s.tokenization import Tokenizer

    return frozenset(Tokenizer(stopwords="en").stopwords)


class TermStats:
    """Document frequencies of words (``df``) over ``n_docs`` passages, and BM25 with them."""

    def __init__(self, df: dict[str, int], n_docs: int, *, k1: float = 0.9, b: float = 0.4) -> None:
        if n_docs < 1:
            msg = f"n_docs must be >= 1, got {n_docs!r}."
            raise ValueError(msg)
        self.df, self.n_docs, self.k1, self.b = df, int(n_docs), float(k1), float(b)
        self._stop = _stopwords()

    def __repr__(self) -> str:
        return f"TermStats(words={len(self.df)}, n_docs={self.n_docs}, k1={self.k1}, b={self.b})"

    def words(self, text: str) -> list[str]:
        return [w for w in _WORDS.findall(text.lower()) if w not in self._stop]

    def idf(self, word: str) -> float:
        df = self.df.get(word, 0)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    def bm25(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """BM25 of each text for ``query`` (0 where no query word occurs), shape ``(len(texts),)``."""
        terms = {w: self.idf(w) for w in set(self.words(query))}
        out = np.zeros(len(texts), dtype=np.float32)
        if not terms or not texts:
            return out
        bags = [Counter(self.words(t)) for t in texts]
        lengths = np.asarray([sum(b.values()) for b in bags], dtype=np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * lengths / max(float(lengths.mean()), 1.0))
        for i, bag in enumerate(bags):
            out[i] = sum(idf * bag[w] * (self.k1 + 1.0) / (bag[w] + norm[i]) for w, idf in terms.items() if w in bag)
        return out

    # ------------------------------------------------------------------ building and shipping
    @classmethod
    def count(cls, texts: Iterable[str], *, min_df: int = 2) -> TermStats:
        """Document frequencies over ``texts`` (words seen in fewer than ``min_df`` passages are left out:
        they score as unseen, which is what they nearly are)."""
        stop = _stopwords()
        df: Counter[str] = Counter()
        n = 0
        for text in texts:
            n += 1
            df.update({w for w in _WORDS.findall(text.lower()) if w not in stop})
        return cls({w: c for w, c in df.items() if c >= min_df}, max(n, 1))

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        payload = {"n_docs": self.n_docs, "k1": self.k1, "b": self.b, "df": dict(sorted(self.df.items()))}
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(payload, f, separators=(",", ":"))
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TermStats:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                raw = json.load(f)
            return cls(dict(raw["df"]), int(raw["n_docs"]), k1=float(raw["k1"]), b=float(raw["b"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            msg = f"could not read term statistics from {str(path)!r} ({exc}); reinstall latentrag."
            raise ModelLoadError(msg) from exc
