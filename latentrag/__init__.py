"""latentrag: multi-hop retrieval in embedding space, tool retrieval, reranking and context
compression, fast on a CPU and offline, with adapters for LangChain and LlamaIndex."""

from __future__ import annotations

from latentrag.encoders import Encoder, default_encoder, load_encoder
from latentrag.errors import (
    DuplicateIdError,
    EncoderMismatchError,
    InvalidInputError,
    LatentRagError,
    ModelLoadError,
    StoreCorruptError,
    StoreError,
)
from latentrag.stores.faiss import FaissStore
from latentrag.types import Hit

__version__ = "0.1.0"

__all__ = [
    "DuplicateIdError",
    "Encoder",
    "EncoderMismatchError",
    "FaissStore",
    "Hit",
    "InvalidInputError",
    "LatentRagError",
    "ModelLoadError",
    "StoreCorruptError",
    "StoreError",
    "default_encoder",
    "load_encoder",
]
