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

``RelevanceFilter()`` (``score="auto"``) reads how each hit was found and picks the pre-fitted map for it:

- a hit of :class:`~latentrag.retrievers.MultiHopRetriever` (metadata ``hop``, ``via``, ``path_score``,
  ``question_similarity``, ``parent_id``; also inside a LangChain document's ``metadata["retrieval"]``
  group): a logistic map of its provenance (``score="multihop"``, :class:`HopCalibration`). A second-hop
  passage is barely about the question by design, so its question similarity alone would drop it; what
  found it (a title link, a strong parent, its path score) says more. Fitted on the multi-hop *training*
  questions (``latentrag train relevance``), its threshold keeps 90% of the gold passages there;
- a hit scored by the shipped ``CrossEncoderReranker()``: its raw score (``metadata["rerank_logit"]``, the
  MaxSim of the default late-interaction score; the reranker's mixed ranking score is only relative within
  a query) and its cosine, ``score="reranker"``; a hit another reranker scored
  (``metadata["rerank_model"]``) is refused rather than mis-calibrated;
- any other hit: its bi-encoder cosine (``metadata["dense_score"]`` of a hybrid hit, else the hit's
  score, as a ``DenseRetriever`` gives it), ``score="cosine"``.

``fit(queries, scores, labels)`` fits a filter for any other scorer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
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
SCORES = ("auto", "reranker", "cosine", "multihop")
#: What :func:`hop_features` computes for each multi-hop hit, in order.
HOP_FEATURES = ("question_similarity", "gap_to_best", "path_score", "similarity", "second_hop",
                "parent_question_similarity", "parent_in_list", "via_dense", "via_hop", "via_link", "via_entity",
                "via_dense+link")
_HOP_KEYS = ("hop", "via", "path_score", "similarity", "question_similarity")


@dataclass
class Calibration:
    """Parameters of the query-conditioned Platt map and the threshold on its probability."""

    a: float = 1.0
    b: float = 0.0
    #: Weight of the bi-encoder cosine beside the score (a reranker map: its logit and the cosine together).
    c: float = 0.0
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
        return cls.from_dict(_read_json(path, _FIT_HINT), path)

    @classmethod
    def from_dict(cls, raw: Any, path: str | os.PathLike[str]) -> Calibration:
        try:
            return cls(**raw)
        except TypeError as exc:
            msg = f"could not read a relevance calibration from {str(path)!r} ({exc}); {_FIT_HINT}"
            raise ModelLoadError(msg) from exc

    def probabilities(self, scores: np.ndarray, query_vector: np.ndarray | None,
                      cosines: np.ndarray | None = None) -> np.ndarray:
        a, b = self.a, self.b
        if self.components and query_vector is not None:
            z = np.asarray(self.components, dtype=np.float32) @ (query_vector - np.asarray(self.mean, dtype=np.float32))
            a += float(np.dot(self.w_a, z))
            b += float(np.dot(self.w_b, z))
        logit = a * np.asarray(scores, dtype=np.float64) + b
        if self.c:
            if cosines is None:
                msg = "this calibration also weighs the bi-encoder cosine of each passage; pass cosines=."
                raise InvalidInputError(msg)
            logit = logit + self.c * np.asarray(cosines, dtype=np.float64)
        return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def provenance(hit: Hit) -> Mapping[str, Any] | None:
    """A hit's multi-hop provenance (``hop``, ``via``, ``path_score``, ...): from its metadata, or from a
    LangChain document's ``metadata["retrieval"]`` group; None for a hit no multi-hop retriever found."""
    for meta in (hit.meta, hit.meta.get("retrieval")):
        if isinstance(meta, Mapping) and all(meta.get(k) is not None for k in _HOP_KEYS):
            return meta
    return None


