"""``RelevanceFilter``: decide how many passages to keep with a calibrated, query-conditioned threshold.

After Rossi et al. (CIKM 2024, "Relevance Filtering for Embedding-based Retrieval"): a raw score
``s`` (a reranker logit or an embedding cosine) is mapped to a probability of relevance with a
Platt map whose slope and offset depend on the query,

    p = sigmoid((a + w_a . z(q)) * s + b + w_b . z(q)),

where ``z(q)`` is the query embedding projected to a few principal directions (fitted with the map).
Ranking never changes; only the cut-off moves: hits with ``p >= threshold`` are kept, never fewer
than ``min_k`` and never more than ``max_k``. With ``min_k=0`` the filter returns no passage at all
when none is relevant, so an LLM is never handed irrelevant context; callers must handle an empty
list (answer "I don't know", or fall back to no retrieval).

``RelevanceFilter()`` is pre-fitted for the shipped ``CrossEncoderReranker()``'s raw logits (read from
``metadata["rerank_logit"]``, since the reranker's fused ranking score is only relative within a query);
``RelevanceFilter(score="cosine")`` for the shipped MiniLM's cosines (a ``DenseRetriever``'s hit
scores). ``fit(queries, scores, labels)`` fits a filter for any other scorer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.compressors.base import BaseCompressor
from latentrag.encoders import Encoder, default_encoder, load_encoder
from latentrag.errors import InvalidInputError, ModelLoadError, check_positive_int
from latentrag.types import Hit
from latentrag.validate import check_str_list

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models" / "weights" / "relevance"
SCORES = ("reranker", "cosine")


@dataclass
class Calibration:
    """Parameters of the query-conditioned Platt map and the threshold on its probability."""

    a: float = 1.0
    b: float = 0.0
    components: list[list[float]] = field(default_factory=list)  # (n_dirs, dim) query directions
    mean: list[float] = field(default_factory=list)  # (dim,) query mean removed before projecting
    w_a: list[float] = field(default_factory=list)
    w_b: list[float] = field(default_factory=list)
    threshold: float = 0.5
    encoder_name: str = ""
    score: str = "reranker"
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            msg = f"could not read a relevance calibration from {str(path)!r} ({exc}); fit one with RelevanceFilter.fit"
            raise ModelLoadError(msg) from exc

    def probabilities(self, scores: np.ndarray, query_vector: np.ndarray | None) -> np.ndarray:
        a, b = self.a, self.b
        if self.components and query_vector is not None:
            z = np.asarray(self.components, dtype=np.float32) @ (query_vector - np.asarray(self.mean, dtype=np.float32))
            a += float(np.dot(self.w_a, z))
            b += float(np.dot(self.w_b, z))
        return 1.0 / (1.0 + np.exp(-(a * np.asarray(scores, dtype=np.float64) + b)))


class RelevanceFilter(BaseCompressor):
    """Keep the hits whose calibrated probability of relevance reaches ``threshold`` (see the module docs).

    ``threshold=None`` uses the fitted one (the F1-best on the fitting data). The hits keep their order;
    each gets ``metadata["relevance"]`` (the probability).
    """

    def __init__(
        self,
        threshold: float | None = None,
        *,
        min_k: int = 0,
        max_k: int | None = None,
        score: str = "reranker",
        calibration: Calibration | str | os.PathLike[str] | None = None,
        encoder: Encoder | str | None = None,
    ) -> None:
        if score not in SCORES:
            msg = f"score must be one of {list(SCORES)} (what the hit scores are), got {score!r}."
            raise InvalidInputError(msg)
        if isinstance(min_k, bool) or not isinstance(min_k, int) or min_k < 0:
            msg = f"min_k must be an int >= 0, got {min_k!r}."
            raise InvalidInputError(msg)
        self.min_k = min_k
        self.max_k = None if max_k is None else check_positive_int("max_k", max_k)
        if self.max_k is not None and self.max_k < self.min_k:
            msg = f"max_k ({self.max_k}) must be >= min_k ({self.min_k})."
            raise InvalidInputError(msg)
        if isinstance(calibration, Calibration):
            self.calibration = calibration
        else:
            path = Path(calibration) if calibration is not None else SHIPPED_DIR / f"{score}.json"
            self.calibration = Calibration.load(path)
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            msg = f"threshold is a probability in [0, 1], got {threshold!r}."
            raise InvalidInputError(msg)
        self.threshold = float(self.calibration.threshold if threshold is None else threshold)
        self._encoder_arg = encoder
        self._encoder: Encoder | None = None

    def _query_vector(self, query: str) -> np.ndarray | None:
        if not self.calibration.components:
            return None
        if self._encoder is None:
            self._encoder = default_encoder() if self._encoder_arg is None else load_encoder(self._encoder_arg)
        return self._encoder.encode([query])[0]

    def probabilities(self, query: str, scores: Sequence[float]) -> np.ndarray:
        """Calibrated probabilities of relevance for raw ``scores`` of one query."""
        return self.calibration.probabilities(np.asarray(scores, dtype=np.float64), self._query_vector(query))

    def _raw(self, hit: Hit) -> float:
        if self.calibration.score == "reranker" and "rerank_logit" in hit.meta:
            return float(hit.meta["rerank_logit"])
        return hit.score

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        probs = self.probabilities(query, [self._raw(h) for h in hits])
        ranked = [int(j) for j in np.argsort(-np.asarray([h.score for h in hits]), kind="stable")]
        chosen = [j for rank, j in enumerate(ranked) if probs[j] >= self.threshold or rank < self.min_k]
        keep = set(chosen[: self.max_k] if self.max_k is not None else chosen)
        return [h.copy(metadata={**h.meta, "relevance": round(float(probs[j]), 6)})
                for j, h in enumerate(hits) if j in keep]

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        queries: Sequence[str],
        scores: Sequence[float],
        labels: Sequence[int | bool],
        *,
        score: str = "reranker",
        n_dirs: int = 8,
        l2: float = 1e-2,
        encoder: Encoder | str | None = None,
        min_k: int = 0,
        max_k: int | None = None,
    ) -> RelevanceFilter:
        """Fit the query-conditioned map on labelled pairs (one query string, raw score and 0/1 label per pair).

        ``n_dirs=0`` fits a global Platt map (no query conditioning, no encoder needed).
        """
        queries = check_str_list("queries", queries, storable=False)
        cal = fit_calibration(queries, scores, labels, score=score, n_dirs=n_dirs, l2=l2, encoder=encoder)
        return cls(calibration=cal, score=score, min_k=min_k, max_k=max_k, encoder=encoder)


def fit_calibration(
    queries: Sequence[str],
    scores: Sequence[float],
    labels: Sequence[int | bool],
    *,
    score: str = "reranker",
    n_dirs: int = 8,
    l2: float = 1e-2,
    encoder: Encoder | str | None = None,
) -> Calibration:
    """Logistic regression of the labels on ``[s, 1, s*z(q), z(q)]`` (L2 on the z terms), then the F1-best threshold."""
    import torch

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not (len(queries) == len(s) == len(y)) or len(s) == 0:
        msg = f"queries, scores and labels must be equal-length and non-empty, got {len(queries)}, {len(s)}, {len(y)}."
        raise InvalidInputError(msg)
    if set(np.unique(y)) - {0.0, 1.0} or len(np.unique(y)) < 2:
        msg = "labels must be 0/1 and hold both classes."
        raise InvalidInputError(msg)
    enc = None
    z = np.zeros((len(s), 0))
    comps: np.ndarray = np.zeros((0, 0))
    mean: np.ndarray = np.zeros(0)
    if n_dirs > 0:
        enc = default_encoder() if encoder is None else load_encoder(encoder)
        unique = list(dict.fromkeys(queries))
        qv = enc.encode(unique)
        mean = qv.mean(0)
        _, _, vt = np.linalg.svd(qv - mean, full_matrices=False)
        comps = vt[: min(n_dirs, len(unique) - 1, vt.shape[0])]
        row = {q: i for i, q in enumerate(unique)}
        z = (qv[[row[q] for q in queries]] - mean) @ comps.T
    ones = np.ones_like(s)
    x = np.column_stack([s, ones, s[:, None] * z, z]) if z.shape[1] else np.column_stack([s, ones])
    xt, yt = torch.tensor(x), torch.tensor(y)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    penalty = torch.tensor([0.0, 0.0] + [l2] * (x.shape[1] - 2), dtype=torch.float64)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, yt) + (penalty * w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    coef = w.detach().numpy()
    k = z.shape[1]
    cal = Calibration(a=float(coef[0]), b=float(coef[1]), components=comps.tolist() if k else [],
                      mean=mean.tolist() if k else [], w_a=coef[2 : 2 + k].tolist(), w_b=coef[2 + k :].tolist(),
                      encoder_name=enc.name if enc is not None else "", score=score)
    probs = 1.0 / (1.0 + np.exp(-(x @ coef)))
    best = max(np.linspace(0.05, 0.95, 91), key=lambda t: _f1(probs >= t, y > 0.5))
    cal.threshold = round(float(best), 3)
    return cal


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum(pred & gold))
    return 0.0 if tp == 0 else 2 * tp / (float(np.sum(pred)) + float(np.sum(gold)))


def precision_recall(filter_: RelevanceFilter, queries: Sequence[str], scores: Sequence[float],
                     labels: Sequence[int | bool]) -> dict[str, float]:
    """Pair-level precision and recall of the filter's keep decision (threshold only, no min_k/max_k)."""
    by_query: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_query.setdefault(q, []).append(i)
    pred = np.zeros(len(scores), dtype=bool)
    for q, idx in by_query.items():
        pred[idx] = filter_.probabilities(q, [scores[i] for i in idx]) >= filter_.threshold
    gold = np.asarray(labels, dtype=bool)
    tp = float(np.sum(pred & gold))
    return {"precision": tp / max(float(pred.sum()), 1.0), "recall": tp / max(float(gold.sum()), 1.0),
            "kept_share": float(pred.mean())}
