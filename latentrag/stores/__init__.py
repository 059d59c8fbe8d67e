"""Stores: the :class:`Store` protocol and its backends.

``FaissStore`` is the embedded default. Other backends are resolved lazily by name, so importing
this package never imports a database client.
"""

from __future__ import annotations

from latentrag._lazy import lazy_exports
from latentrag.stores.base import Filter, Store
from latentrag.stores.faiss import FaissStore

#: name -> "module:Class", resolved on first attribute access.
_BACKENDS = {
    "PgVectorStore": "latentrag.stores.pgvector:PgVectorStore",
    "MilvusStore": "latentrag.stores.milvus:MilvusStore",
    "FrameworkStore": "latentrag.integrations.framework_store:FrameworkStore",
}

__all__ = ["FaissStore", "Filter", "Store", *_BACKENDS]


__getattr__ = lazy_exports(__name__, _BACKENDS, __all__)
