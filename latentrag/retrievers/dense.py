"""``DenseRetriever``: single-hop dense retrieval, the baseline every other retriever is measured against."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from latentrag.errors import StoreError
from latentrag.retrievers.base import BaseRetriever
from latentrag.stores.base import BaseStore, Filter, Store, check_queries, store_is_empty
from latentrag.types import Hit
from latentrag.validate import check_filter


class DenseRetriever(BaseRetriever):
    """Encode the query with the store's encoder and return the store's top-``k``.

    >>> from latentrag import FaissStore
    >>> store = FaissStore.from_texts(["Paris is in France.", "Rome is in Italy."], ids=["p", "r"])
    >>> DenseRetriever(store, k=1).retrieve("Which country is Rome in?")[0].id
    'r'

    ``filter`` (constructor) applies to every call; ``retrieve(q, filter=...)`` narrows one call further.
    """

    technique = "dense"

    def __init__(self, store: Store, k: int = 4, *, filter: Filter | None = None) -> None:
        super().__init__(k)
        self.store = store
        self.filter = check_filter(filter)

    def __repr__(self) -> str:
        flt = "" if self.filter is None else f", filter={self.filter!r}"
        return f"DenseRetriever(k={self.k}{flt}, store={self.store!r})"

    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None, *,
                        filter: Filter | None = None) -> list[list[Hit]]:
        """``filter`` is the call's effective filter (the constructor's AND the call's); a direct call of the
        hook without it uses the constructor's."""
        if store_is_empty(self.store):
            msg = "the store is empty; add documents (store.add(...) or `latentrag index`) before retrieving."
            raise StoreError(msg)
        q = self.store.encoder.encode(queries) if vectors is None else check_queries(vectors, self.store.dim)
        return self.store.search(q, k, filter=self.filter if filter is None else filter)

    async def _aretrieve_batch(self, queries: list[str], k: int, filter: dict[str, Any] | None) -> list[list[Hit]]:
        """Async: the emptiness probe and the search await the store's async reads (a PgVectorStore's or a
        MilvusStore's async client); only the encoder, which is CPU work, runs in a worker thread."""
        store = self.store
        if not isinstance(store, BaseStore):
            return await super()._aretrieve_batch(queries, k, filter)
        if await store.ais_empty():
            msg = "the store is empty; add documents (store.add(...) or `latentrag index`) before retrieving."
            raise StoreError(msg)
        q = await asyncio.to_thread(store.encoder.encode, queries)
        return await store.asearch(q, k, filter=filter)
