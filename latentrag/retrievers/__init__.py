"""Retrievers: query in, passages (or tools) out. Heavier retrievers are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from latentrag.retrievers.base import BaseRetriever
from latentrag.retrievers.dense import DenseRetriever

_LAZY = {
    "MultiHopRetriever": "latentrag.retrievers.multihop:MultiHopRetriever",
    "ToolRetriever": "latentrag.retrievers.tools:ToolRetriever",
}

__all__ = ["BaseRetriever", "DenseRetriever", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        msg = f"module 'latentrag.retrievers' has no attribute {name!r}; valid names are {sorted(__all__)}."
        raise AttributeError(msg)
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
