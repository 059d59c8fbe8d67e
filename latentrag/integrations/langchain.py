"""LangChain adapters: one generic adapter per surface.

- :class:`LangChainRetriever` wraps any latentrag retriever as a ``BaseRetriever``.
- :class:`LangChainCompressor` wraps any latentrag compressor (rerankers included) as a
  ``BaseDocumentCompressor``, usable in langchain-classic's ``ContextualCompressionRetriever``.
- :class:`LangChainEmbeddings` exposes a latentrag encoder as ``Embeddings``, so a LangChain vector
  store built with it can back :class:`~latentrag.stores.FrameworkStore`.
- :func:`from_documents` builds a store from ``Document``s (also ``FaissStore.from_documents``).

Document layout: ``Document.id`` is the passage id and ``metadata`` its stored metadata, plus one key,
``metadata["retrieval"]``, holding what belongs to this retrieval rather than to the passage: the
``score``, the technique (``retriever``) and per-query provenance such as a multi-hop ``hop``. That
group compares equal to any other retrieval group, so LangChain's de-duplication (``MultiQueryRetriever``
compares whole documents) sees a passage found by several queries as one document, and keeps the first
copy with its score. ``retrieval_key=None`` gives the flat layout (``metadata["score"]``) instead.

Name clash: langchain-classic also has a ``CrossEncoderReranker`` (a document compressor over a
``HuggingFaceCrossEncoder``). latentrag's is a latentrag compressor and is wrapped here; import it under
the unambiguous alias :data:`LatentRagCrossEncoderReranker` when both are in one program.
``LangChainCompressor`` refuses a LangChain compressor with a message saying which is which.

Importing this module imports ``langchain_core``; nothing else in latentrag does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
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
from langchain_core.retrievers import BaseRetriever, LangSmithRetrieverParams  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

from latentrag.compressors.base import Compressor  # noqa: E402
from latentrag.errors import InvalidInputError, check_positive_int  # noqa: E402
from latentrag.retrievers.base import BaseRetriever as CoreRetriever  # noqa: E402
from latentrag.retrievers.base import Retriever, check_retriever  # noqa: E402
from latentrag.stores.base import Pickled  # noqa: E402
from latentrag.types import Hit  # noqa: E402
from latentrag.validate import short  # noqa: E402

#: Names provided by feature modules, imported on first access.
_LAZY = {
    "ToolSelectionMiddleware": "latentrag.integrations.langchain_tools:ToolSelectionMiddleware",
    "XRAGChatModel": "latentrag.integrations.langchain_xrag:XRAGChatModel",
    #: latentrag's cross-encoder reranker under a name that cannot be mistaken for langchain-classic's.
    "LatentRagCrossEncoderReranker": "latentrag.compressors.rerank:CrossEncoderReranker",
}

__all__ = [
    "DEFAULT_RETRIEVAL_KEY", "LangChainCompressor", "LangChainEmbeddings", "LangChainRetriever", "RetrievalInfo",
    "document_to_hit", "from_documents", "hit_to_document", *_LAZY,
]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)

#: The metadata key holding a document's retrieval group (score, technique, per-query provenance).
DEFAULT_RETRIEVAL_KEY = "retrieval"
#: Per-call keyword arguments that LangChain itself passes through ``invoke`` (accepted and ignored).
_LANGCHAIN_KWARGS = frozenset({"verbose"})


class RetrievalInfo(dict[str, Any]):
    """What belongs to one retrieval of a passage, not to the passage: ``score``, ``retriever`` (the
    technique) and per-query provenance (``hop``, ``via``, ...). A plain ``dict`` in every respect but one:
    two ``RetrievalInfo`` always compare equal, so documents that differ only in how they were found are
    the same document to LangChain's de-duplication. Serialises (JSON, pickle) as a dict."""

    __hash__ = None  # a dict is unhashable

    def __eq__(self, other: object) -> bool:
        return True if isinstance(other, RetrievalInfo) else dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


def _technique(retriever: Any) -> str:
    return str(getattr(retriever, "technique", None) or type(retriever).__name__)


