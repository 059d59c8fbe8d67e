"""Template-method base for retrievers: the public methods validate, batch and run async; a
subclass implements one hook, :meth:`BaseRetriever._retrieve_batch`."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from latentrag.errors import InvalidInputError, check_positive_int, check_query
from latentrag.types import Hit


class BaseRetriever(ABC):
    """Query in, ranked :class:`~latentrag.Hit` list out. Subclasses are stateless across calls and
    therefore safe to share between threads."""

    k: int

    def __init__(self, k: int) -> None:
        self.k = check_positive_int("k", k)

    @abstractmethod
    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None) -> list[list[Hit]]:
        """Hits for each query, best first. ``vectors`` (n, dim) are precomputed query embeddings or None."""

    def _k(self, k: int | None) -> int:
        return self.k if k is None else check_positive_int("k", k)

    def retrieve(self, query: str, k: int | None = None) -> list[Hit]:
        """At most ``k`` hits for ``query`` (``k`` defaults to the constructor's), best first."""
        return self._retrieve_batch([check_query(query)], self._k(k), None)[0]

    def retrieve_with_embedding(
        self, query: str, embedding: Sequence[float] | np.ndarray, k: int | None = None
    ) -> list[Hit]:
        """Like :meth:`retrieve` but reuses a query embedding computed elsewhere (e.g. LlamaIndex's QueryBundle)."""
        vec = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        return self._retrieve_batch([check_query(query)], self._k(k), vec)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Hits for many queries at once: one encoder call and batched searches."""
        if isinstance(queries, str):
            msg = "retrieve_batch() takes a list of queries, got a single str; use retrieve() or wrap it in a list."
            raise InvalidInputError(msg)
        qs = [check_query(q) for q in queries]
        if not qs:
            return []
        return self._retrieve_batch(qs, self._k(k), None)

    async def aretrieve(self, query: str, k: int | None = None) -> list[Hit]:
        """Async :meth:`retrieve`; the work runs in a worker thread so the event loop is never blocked."""
        return await asyncio.to_thread(self.retrieve, query, k)

    async def aretrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Async :meth:`retrieve_batch` in a worker thread."""
        return await asyncio.to_thread(self.retrieve_batch, queries, k)
