"""Stores: the :class:`Store` protocol and its backends.

``FaissStore`` is the embedded default. Other backends are resolved lazily by name, so importing
this package never imports a database client.
"""

from __future__ import annotations

import importlib
from typing import Any

from latentrag.stores.base import Filter, Store
from latentrag.stores.faiss import FaissStore

#: name -> "module:Class", resolved on first attribute access.
_BACKENDS = {
    "PgVectorStore": "latentrag.stores.pgvector:PgVectorStore",
    "MilvusStore": "latentrag.stores.milvus:MilvusStore",
    "FrameworkStore": "latentrag.integrations.framework_store:FrameworkStore",
}

__all__ = ["FaissStore", "Filter", "Store", *_BACKENDS]


def __getattr__(name: str) -> Any:
    target = _BACKENDS.get(name)
    if target is None:
        msg = f"module 'latentrag.stores' has no attribute {name!r}; valid names are {sorted(__all__)}."
        raise AttributeError(msg)
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
