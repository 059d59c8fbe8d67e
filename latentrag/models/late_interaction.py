"""The shipped reranker's score: late interaction over the shipped MiniLM's own token states, mixed with the
bi-encoder cosine and BM25.

The bi-encoder cosine compares two mean-pooled vectors, so whatever one word decides (a name, a year) is
averaged away. Late interaction keeps the token states of that same encoder pass and scores ColBERT-style::

    maxsim(q, d) = mean_i max_j cos(h_qi, h_dj)

over every query token ``h_qi`` and passage token ``h_dj`` (last layer, [CLS] and [SEP] included). Nothing
extra runs: a passage's token states are what the encoder computes anyway to embed it (their mean is its
embedding), so a reranker scoring this way costs one encoder pass over the candidates. The ranking score for
one query's candidates is a per-query mix of z-scores, ``a * z(cosine) + b * z(maxsim) + c * z(bm25)``,
weights fitted leave-one-source-out on seven labelled sources (``latentrag train late-interaction``,
``config.json``: the weights, the per-fold weights and the held-out figures).

A trained projection and learned query-token weights (ColBERT's head) were tried and dropped: trained on six
sources they scored the seventh below plain MaxSim (DL20 0.700 against 0.731; see the model card).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.errors import ModelLoadError

#: The folder of the shipped score (config.json with the mix weights, term_df.json.gz, model card).
SHIPPED_DIR = Path(__file__).parent / "weights" / "late_interaction"
NAME = "latentrag/minilm-l6-late-interaction"
#: The name of the MiniLM whose last layer the score fine-tunes (its token states are not the shipped encoder's).
ENCODER_NAME = "latentrag/minilm-l6-late-interaction-encoder"
PARTS = ("cosine", "maxsim", "bm25")


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    std = float(x.std()) if x.size > 1 else 0.0
    return (x - x.mean()) / std if std > 1e-6 else np.zeros_like(x)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def maxsim(query_states: np.ndarray, doc_states: list[np.ndarray]) -> np.ndarray:
    """``mean_i max_j cos(q_i, d_j)`` of one query's token states against each passage's. Shape: (len(doc_states),)."""
    q = _unit_rows(np.asarray(query_states, dtype=np.float32))
    out = np.empty(len(doc_states), dtype=np.float32)
    for j, d in enumerate(doc_states):
        out[j] = float((q @ _unit_rows(np.asarray(d, dtype=np.float32)).T).max(axis=1).mean())
    return out


def pooled_cosines(query_states: np.ndarray, doc_states: list[np.ndarray]) -> np.ndarray:
    """The bi-encoder cosines from the same token states (mean pooling, as the encoder embeds)."""
    q = _unit_rows(np.asarray(query_states, dtype=np.float32).mean(axis=0))
    d = _unit_rows(np.stack([np.asarray(s, dtype=np.float32).mean(axis=0) for s in doc_states]))
    return (d @ q).astype(np.float32)


@dataclass
class LateInteractionScore:
    """The mix ``weights`` over :data:`PARTS` and where its BM25 document frequencies live."""

    weights: dict[str, float]
    term_stats: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: A safetensors file of MiniLM tensors (its fine-tuned last layer) the token states are computed with;
    #: None: the shipped MiniLM as it is.
    overrides: str | None = None
    #: A safetensors file of that MiniLM's calibrated int8 input ranges (``latentrag train int8-ranges``), for
    #: its OpenVINO int8 path; None: no int8 path.
    int8_ranges: str | None = None

    def fuse(self, parts: dict[str, np.ndarray | None]) -> np.ndarray:
        """``sum_k weights[k] * z(parts[k])`` for one query's candidates."""
        n = len(next(v for v in parts.values() if v is not None))
        total = np.zeros(n, dtype=np.float32)
        for k, w in self.weights.items():
            if not w:
                continue
            x = parts.get(k)
            if x is None:
                msg = f"this score weighs {k!r}, which was not computed."
                raise ValueError(msg)
            total += np.float32(w) * zscore(x)
        return total

    def save(self, folder: str | os.PathLike[str]) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        cfg = {"kind": "late-interaction", "weights": self.weights,
               "term_stats": None if self.term_stats is None else Path(self.term_stats).name,
               "encoder_overrides": None if self.overrides is None else Path(self.overrides).name,
               "encoder_int8_ranges": None if self.int8_ranges is None else Path(self.int8_ranges).name, **self.meta}
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=1) + "\n")
        tmp.replace(out / "config.json")
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str] = SHIPPED_DIR) -> LateInteractionScore:
        path = Path(folder)
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            msg = f"could not read a late-interaction score from {str(path)!r}: {exc}."
            raise ModelLoadError(msg) from exc
        if cfg.get("kind") != "late-interaction":
            msg = f"{str(path)!r} holds a {cfg.get('kind')!r} model, not a late-interaction score."
            raise ModelLoadError(msg)
        weights = {k: float(v) for k, v in cfg.get("weights", {}).items()}
        unknown = set(weights) - set(PARTS)
        if unknown or not weights:
            msg = f"{str(path)!r}: score parts {sorted(weights)}; expected some of {list(PARTS)}."
            raise ModelLoadError(msg)
        stats, overrides, ranges = cfg.get("term_stats"), cfg.get("encoder_overrides"), cfg.get("encoder_int8_ranges")
        for what, file in (("encoder overrides", overrides), ("int8 ranges", ranges)):
            if file and not (path / file).is_file():
                msg = f"{str(path)!r}: config.json names {what} {file!r}, which is not in that folder."
                raise ModelLoadError(msg)
        if ranges and not overrides:
            msg = (f"{str(path)!r}: config.json names int8 ranges but no encoder overrides; the ranges belong to "
                   "the tuned layer they were measured with.")
            raise ModelLoadError(msg)
        own = ("kind", "weights", "term_stats", "encoder_overrides", "encoder_int8_ranges")
        meta = {k: v for k, v in cfg.items() if k not in own}
        return cls(weights, None if not stats else str(path / stats), meta,
                   None if not overrides else str(path / overrides), None if not ranges else str(path / ranges))
