"""LangChain adapters: one generic adapter per surface.

- :class:`LangChainRetriever` wraps any latentrag retriever as a ``BaseRetriever``.
- :class:`LangChainCompressor` wraps any latentrag compressor (rerankers included) as a
  ``BaseDocumentCompressor``, usable in langchain-classic's ``ContextualCompressionRetriever``.
- :class:`LangChainEmbeddings` exposes a latentrag encoder as ``Embeddings``, so a LangChain vector
  store built with it can back :class:`~latentrag.stores.FrameworkStore`.

Importing this module imports ``langchain_core``; nothing else in latentrag does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from latentrag._lazy import lazy_exports
from latentrag._optional import require

require("langchain_core", "langchain")


from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from latentrag.errors import InvalidInputError, check_positive_int  # noqa: E402
from latentrag.types import Hit  # noqa: E402

#: Names provided by feature modules, imported on first access.
_LAZY = {
    "ToolSelectionMiddleware": "latentrag.integrations.langchain_tools:ToolSelectionMiddleware",
    "XRAGChatModel": "latentrag.integrations.langchain_xrag:XRAGChatModel",
}

__all__ = [
    "LangChainCompressor", "LangChainEmbeddings", "LangChainRetriever", "document_to_hit", "hit_to_document", *_LAZY,
]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)


def hit_to_document(hit: Hit) -> Document:
    """A ``Document`` with the hit's id, text and metadata, plus ``metadata["score"]``."""
    return Document(id=hit.id, page_content=hit.text, metadata={**hit.meta, "score": hit.score})


def document_to_hit(doc: Document, position: int) -> Hit:
    """A ``Hit`` for ``doc``; documents without an id get ``"doc-<position>"``."""
    if not isinstance(doc, Document):
        msg = (
            f"documents[{position}] must be a langchain_core Document, got {type(doc).__name__} "
            f"({str(doc)[:60]!r}); wrap text as Document(page_content=...)."
        )
        raise InvalidInputError(msg)
    score = doc.metadata.get("score", 0.0)
    score = float(score) if isinstance(score, (int, float)) else 0.0
    return Hit(doc.id if doc.id is not None else f"doc-{position}", doc.page_content, score, dict(doc.metadata))


class LangChainRetriever(BaseRetriever):
    """Any latentrag retriever as a LangChain ``BaseRetriever``.

    ``k`` is honoured in the constructor and per call (``invoke(query, k=3)``); ids and metadata are
    kept and the score is put in ``metadata["score"]``. ``ainvoke`` is really async.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    k: int | None = None

    def _call_k(self, kwargs: dict[str, Any]) -> int | None:
        k = kwargs.get("k", self.k)
        return None if k is None else check_positive_int("k", k)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.retriever.retrieve(query, k=self._call_k(kwargs))
        return [hit_to_document(h) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = await self.retriever.aretrieve(query, k=self._call_k(kwargs))
        return [hit_to_document(h) for h in hits]


def _config(callbacks: Any | None) -> Any:
    """The run config for a custom event: the callbacks LangChain handed the compressor, if any."""
    return {"callbacks": callbacks} if callbacks is not None else None


class LangChainCompressor(BaseDocumentCompressor):
    """Any latentrag compressor (reranker, filter, token budget) as a ``BaseDocumentCompressor``.

    Documents are copied, never mutated; ids and metadata are kept and ``metadata["score"]`` holds the
    new score. A ``latentrag.compress`` custom event with the counts is dispatched when run inside a
    LangChain run (``astream_events`` shows it), since compressors get no trace span of their own.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    compressor: Any

    def _merge(self, documents: Sequence[Document], hits: list[Hit]) -> list[Document]:
        by_key = {document_to_hit(d, i).id: d for i, d in enumerate(documents)}
        out = []
        for h in hits:
            original = by_key.get(h.id)
            meta = {**(original.metadata if original is not None else {}), **h.meta, "score": h.score}
            out.append(Document(id=original.id if original is not None else h.id, page_content=h.text, metadata=meta))
        return out

    def _event(self, documents: Sequence[Document], result: list[Document]) -> dict[str, Any]:
        return {
            "compressor": type(self.compressor).__name__,
            "n_in": len(documents),
            "n_out": len(result),
            "ids": [d.id for d in result],
        }

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any | None = None
    ) -> Sequence[Document]:
        hits = self.compressor.compress(query, [document_to_hit(d, i) for i, d in enumerate(documents)])
        result = self._merge(documents, hits)
        # Outside a LangChain run there is no trace to attach the event to (RuntimeError).
        with contextlib.suppress(RuntimeError):
            dispatch_custom_event("latentrag.compress", self._event(documents, result), config=_config(callbacks))
        return result

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any | None = None
    ) -> Sequence[Document]:
        hits = await self.compressor.acompress(query, [document_to_hit(d, i) for i, d in enumerate(documents)])
        result = self._merge(documents, hits)
        with contextlib.suppress(RuntimeError):
            event = self._event(documents, result)
            await adispatch_custom_event("latentrag.compress", event, config=_config(callbacks))
        return result


class LangChainEmbeddings(Embeddings):
    """A latentrag encoder as LangChain ``Embeddings`` (``encoder=None``: the shipped MiniLM).

    Batches go to the encoder whole (it batches and caches internally); the async methods run in a
    worker thread, so they never block the event loop.
    """

    def __init__(self, encoder: Any = None) -> None:
        from latentrag.encoders import load_encoder

        self.encoder = load_encoder(encoder)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