def _kind(obj: Any) -> str:
    """A name no other library's class can be mistaken for: ``latentrag.CrossEncoderReranker``."""
    cls = type(obj)
    if cls.__module__.startswith("latentrag."):
        return f"latentrag.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def hit_to_document(
    hit: Hit, *, retrieval_key: str | None = DEFAULT_RETRIEVAL_KEY, retrieval_keys: frozenset[str] = frozenset(),
    technique: str | None = None,
) -> Document:
    """A ``Document`` with the hit's id, text and metadata. With ``retrieval_key`` (the default) the score,
    ``technique`` and the per-query ``retrieval_keys`` of the hit's metadata go under
    ``metadata[retrieval_key]`` as a :class:`RetrievalInfo`; with ``None`` the score is ``metadata["score"]``."""
    if retrieval_key is None:
        return Document(id=hit.id, page_content=hit.text, metadata={**hit.meta, "score": hit.score})
    meta = {k: v for k, v in hit.meta.items() if k not in retrieval_keys}
    info = RetrievalInfo(score=hit.score)
    if technique is not None:
        info["retriever"] = technique
    info.update({k: v for k, v in hit.meta.items() if k in retrieval_keys})
    meta[retrieval_key] = info
    return Document(id=hit.id, page_content=hit.text, metadata=meta)


def _score_of(metadata: Mapping[str, Any], retrieval_key: str | None) -> float:
    group = metadata.get(retrieval_key) if retrieval_key is not None else None
    score = group.get("score", 0.0) if isinstance(group, Mapping) else metadata.get("score", 0.0)
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0


def _check_document(doc: Any, position: int, what: str = "documents") -> Document:
    if not isinstance(doc, Document):
        msg = (
            f"{what}[{position}] must be a langchain_core Document, got {type(doc).__name__} "
            f"({str(doc)[:60]!r}); wrap text as Document(page_content=...)."
        )
        raise InvalidInputError(msg)
    return doc


def document_to_hit(doc: Document, position: int, retrieval_key: str | None = DEFAULT_RETRIEVAL_KEY) -> Hit:
    """A ``Hit`` for ``doc``; documents without an id get ``"doc-<position>"``. The score is read from the
    retrieval group (``metadata[retrieval_key]["score"]``) or else ``metadata["score"]``."""
    doc = _check_document(doc, position)
    hit_id = doc.id if doc.id is not None else f"doc-{position}"
    return Hit(hit_id, doc.page_content, _score_of(doc.metadata, retrieval_key), dict(doc.metadata))


def from_documents(
    documents: Sequence[Document], *, store_class: type | None = None, vectors: Any = None, **options: Any
) -> Any:
    """A new store (``store_class``, default :class:`~latentrag.FaissStore`, built with ``options``) holding
    ``documents``: ``Document.id`` is the id (a fresh uuid when ``None``), ``page_content`` the text and
    ``metadata`` the metadata (a retrieval group from :class:`LangChainRetriever` is left out: it describes a
    past retrieval, not the passage). ``FaissStore.from_documents(docs)`` calls this."""
    if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
        msg = f"documents must be a list of langchain_core Documents, got {type(documents).__name__}."
        raise InvalidInputError(msg)
    docs = [_check_document(d, i) for i, d in enumerate(documents)]
    ids = [d.id if d.id is not None else uuid.uuid4().hex for d in docs]
    metas = [{k: v for k, v in d.metadata.items() if not isinstance(v, RetrievalInfo)} for d in docs]
    if store_class is None:
        from latentrag.stores.faiss import FaissStore

        store_class = FaissStore
    store_options = dict(options)
    if vectors is not None:
        store_options["vectors"] = vectors
    return store_class.from_texts([d.page_content for d in docs], ids=ids, metadatas=metas,  # type: ignore[attr-defined]
                                  **store_options)


def _option_names(retriever: Any) -> tuple[tuple[str, ...], bool]:
    """The keyword options ``retriever.retrieve`` takes per call, and whether it takes any (``**kwargs``)."""
    names = getattr(retriever, "call_options", None)
    if callable(names):
        return tuple(names()), False
    import inspect

    try:
        params = list(inspect.signature(retriever.retrieve).parameters.values())[1:]
    except (TypeError, ValueError):  # a builtin without a signature: trust the caller
        return ("k",), True
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return tuple(p.name for p in params if p.kind is not p.VAR_KEYWORD), True
    return tuple(p.name for p in params if p.kind is not p.VAR_POSITIONAL), False


