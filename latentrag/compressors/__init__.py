"""Compressors: (query, hits) in, fewer or smaller hits out. Heavy ones are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from latentrag.compressors.base import BaseCompressor, Compressor

_LAZY = {
    "CrossEncoderReranker": "latentrag.compressors.rerank:CrossEncoderReranker",
    "RelevanceFilter": "latentrag.compressors.relevance:RelevanceFilter",
    "TokenBudgetCompressor": "latentrag.compressors.token_budget:TokenBudgetCompressor",
    "XRAGReader": "latentrag.compressors.xrag:XRAGReader",
    "XRAGCompressor": "latentrag.compressors.xrag:XRAGCompressor",
}

__all__ = ["BaseCompressor", "Compressor", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        msg = f"module 'latentrag.compressors' has no attribute {name!r}; valid names are {sorted(__all__)}."
        raise AttributeError(msg)
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
