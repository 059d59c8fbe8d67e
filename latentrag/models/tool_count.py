"""``ToolCount``: how many of a request's ranked tools to offer, from a calibrated probability that each is needed.

A fixed ``k`` offers five tools to "what's the weather in Oslo?" and five to a request that needs three. The
count model reads the ranked list's own shape, so it carries across catalogues whose scores live on other
scales: for each of the top five it turns the score into scale-free features (the gap to the best, the z-score
and the gap to the next within the five, the rank, whether multi-intent fusion lifted it above a better-scored
tool, and how many parts the request was split into) and a logistic model gives ``p_needed``. A request gets the
tools with ``p_needed >= threshold``, never fewer than one per detected part (capped by ``k``), never more than
``k``.

The shipped weights (``models/weights/tools/count.json``) are fitted on the dev splits of the four shared tool
sets with the default retriever's rankings; the threshold maximises the mean F2 of the offered set (recall
weighs four times precision: a missing tool fails the task, an extra one costs a few prompt tokens).
``python benchmarks/tools.py --fit-count`` refits them and keeps the leave-one-set-out report in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.errors import ModelLoadError

#: Positions of the ranked list the model reads (and the most it can offer beyond the parts rule).
WIDTH = 5
FEATURES = ("gap_to_best", "z_score", "inv_rank", "is_first", "parts", "gap_to_next", "lifted")
WEIGHTS_PATH = Path(__file__).parent / "weights" / "tools" / "count.json"


def count_features(scores: np.ndarray, n_parts: int) -> np.ndarray:
    """Features ``(len(scores[:WIDTH]), len(FEATURES))`` of a ranked list's first ``WIDTH`` scores (best first).

    >>> count_features(np.array([0.9, 0.5]), 0).shape
    (2, 7)
    """
    s = np.asarray(scores, dtype=np.float64)[:WIDTH]
    n = len(s)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    spread = float(s.std()) + 1e-3
    top, mean = float(s.max()), float(s.mean())
    nxt = np.append(s[1:], s[-1])
    prev = np.insert(s[:-1], 0, s[0])
    rank = np.arange(n, dtype=np.float64)
    return np.stack([(top - s) / spread, (s - mean) / spread, 1.0 / (rank + 1), (rank == 0).astype(np.float64),
                     np.full(n, min(max(n_parts, 0), 4) / 4), (s - nxt) / spread,
                     (s > prev + 1e-9).astype(np.float64)], axis=1)


@dataclass(frozen=True)
class ToolCount:
    """A logistic model over :func:`count_features` and the threshold on its probability."""

    weight: tuple[float, ...]
    bias: float
    threshold: float
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def probabilities(self, scores: np.ndarray, n_parts: int) -> np.ndarray:
        """``p_needed`` of the first ``WIDTH`` ranked tools; positions past ``WIDTH`` get 0."""
        scores = np.asarray(scores, dtype=np.float64)
        out = np.zeros(len(scores))
        f = count_features(scores, n_parts)
        if len(f):
            out[: len(f)] = 1.0 / (1.0 + np.exp(-(f @ np.asarray(self.weight) + self.bias)))
        return out

    def count(self, p_needed: np.ndarray, n_parts: int, k: int) -> int:
        """How many of the ranked tools to offer: those at or above the threshold, at least one per part."""
        above = int(np.sum(np.asarray(p_needed)[:WIDTH] >= self.threshold))
        return max(1, min(k, max(above, n_parts)))

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "width": WIDTH, "weight": list(self.weight), "bias": self.bias,
                "threshold": self.threshold, **self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCount:
        if list(data.get("features", [])) != list(FEATURES) or int(data.get("width", 0)) != WIDTH:
            msg = (f"tool count weights were fitted for features {data.get('features')} (width "
                   f"{data.get('width')}), this version reads {list(FEATURES)} (width {WIDTH}); refit them with "
                   "`python benchmarks/tools.py --fit-count`.")
            raise ModelLoadError(msg)
        info = {k: v for k, v in data.items() if k not in ("features", "width", "weight", "bias", "threshold")}
        return cls(tuple(float(w) for w in data["weight"]), float(data["bias"]), float(data["threshold"]), info)


@lru_cache(maxsize=1)
def shipped_count() -> ToolCount:
    """The shipped count model (read once)."""
    try:
        data = json.loads(WEIGHTS_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"the shipped tool count weights at {str(WEIGHTS_PATH)!r} could not be read ({exc}); reinstall latentrag."
        raise ModelLoadError(msg) from exc
    return ToolCount.from_dict(data)