def hop_features(ids: Sequence[str], provs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(n, len(HOP_FEATURES)) features of one question's multi-hop hits (see :data:`HOP_FEATURES`); a hit's
    parent is looked up among the same hits by id (``parent_in_list``)."""
    qs = np.asarray([float(p["question_similarity"]) for p in provs], dtype=np.float64)
    best = float(qs.max()) if len(qs) else 0.0
    by_id = {i: float(p["question_similarity"]) for i, p in zip(ids, provs, strict=True)}
    rows = []
    for p in provs:
        parent = by_id.get(str(p.get("parent_id"))) if p.get("parent_id") is not None else None
        second = int(p["hop"]) >= 2
        parent_qs = parent if parent is not None else (float(qs.mean()) if second else 0.0)
        via = str(p["via"])
        rows.append([float(p["question_similarity"]), float(p["question_similarity"]) - best, float(p["path_score"]),
                     float(p["similarity"]), float(second), parent_qs, float(parent is not None),
                     *(float(via == v) for v in ("dense", "hop", "link", "entity", "dense+link"))])
    return np.asarray(rows, dtype=np.float64).reshape(len(provs), len(HOP_FEATURES))


@dataclass
class HopCalibration:
    """A logistic map of a multi-hop hit's :func:`hop_features` (standardised) to its probability of relevance."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    threshold: float
    features: list[str] = field(default_factory=lambda: list(HOP_FEATURES))
    score: str = "multihop"
    report: dict[str, Any] = field(default_factory=dict)

    save = Calibration.save

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HopCalibration:
        return cls.from_dict(_read_json(path, _HOP_HINT, "multi-hop "), path)

    @classmethod
    def from_dict(cls, raw: Any, path: str | os.PathLike[str]) -> HopCalibration:
        try:
            cal = cls(**raw)
        except TypeError as exc:
            msg = f"could not read a multi-hop relevance calibration from {str(path)!r} ({exc}); {_HOP_HINT}"
            raise ModelLoadError(msg) from exc
        if tuple(cal.features) != HOP_FEATURES:
            msg = (f"{str(path)!r} was fitted on features {cal.features}, this latentrag computes "
                   f"{list(HOP_FEATURES)}; refit it.")
            raise ModelLoadError(msg)
        return cal

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias)))

    @classmethod
    def fit(cls, x: np.ndarray, labels: np.ndarray, *, keep_gold: float = 0.90, l2: float = 1e-3) -> HopCalibration:
        """Logistic regression on standardised features; the threshold is the highest that still keeps
        ``keep_gold`` of the positive rows (multi-hop evidence is worth more than a short context)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(HOP_FEATURES) or len(x) != len(y) or len(np.unique(y)) < 2:
            msg = (f"need an (n, {len(HOP_FEATURES)}) feature matrix and n 0/1 labels holding both classes, "
                   f"got {x.shape} and {len(y)} labels.")
            raise InvalidInputError(msg)
        if not 0.0 < keep_gold <= 1.0:
            msg = f"keep_gold is a share in (0, 1], got {keep_gold!r}."
            raise InvalidInputError(msg)
        mean, scale = x.mean(0), x.std(0) + 1e-9
        coef = _logistic(np.column_stack([(x - mean) / scale, np.ones(len(x))]), y,
                         np.asarray([l2] * x.shape[1] + [0.0]))
        cal = cls(mean.tolist(), scale.tolist(), coef[:-1].tolist(), float(coef[-1]), 0.5)
        pos = np.sort(cal.probabilities(x)[y > 0.5])
        cal.threshold = round(float(pos[int(np.floor((1.0 - keep_gold) * len(pos)))]) - 1e-4, 4)
        return cal


_FIT_HINT = "fit one with RelevanceFilter.fit"
_HOP_HINT = "run `latentrag train relevance`"


def _read_json(path: str | os.PathLike[str], hint: str, kind: str = "") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        msg = f"could not read a {kind}relevance calibration from {str(path)!r} ({exc}); {hint}"
        raise ModelLoadError(msg) from exc


def _load_any(path: str | os.PathLike[str]) -> Calibration | HopCalibration:
    """A saved calibration of either kind (a multi-hop map has ``weights``, a score map ``a``/``b``), read once."""
    raw = _read_json(path, _FIT_HINT)
    if isinstance(raw, dict) and "weights" in raw:
        return HopCalibration.from_dict(raw, path)
    return Calibration.from_dict(raw, path)


def _logistic(x: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """L2-penalised logistic regression (LBFGS); returns the coefficients of ``x``'s columns."""
    import torch

    xt, yt, pen = torch.tensor(x), torch.tensor(y), torch.tensor(penalty)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, yt) + (pen * w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return np.asarray(w.detach().numpy())


class RelevanceFilter(BaseCompressor):
    """Keep the hits whose calibrated probability of relevance reaches ``threshold`` (see the module docs).

    ``score``: ``"auto"`` (each hit by how it was found), ``"reranker"``, ``"cosine"`` or ``"multihop"``.
    ``threshold=None`` uses each map's fitted one (the F1-best on its fitting data; for multi-hop hits the
    one keeping 90% of the training gold passages). The hits keep their order; each gets ``metadata["relevance"]``
    (the probability) and ``metadata["relevance_map"]`` (which map gave it).
    """

    def __init__(
        self,
        threshold: float | None = None,
        *,
        min_k: int = 0,
        max_k: int | None = None,
        score: str = "auto",
        calibration: Calibration | HopCalibration | str | os.PathLike[str] | None = None,
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
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 <= threshold <= 1.0):
            msg = f"threshold is a probability in [0, 1], got {threshold!r}."
            raise InvalidInputError(msg)
        if calibration is not None:
            cal = calibration if isinstance(calibration, (Calibration, HopCalibration)) else _load_any(calibration)
            if score == "auto":
                score = cal.score
            self.maps: dict[str, Calibration | HopCalibration] = {score: cal}
        else:
            kinds = ("multihop", "reranker", "cosine") if score == "auto" else (score,)
            self.maps = {k: _load_any(SHIPPED_DIR / f"{k}.json") for k in kinds}
        self.score = score
        #: The map the filter uses where a hit does not say otherwise (``score="auto"``: the reranker's).
        self.calibration = self.maps.get(score) or self.maps["reranker"]
        self._threshold = None if threshold is None else float(threshold)
        self._encoder_arg = encoder
        self._encoder: Encoder | None = None

    @property
    def threshold(self) -> float:
        """The probability a hit needs (the given one, else :attr:`calibration`'s fitted one)."""
        return self.threshold_for(self.calibration.score)

    def threshold_for(self, kind: str) -> float:
        """The threshold applied to hits scored by map ``kind``."""
        return self._threshold if self._threshold is not None else float(self.maps[kind].threshold)

    def __repr__(self) -> str:
        return (f"RelevanceFilter(score={self.score!r}, thresholds="
                f"{ {k: round(self.threshold_for(k), 3) for k in self.maps} }, min_k={self.min_k}, max_k={self.max_k})")

    def _query_vector(self, query: str, cal: Calibration) -> np.ndarray | None:
        if not cal.components:
            return None
        if self._encoder is None:
            self._encoder = default_encoder() if self._encoder_arg is None else load_encoder(self._encoder_arg)
        return self._encoder.encode([query])[0]

    def probabilities(self, query: str, scores: Sequence[float], cosines: Sequence[float] | None = None) -> np.ndarray:
        """Calibrated probabilities of relevance for raw ``scores`` of one query (by :attr:`calibration`);
        ``cosines``: the passages' bi-encoder cosines, which the shipped reranker map also weighs."""
        cal = self.calibration
        if not isinstance(cal, Calibration):
            msg = "a multi-hop map scores hits by their provenance, not raw scores; call compress(query, hits)."
            raise InvalidInputError(msg)
        cos = None if cosines is None else np.asarray(cosines, dtype=np.float64)
        return cal.probabilities(np.asarray(scores, dtype=np.float64), self._query_vector(query, cal), cos)

    def _kind(self, hit: Hit) -> str:
        if self.score != "auto":
            return self.score
        if provenance(hit) is not None:
            return "multihop"
        return "reranker" if "rerank_logit" in hit.meta else "cosine"

    def _raw(self, hit: Hit, kind: str) -> float:
        if kind == "reranker" and "rerank_logit" in hit.meta:
            return float(hit.meta["rerank_logit"])
        if kind == "cosine" and isinstance(hit.meta.get("dense_score"), (int, float)):
            return float(hit.meta["dense_score"])
        return hit.score

    @staticmethod
    def _cosines(hits: Sequence[Hit], idx: list[int], cal: Calibration) -> np.ndarray | None:
        if not cal.c:
            return None
        missing = [hits[j].id for j in idx if not isinstance(hits[j].meta.get("rerank_cosine"), (int, float))]
        if missing:
            msg = (f"the reranker map weighs the shipped reranker's cosine (metadata['rerank_cosine']), which hit "
                   f"{missing[0]!r} lacks: put CrossEncoderReranker() before the filter, or fit a filter for your "
                   "reranker with RelevanceFilter.fit(queries, scores, labels).")
            raise InvalidInputError(msg)
        return np.asarray([float(hits[j].meta["rerank_cosine"]) for j in idx], dtype=np.float64)

    def hit_probabilities(self, query: str, hits: Sequence[Hit]) -> tuple[np.ndarray, list[str]]:
        """Each hit's probability of relevance and the map that gave it (see the module docs)."""
        kinds = [self._kind(h) for h in hits]
        probs = np.zeros(len(hits), dtype=np.float64)
        for kind in dict.fromkeys(kinds):
            idx = [j for j, k in enumerate(kinds) if k == kind]
            cal = self.maps[kind]
            if isinstance(cal, HopCalibration):
                provs = [provenance(hits[j]) for j in idx]
                if any(p is None for p in provs):
                    msg = (f"score='multihop' needs hits of a MultiHopRetriever (metadata {list(_HOP_KEYS)}); "
                           f"hit {hits[idx[provs.index(None)]].id!r} has none. Use score='auto'.")
                    raise InvalidInputError(msg)
                probs[idx] = cal.probabilities(hop_features([hits[j].id for j in idx], provs))  # type: ignore[arg-type]
            else:
                scorer = cal.report.get("scorer") if kind == "reranker" else None
                other = [hits[j] for j in idx if scorer and hits[j].meta.get("rerank_model", scorer) != scorer]
                if other:
                    msg = (f"this reranker map was fitted on the scores of {scorer!r}, but hit {other[0].id!r} was "
                           f"scored by {other[0].meta['rerank_model']!r}; fit a filter for that reranker with "
                           "RelevanceFilter.fit(queries, scores, labels).")
                    raise InvalidInputError(msg)
                raw = np.asarray([self._raw(hits[j], kind) for j in idx], dtype=np.float64)
                probs[idx] = cal.probabilities(raw, self._query_vector(query, cal), self._cosines(hits, idx, cal))
        return probs, kinds

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        probs, kinds = self.hit_probabilities(query, hits)
        ranked = [int(j) for j in np.argsort(-np.asarray([h.score for h in hits]), kind="stable")]
        chosen = [j for rank, j in enumerate(ranked) if probs[j] >= self.threshold_for(kinds[j]) or rank < self.min_k]
        keep = set(chosen[: self.max_k] if self.max_k is not None else chosen)
        return [h.copy(metadata={**h.meta, "relevance": round(float(probs[j]), 6), "relevance_map": kinds[j]})
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
    cosines: Sequence[float] | None = None,
) -> Calibration:
    """Logistic regression of the labels on ``[s, 1, s*z(q), z(q)]`` (L2 on the z terms; with ``cosines``,
    also the passages' bi-encoder cosine, unpenalised), then the F1-best threshold."""
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
    cos = np.zeros_like(s) if cosines is None else np.asarray(cosines, dtype=np.float64)
    if len(cos) != len(s):
        msg = f"cosines has {len(cos)} entries for {len(s)} scores; give one per pair."
        raise InvalidInputError(msg)
    x = np.column_stack([s, ones, cos, s[:, None] * z, z])
    coef = _logistic(x, y, np.asarray([0.0, 0.0, 0.0] + [l2] * (x.shape[1] - 3)))
    k = z.shape[1]
    cal = Calibration(a=float(coef[0]), b=float(coef[1]), c=float(coef[2]) if cosines is not None else 0.0,
                      components=comps.tolist() if k else [], mean=mean.tolist() if k else [],
                      w_a=coef[3 : 3 + k].tolist(), w_b=coef[3 + k :].tolist(),
                      encoder_name=enc.name if enc is not None else "", score=score)
    probs = 1.0 / (1.0 + np.exp(-(x @ coef)))
    best = max(np.linspace(0.05, 0.95, 91), key=lambda t: _f1(probs >= t, y > 0.5))
    cal.threshold = round(float(best), 3)
    return cal


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum(pred & gold))
    return 0.0 if tp == 0 else 2 * tp / (float(np.sum(pred)) + float(np.sum(gold)))


def precision_recall(filter_: RelevanceFilter, queries: Sequence[str], scores: Sequence[float],
                     labels: Sequence[int | bool], cosines: Sequence[float] | None = None) -> dict[str, float]:
    """Pair-level precision and recall of the filter's keep decision (threshold only, no min_k/max_k)."""
    by_query: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_query.setdefault(q, []).append(i)
    pred = np.zeros(len(scores), dtype=bool)
    for q, idx in by_query.items():
        cos = None if cosines is None else [cosines[i] for i in idx]
        pred[idx] = filter_.probabilities(q, [scores[i] for i in idx], cos) >= filter_.threshold
    gold = np.asarray(labels, dtype=bool)
    tp = float(np.sum(pred & gold))
    return {"precision": tp / max(float(pred.sum()), 1.0), "recall": tp / max(float(gold.sum()), 1.0),
            "kept_share": float(pred.mean())}
