"""Compressors: (query, hits) in, fewer or smaller hits out. Heavy ones are imported on first use."""

from __future__ import annotations

from latentrag._lazy import lazy_exports
from latentrag.compressors.base import BaseCompressor, Compressor

_LAZY = {
    "CrossEncoderReranker": "latentrag.compressors.rerank:CrossEncoderReranker",
    "RelevanceFilter": "latentrag.compressors.relevance:RelevanceFilter",
    "TokenBudgetCompressor": "latentrag.compressors.token_budget:TokenBudgetCompressor",
    "XRAGReader": "latentrag.readers.xrag:XRAGReader",
    "XRAGCompressor": "latentrag.compressors.xrag:XRAGCompressor",
}

__all__ = ["BaseCompressor", "Compressor", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)
