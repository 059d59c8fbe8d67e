"""The compressor protocol: (query, hits) in, fewer or smaller hits out. Rerankers are compressors."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from latentrag.errors import InvalidInputError, check_query
from latentrag.types import Hit


@runtime_checkable
class Compressor(Protocol):
    """Anything with ``compress(query, hits) -> list[Hit]`` and ``async acompress(query, hits)``."""

    def compress(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...

    async def acompress(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...


class BaseCompressor(ABC):
    """Template: :meth:`compress` validates and copies the hits (callers' objects are never mutated),
    then calls :meth:`_compress`. An empty hit list returns an empty list."""

    @abstractmethod
    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        """Return the kept hits (copies), best first where order matters."""

    def compress(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        check_query(query)
        items = list(hits)
        for i, h in enumerate(items):
            if not isinstance(h, Hit):
                msg = f"hits[{i}] must be a latentrag.Hit, got {type(h).__name__}; wrap text as Hit(id, text)."
                raise InvalidInputError(msg)
        if not items:
            return []
        return self._compress(query, [h.copy() for h in items])

    async def acompress(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """Async :meth:`compress` in a worker thread."""
        return await asyncio.to_thread(self.compress, query, hits)
