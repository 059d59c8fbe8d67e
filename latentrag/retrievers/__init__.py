"""Retrievers: query in, passages (or tools) out. Heavier retrievers are imported on first use."""

from __future__ import annotations

from latentrag._lazy import lazy_exports
from latentrag.retrievers.base import BaseRetriever
from latentrag.retrievers.dense import DenseRetriever

_LAZY = {
    "MultiHopRetriever": "latentrag.retrievers.multihop:MultiHopRetriever",
    "ToolRetriever": "latentrag.retrievers.tools:ToolRetriever",
    "HybridRetriever": "latentrag.retrievers.hybrid:HybridRetriever",
    "BM25Index": "latentrag.retrievers.lexical:BM25Index",
}

__all__ = ["BaseRetriever", "DenseRetriever", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)
