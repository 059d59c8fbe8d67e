"""The learned stage of tool retrieval: a :class:`~latentrag.models.tool_adapter.QueryAdapter` on the
request embedding, a :class:`ToolRefiner` over the first stage's similarity features and an
:class:`~latentrag.models.tool_mlc.MLCHead` over the request embedding, fused into one score
(:class:`LearnedStage`), fitted on the catalogue's own usage examples by
:mod:`latentrag.retrievers.tool_fit`. With an adapter, ``q`` below is the adapted request vector (the
candidates and the features are computed from it too).

For a request ``q`` and a candidate tool ``j`` (one of the first stage's candidates) the fused score is

    score_j = f_j . a + MLP([f_j, f_j . a, log1p(n_j)]) + tau * (w_j . q + b_j)

with ``f_j`` the four :data:`~latentrag.retrievers.tool_index.FEATURES` (description, Tool2Vec mean, best
example, top-m examples; cosine similarities), ``n_j`` the tool's number of usage examples, ``a`` learned
feature weights, a one-hidden-layer MLP, ``tau`` a learned temperature and ``(w_j, b_j)`` the tool's MLC
row. Scores stay in cosine units (``tau`` scales the head's logits down to them), so the multi-intent
margins of :mod:`latentrag.retrievers.tool_intents` mean the same with and without the learned stage.

Inference is numpy only (a few tiny matrix products per request, no torch thread pool to wake); weights
are safetensors with the JSON config kept in the tool index manifest. One instance is read-only once
fitted, so it serves concurrent callers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentrag.models.tool_adapter import QueryAdapter
from latentrag.models.tool_mlc import MLCHead

N_FEATURES = 4
N_INPUTS = N_FEATURES + 2  # the features, their weighted sum, log1p(example count)
ARCHITECTURE = "tool_learned_stage"


@dataclass
class ToolRefiner:
    """Learned feature weights ``a`` (4,) plus a residual MLP ``6 -> hidden -> 1`` (ReLU) over the
    features, their weighted sum and ``log1p(example count)``, so it learns how far to trust the example
    features of a tool with few examples.

    >>> r = ToolRefiner.initial(hidden=4)
    >>> r.base(np.array([[0.5, 0.5, 0.5, 0.5]], np.float32), np.array([3])).round(3).tolist()
    [0.5]
    """

    feature_weights: np.ndarray  # (4,)
    w1: np.ndarray  # (6, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden,)

    @classmethod
    def initial(cls, hidden: int = 16, weights: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2), seed: int = 0) -> ToolRefiner:
        """Starts as the fixed first-stage blend: the MLP's output layer is zero."""
        rng = np.random.default_rng(seed)
        return cls(np.asarray(weights, np.float32), (0.3 * rng.standard_normal((N_INPUTS, hidden))).astype(np.float32),
                   np.zeros(hidden, np.float32), np.zeros(hidden, np.float32))

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[1])

    def base(self, feats: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Scores ``(n,)`` of ``n`` candidates from their features ``(n, 4)`` and example counts ``(n,)``."""
        lin = feats @ self.feature_weights
        z = np.concatenate([feats, lin[:, None], np.log1p(np.asarray(counts, np.float32))[:, None]], axis=1)
        return (lin + np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"refiner.feature_weights": self.feature_weights, "refiner.w1": self.w1, "refiner.b1": self.b1,
                "refiner.w2": self.w2}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> ToolRefiner:
        return cls(t["refiner.feature_weights"], t["refiner.w1"], t["refiner.b1"], t["refiner.w2"])


@dataclass
class LearnedStage:
    """The fitted learned stage: a :class:`ToolRefiner` and/or an :class:`MLCHead` (either may be
    ``None``; without a refiner the features are blended with the fixed first-stage weights), the learned
    temperature ``tau``, and ``names``, the tool names the head's rows belong to (kept aligned with the
    retriever's tools by :meth:`aligned`). ``info`` records how it was fitted. ``adapter`` (or ``None``)
    maps request vectors before anything is scored (:meth:`query`); it does not depend on the tools."""

    refiner: ToolRefiner | None
    mlc: MLCHead | None
    tau: float
    names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    adapter: QueryAdapter | None = None

    @property
    def parts(self) -> list[str]:
        return [p for p, m in (("adapter", self.adapter), ("refiner", self.refiner), ("mlc", self.mlc))
                if m is not None]

    def query(self, q: np.ndarray) -> np.ndarray:
        """The request vectors ``(b, dim)`` the stage scores with: adapted, or ``q`` itself without an adapter."""
        return q if self.adapter is None else self.adapter.apply(q)

    def __repr__(self) -> str:
        parts = "+".join(self.parts) or "none"
        rank = f", rank={self.adapter.rank}" if self.adapter is not None else ""
        return f"LearnedStage(parts={parts}{rank}, tools={len(self.names)}, tau={self.tau:.4f})"

    def score(self, q: np.ndarray, rows: np.ndarray, feats: np.ndarray, counts: np.ndarray,
              blend: np.ndarray) -> np.ndarray:
        """Fused scores of candidate ``rows`` for one request vector ``q`` (dim,), given their features
        ``(n, 4)``, example counts and the fixed-blend weights ``blend`` (4,) used without a refiner."""
        s = self.refiner.base(feats, counts) if self.refiner is not None else feats @ blend
        if self.mlc is not None:
            s = s + self.tau * self.mlc.rows(q, rows)
        return s.astype(np.float32, copy=False)

    def aligned(self, names: list[str]) -> LearnedStage:
        """This stage re-indexed to ``names`` (the retriever's tools now): rows of removed tools are
        dropped, tools it was not fitted with get a zero head row (they rank by the refiner alone)."""
        if names == self.names:
            return self
        mlc = None
        if self.mlc is not None:
            old = {n: i for i, n in enumerate(self.names)}
            src = np.array([old.get(n, -1) for n in names], dtype=np.int64)
            mlc = self.mlc.take(src)
        return LearnedStage(self.refiner, mlc, self.tau, list(names), dict(self.info), self.adapter)

    def config(self) -> dict[str, Any]:
        return {"architecture": ARCHITECTURE, "parts": self.parts, "tau": self.tau,
                "hidden": self.refiner.hidden if self.refiner is not None else None,
                "rank": self.adapter.rank if self.adapter is not None else None, "info": self.info}

    def save(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the weights as safetensors; returns the config to store beside them."""
        from safetensors.numpy import save_file

        tensors: dict[str, np.ndarray] = {}
        if self.refiner is not None:
            tensors.update(self.refiner.tensors())
        if self.mlc is not None:
            tensors.update({"mlc.weight": self.mlc.weight, "mlc.bias": self.mlc.bias})
        if self.adapter is not None:
            tensors.update(self.adapter.tensors())
        if not tensors:
            tensors["tau"] = np.array([self.tau], np.float32)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path))
        return self.config()

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: dict[str, Any], names: list[str]) -> LearnedStage:
        from safetensors.numpy import load_file

        t = load_file(str(path))
        parts = set(config["parts"])
        refiner = ToolRefiner.from_tensors(t) if "refiner" in parts else None
        mlc = MLCHead(t["mlc.weight"], t["mlc.bias"]) if "mlc" in parts else None
        adapter = QueryAdapter.from_tensors(t) if "adapter" in parts else None
        if mlc is not None and len(mlc.bias) != len(names):
            msg = f"the learned stage has {len(mlc.bias)} tool rows, the index {len(names)} tools"
            raise ValueError(msg)
        return cls(refiner, mlc, float(config["tau"]), list(names), dict(config.get("info") or {}), adapter)