class LangChainRetriever(BaseRetriever):
    """Any latentrag retriever as a LangChain ``BaseRetriever``.

    Per call, ``invoke(query, k=3, filter={"title": "Jaws (film)"})`` honours every option the wrapped
    retriever takes (:meth:`~latentrag.retrievers.base.BaseRetriever.call_options`: ``k`` and, for the
    passage retrievers, ``filter``, which is ANDed with the retriever's own); ``search_kwargs`` gives defaults
    for them, as for a LangChain vector store retriever. An unknown option raises
    :class:`~latentrag.errors.InvalidInputError` naming the valid ones. ids and metadata are kept, and the
    score sits in ``metadata["retrieval"]`` (see the module docs). ``ainvoke`` is really async.

    Traces name the technique: the run is named after the wrapped retriever (``MultiHopRetriever``) and
    LangSmith's ``ls_retriever_name`` is ``"multi-hop"``, ``"dense"``, ...
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    retrieval_key: str | None = DEFAULT_RETRIEVAL_KEY

    def __init__(self, retriever: Retriever | None = None, **data: Any) -> None:
        check_retriever(retriever, foreign=BaseRetriever, framework="LangChain", where="LangChainRetriever")
        k = data.get("k")
        if k is not None:
            check_positive_int("k", k)
        search_kwargs = data.get("search_kwargs") or {}
        if not isinstance(search_kwargs, Mapping):
            msg = f"search_kwargs must be a dict of per-call options, got {type(search_kwargs).__name__}."
            raise InvalidInputError(msg)
        _check_options(retriever, dict(search_kwargs), "search_kwargs")
        key = data.get("retrieval_key", DEFAULT_RETRIEVAL_KEY)
        if key is not None and (not isinstance(key, str) or not key):
            msg = f"retrieval_key must be a non-empty str or None, got {short(key)}."
            raise InvalidInputError(msg)
        data.setdefault("name", type(retriever).__name__)
        data["retriever"] = retriever
        super().__init__(**data)

    @classmethod
    def from_store(cls, store: Any, technique: str = "dense", *, k: int | None = None,
                   search_kwargs: Mapping[str, Any] | None = None, **options: Any) -> LangChainRetriever:
        """A LangChain retriever of ``technique`` (``"dense"``, ``"multi-hop"``) over a latentrag store, in the
        spirit of ``VectorStore.as_retriever(search_kwargs={"k": 3, "filter": {...}})``; ``options`` go to the
        latentrag retriever (``n_hops``, ``filter``, ...). ``store.as_retriever(framework="langchain")`` calls it."""
        from latentrag.retrievers.base import retriever_for

        kwargs = dict(search_kwargs or {})
        k = kwargs.pop("k", k)
        return cls(retriever_for(store, technique, **options), k=k, search_kwargs=kwargs)

    def __repr__(self) -> str:
        extra = "" if not self.search_kwargs else f", search_kwargs={self.search_kwargs!r}"
        return f"LangChainRetriever({self.retriever!r}, k={self.k}{extra})"

    @property
    def technique(self) -> str:
        """The wrapped technique's name (``"multi-hop"``, ``"dense"``, ``"tools"``...)."""
        return _technique(self.retriever)

    def _get_ls_params(self, **kwargs: Any) -> LangSmithRetrieverParams:
        params = LangSmithRetrieverParams(ls_retriever_name=self.technique)
        store = getattr(self.retriever, "store", None)
        if store is not None:
            params["ls_vector_store_provider"] = type(store).__name__.removesuffix("Store").lower() or None
        encoder = getattr(store, "encoder", None) or getattr(self.retriever, "encoder", None)
        if encoder is not None:
            params["ls_embedding_provider"] = "latentrag"
            params["ls_embedding_model"] = str(getattr(encoder, "name", type(encoder).__name__))
        return params

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        opts = {**self.search_kwargs, **{n: v for n, v in kwargs.items() if n not in _LANGCHAIN_KWARGS}}
        _check_options(self.retriever, opts, "invoke")
        if opts.get("k") is None:
            opts.pop("k", None)
            if self.k is not None:
                opts["k"] = self.k
        return opts

    def _documents(self, hits: list[Hit]) -> list[Document]:
        keys = frozenset(getattr(self.retriever, "retrieval_keys", frozenset()))
        return [hit_to_document(h, retrieval_key=self.retrieval_key, retrieval_keys=keys, technique=self.technique)
                for h in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._documents(self.retriever.retrieve(query, **self._options(kwargs)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._documents(await self.retriever.aretrieve(query, **self._options(kwargs)))

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        if not isinstance(self.retriever, CoreRetriever):  # latentrag retrievers name their own failures
            wrapped = Pickled(self.retriever, "LangChainRetriever.retriever")
            state["__dict__"] = {**state["__dict__"], "retriever": wrapped}
        return state


def _check_options(retriever: Any, opts: dict[str, Any], where: str) -> None:
    names, open_ended = _option_names(retriever)
    unknown = sorted(n for n in opts if n not in names)
    if unknown and not open_ended:
        msg = (f"{where}: {type(retriever).__name__} does not take the option(s) {unknown}; the options it takes "
               f"per call are {list(names)}.")
        raise InvalidInputError(msg)
    k = opts.get("k")
    if k is not None:
        check_positive_int("k", k)


def _config(callbacks: Any | None) -> Any:
    """The run config for a custom event: the callbacks LangChain handed the compressor, if any."""
    return {"callbacks": callbacks} if callbacks is not None else None


def _check_compressor(compressor: Any) -> None:
    if isinstance(compressor, BaseDocumentCompressor):
        msg = (
            f"LangChainCompressor wraps a latentrag compressor, but {_kind(compressor)} is already a LangChain "
            f"document compressor: pass it to ContextualCompressionRetriever(base_compressor=...) directly. "
            f"(langchain_classic's CrossEncoderReranker and latentrag's share a name; import latentrag's as "
            f"`from latentrag.integrations.langchain import LatentRagCrossEncoderReranker`.)"
        )
        raise InvalidInputError(msg)
    if not isinstance(compressor, Compressor):
        msg = (f"compressor must be a latentrag compressor (compress(query, hits) and async acompress), got "
               f"{type(compressor).__name__} ({short(compressor)}); for example LatentRagCrossEncoderReranker() "
               f"or TokenBudgetCompressor(budget_tokens=...).")
        raise InvalidInputError(msg)


class LangChainCompressor(BaseDocumentCompressor):
    """Any latentrag compressor (reranker, filter, token budget) as a ``BaseDocumentCompressor``.

    Documents are copied, never mutated; ids and metadata are kept, and the new score goes where the
    document had its score: into its retrieval group (``metadata["retrieval"]["score"]``, see the module
    docs) or else ``metadata["score"]``. A ``latentrag.compress`` custom event with the counts is
    dispatched when run inside a LangChain run (``astream_events`` shows it), since compressors get no
    trace span of their own.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    compressor: Compressor
    retrieval_key: str | None = DEFAULT_RETRIEVAL_KEY

    def __init__(self, compressor: Compressor | None = None, **data: Any) -> None:
        _check_compressor(compressor)
        data["compressor"] = compressor
        super().__init__(**data)

    def __repr__(self) -> str:
        return f"LangChainCompressor({self.compressor!r})"

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["__dict__"] = {**state["__dict__"],
                             "compressor": Pickled(self.compressor, "LangChainCompressor.compressor")}
        return state

    def _hits(self, documents: Sequence[Document]) -> list[Hit]:
        return [document_to_hit(d, i, self.retrieval_key) for i, d in enumerate(documents)]

    def _merge(self, documents: Sequence[Document], hits: list[Hit]) -> list[Document]:
        by_key = {document_to_hit(d, i, self.retrieval_key).id: d for i, d in enumerate(documents)}
        out = []
        for h in hits:
            original = by_key.get(h.id)
            meta = {**(original.metadata if original is not None else {}), **h.meta}
            group = meta.get(self.retrieval_key) if self.retrieval_key is not None else None
            if isinstance(group, Mapping) and self.retrieval_key is not None:
                meta[self.retrieval_key] = RetrievalInfo({**group, "score": h.score})
            else:
                meta["score"] = h.score
            out.append(Document(id=original.id if original is not None else h.id, page_content=h.text, metadata=meta))
        return out

    def _event(self, documents: Sequence[Document], result: list[Document]) -> dict[str, Any]:
        return {
            "compressor": type(self.compressor).__name__,
            "kind": _kind(self.compressor),
            "n_in": len(documents),
            "n_out": len(result),
            "ids": [d.id for d in result],
        }

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any | None = None
    ) -> Sequence[Document]:
        hits = self.compressor.compress(query, self._hits(documents))
        result = self._merge(documents, hits)
        # Outside a LangChain run there is no trace to attach the event to (RuntimeError).
        with contextlib.suppress(RuntimeError):
            dispatch_custom_event("latentrag.compress", self._event(documents, result), config=_config(callbacks))
        return result

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any | None = None
    ) -> Sequence[Document]:
        hits = await self.compressor.acompress(query, self._hits(documents))
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

    def __repr__(self) -> str:
        return f"LangChainEmbeddings(encoder={self.encoder.name!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
