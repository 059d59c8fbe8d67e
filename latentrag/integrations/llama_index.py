"""LlamaIndex adapters: one generic adapter per surface.

- :class:`LlamaIndexRetriever` wraps any latentrag retriever as a LlamaIndex ``BaseRetriever``
  (reusing ``QueryBundle.embedding`` when given; ``_aretrieve`` runs in a worker thread). It follows
  LlamaIndex's conventions: ``similarity_top_k``, ``filters=MetadataFilters(...)``, ``from_defaults``.
- :class:`LlamaIndexPostprocessor` wraps any latentrag compressor as a ``BaseNodePostprocessor``,
  emitting ``ReRankStartEvent``/``ReRankEndEvent`` instrumentation events.
- :class:`LlamaIndexEmbedding` exposes a latentrag encoder as a ``BaseEmbedding``, so a LlamaIndex
  index built with it can back :class:`~latentrag.stores.FrameworkStore`.
- :func:`from_nodes` builds a store from nodes (also ``FaissStore.from_nodes``).

Pickling: LlamaIndex components drop, with only a log warning, any field that does not pickle. These
adapters never drop their compressor or encoder: either it pickles, or ``pickle.dumps`` raises
:class:`~latentrag.stores.base.NotPicklableError` naming it. Callback managers are runtime wiring (a query
engine sets its own) and are not pickled.

Importing this module imports ``llama_index.core``; nothing else in latentrag does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from latentrag._lazy import lazy_exports
from latentrag._optional import require

require("llama_index.core", "llama-index")

import llama_index.core.instrumentation as instrument  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr, field_serializer  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from latentrag.compressors.base import Compressor  # noqa: E402
from latentrag.errors import InvalidInputError, check_positive_int  # noqa: E402
from latentrag.retrievers.base import BaseRetriever as CoreRetriever  # noqa: E402
from latentrag.retrievers.base import Retriever, check_retriever, combine_filters  # noqa: E402
from latentrag.stores.base import Pickled  # noqa: E402
from latentrag.types import Hit  # noqa: E402
from latentrag.validate import short  # noqa: E402

dispatcher = instrument.get_dispatcher(__name__)

_LAZY = {
    "LlamaIndexToolRetriever": "latentrag.integrations.llama_index_tools:LlamaIndexToolRetriever",
    "XRAGLLM": "latentrag.integrations.llama_index_xrag:XRAGLLM",
    #: latentrag's cross-encoder reranker under a name no other library uses.
    "LatentRagCrossEncoderReranker": "latentrag.compressors.rerank:CrossEncoderReranker",
}

__all__ = [
    "LlamaIndexEmbedding", "LlamaIndexPostprocessor", "LlamaIndexRetriever", "from_nodes", "hit_to_node",
    "metadata_filters_to_filter", "node_to_hit", *_LAZY,
]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)


def _kind(obj: Any) -> str:
    cls = type(obj)
    return f"latentrag.{cls.__qualname__}" if cls.__module__.startswith("latentrag.") else cls.__qualname__


def hit_to_node(hit: Hit, retrieval_keys: frozenset[str] = frozenset()) -> NodeWithScore:
    """A ``NodeWithScore`` whose ``TextNode`` keeps the hit's id as ``id_`` and its metadata. The per-query
    ``retrieval_keys`` (a multi-hop ``hop``, ...) stay out of the text an LLM or an embedding model sees."""
    node = TextNode(id_=hit.id, text=hit.text, metadata=dict(hit.meta))
    hidden = sorted(k for k in retrieval_keys if k in hit.meta)
    if hidden:
        node.excluded_llm_metadata_keys = hidden
        node.excluded_embed_metadata_keys = list(hidden)
    return NodeWithScore(node=node, score=hit.score)


def node_to_hit(node: NodeWithScore) -> Hit:
    """A ``Hit`` for a LlamaIndex ``NodeWithScore`` (id, content, score and metadata kept)."""
    if not isinstance(node, NodeWithScore):
        msg = f"nodes must be LlamaIndex NodeWithScore objects, got {type(node).__name__} ({str(node)[:60]!r})."
        raise InvalidInputError(msg)
    return Hit(node.node.node_id, node.node.get_content(), node.score or 0.0, dict(node.node.metadata))


def from_nodes(nodes: Sequence[Any], *, store_class: type | None = None, use_embeddings: bool = False,
               **options: Any) -> Any:
    """A new store (``store_class``, default :class:`~latentrag.FaissStore`, built with ``options``) holding
    LlamaIndex nodes (``TextNode``, ``Document`` or ``NodeWithScore``): ``node_id`` is the id, the node's
    text (without metadata) the text, ``metadata`` the metadata. ``use_embeddings=True`` keeps the nodes'
    own embeddings instead of encoding the texts; they must come from the store's encoder (a different
    dimension is an error, a different model of the same dimension cannot be detected).
    ``FaissStore.from_nodes(nodes)`` calls this."""
    if isinstance(nodes, (str, BaseNode, NodeWithScore)) or not isinstance(nodes, Sequence):
        msg = f"nodes must be a list of LlamaIndex nodes, got {type(nodes).__name__}."
        raise InvalidInputError(msg)
    plain: list[BaseNode] = []
    for i, n in enumerate(nodes):
        node = n.node if isinstance(n, NodeWithScore) else n
        if not isinstance(node, BaseNode):
            msg = (f"nodes[{i}] must be a LlamaIndex node (TextNode, Document or NodeWithScore), got "
                   f"{type(n).__name__} ({str(n)[:60]!r}).")
            raise InvalidInputError(msg)
        plain.append(node)
    options = dict(options)
    if use_embeddings:
        missing = [i for i, n in enumerate(plain) if n.embedding is None]
        if missing:
            msg = f"use_embeddings=True but nodes {missing[:5]} have no embedding; embed them or pass False."
            raise InvalidInputError(msg)
        import numpy as np

        options["vectors"] = np.asarray([n.embedding for n in plain], dtype=np.float32)
    if store_class is None:
        from latentrag.stores.faiss import FaissStore

        store_class = FaissStore
    ids = [n.node_id or uuid.uuid4().hex for n in plain]
    texts = [n.get_content() for n in plain]
    return store_class.from_texts(texts, ids=ids, metadatas=[dict(n.metadata) for n in plain],  # type: ignore[attr-defined]
                                  **options)


def metadata_filters_to_filter(filters: Any) -> dict[str, Any] | None:
    """A latentrag filter for LlamaIndex ``MetadataFilters`` (or a plain dict, returned checked): filters
    joined by AND with the ``==`` and ``in`` operators (nested AND groups too). Others raise
    :class:`~latentrag.errors.InvalidInputError`; latentrag filters match by equality only."""
    if filters is None or isinstance(filters, Mapping):
        return combine_filters(filters, None)
    from llama_index.core.vector_stores.types import (
        ExactMatchFilter,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )

    if not isinstance(filters, MetadataFilters):
        msg = f"filters must be LlamaIndex MetadataFilters or a dict, got {type(filters).__name__} ({short(filters)})."
        raise InvalidInputError(msg)
    if filters.condition not in (None, FilterCondition.AND):
        msg = (f"filters must be joined by AND, got condition={filters.condition!s}; latentrag filters are a "
               f"conjunction of key == value (or key in [values]).")
        raise InvalidInputError(msg)
    out: dict[str, Any] | None = None
    for f in filters.filters:
        operator = getattr(f, "operator", FilterOperator.EQ)  # ExactMatchFilter: == (an alias in recent versions)
        if isinstance(f, MetadataFilters):
            part = metadata_filters_to_filter(f)
        elif isinstance(f, (MetadataFilter, ExactMatchFilter)) and operator in (FilterOperator.EQ, FilterOperator.IN):
            part = {f.key: list(f.value) if operator == FilterOperator.IN else f.value}  # type: ignore[arg-type]
        else:
            msg = (f"filter {getattr(f, 'key', '?')!r} uses the operator {operator!s}; latentrag filters take == "
                   f"and in only (FilterOperator.EQ, FilterOperator.IN).")
            raise InvalidInputError(msg)
        out = combine_filters(out, part)
    return out


class LlamaIndexRetriever(BaseRetriever):
    """Any latentrag retriever as a LlamaIndex ``BaseRetriever``.

    ``similarity_top_k`` is accepted as LlamaIndex's name for ``k``; ``filters`` (``MetadataFilters`` with
    ``==``/``in`` joined by AND, or a latentrag filter dict) narrows every retrieval, on top of the wrapped
    retriever's own filter.
    """

    def __init__(self, retriever: Retriever, k: int | None = None, callback_manager: CallbackManager | None = None,
                 use_query_embedding: bool = True, *, similarity_top_k: int | None = None, filters: Any = None,
                 object_map: dict[str, Any] | None = None, verbose: bool = False) -> None:
        check_retriever(retriever, foreign=BaseRetriever, framework="LlamaIndex")
        if k is not None and similarity_top_k is not None and k != similarity_top_k:
            msg = f"k={k!r} and similarity_top_k={similarity_top_k!r} disagree; give one of them."
            raise InvalidInputError(msg)
        top = k if k is not None else similarity_top_k
        self.retriever = retriever
        self.k = None if top is None else check_positive_int("similarity_top_k" if k is None else "k", top)
        self.filters = metadata_filters_to_filter(filters)
        if self.filters is not None and "filter" not in _call_options(retriever):
            msg = f"filters given, but {type(retriever).__name__} does not take a filter; remove filters=."
            raise InvalidInputError(msg)
        #: Reuse ``QueryBundle.embedding`` when its dimension matches the retriever's encoder. Set False when
        #: the bundle is shared with retrievers of another embedding model of the same dimension (e.g. inside
        #: ``QueryFusionRetriever``), since a foreign vector cannot be told apart by its shape.
        self.use_query_embedding = use_query_embedding
        super().__init__(callback_manager=callback_manager, object_map=object_map, verbose=verbose)

    @classmethod
    def from_defaults(cls, retriever: Retriever | None = None, *, store: Any = None, technique: str = "dense",
                      similarity_top_k: int | None = None, filters: Any = None,
                      callback_manager: CallbackManager | None = None, use_query_embedding: bool = True,
                      **options: Any) -> LlamaIndexRetriever:
        """The LlamaIndex way to build one: wrap ``retriever``, or build a ``technique`` retriever (``"dense"``,
        ``"multi-hop"``) over ``store`` with ``options`` (``n_hops``, ...). ``store.as_retriever(framework=
        "llama_index")`` calls this."""
        if (retriever is None) == (store is None):
            msg = "give exactly one of retriever= (a latentrag retriever) and store= (a latentrag store)."
            raise InvalidInputError(msg)
        k = options.pop("k", None)
        if retriever is None:
            from latentrag.retrievers.base import retriever_for

            retriever = retriever_for(store, technique, **options)
        elif options:
            msg = f"options {sorted(options)} are for building a retriever from store=; got retriever= as well."
            raise InvalidInputError(msg)
        return cls(retriever, k=k, similarity_top_k=similarity_top_k, filters=filters,
                   callback_manager=callback_manager, use_query_embedding=use_query_embedding)

    @property
    def similarity_top_k(self) -> int | None:
        return self.k

    @property
    def technique(self) -> str:
        return str(getattr(self.retriever, "technique", None) or type(self.retriever).__name__)

    def __repr__(self) -> str:
        flt = "" if self.filters is None else f", filters={self.filters!r}"
        return f"LlamaIndexRetriever({self.retriever!r}, similarity_top_k={self.k}{flt})"

    def _opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"k": self.k}
        if self.filters is not None:
            opts["filter"] = self.filters
        return opts

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.use_query_embedding and self._embedding_fits(query_bundle.embedding):
            hits = self.retriever.retrieve_with_embedding(  # type: ignore[attr-defined]
                query_bundle.query_str, query_bundle.embedding, **self._opts())
        else:
            hits = self.retriever.retrieve(query_bundle.query_str, **self._opts())
        keys = frozenset(getattr(self.retriever, "retrieval_keys", frozenset()))
        return [hit_to_node(h, keys) for h in hits]

    def _embedding_fits(self, embedding: Any) -> bool:
        if embedding is None or not hasattr(self.retriever, "retrieve_with_embedding"):
            return False
        store = getattr(self.retriever, "store", None)
        encoder = getattr(store, "encoder", None) or getattr(self.retriever, "encoder", None)
        return encoder is not None and len(embedding) == int(encoder.dim)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["callback_manager"] = None  # runtime wiring, re-made on load
        if not isinstance(self.retriever, CoreRetriever):
            state["retriever"] = Pickled(self.retriever, "LlamaIndexRetriever.retriever")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.__dict__.get("callback_manager") is None:
            self.callback_manager = CallbackManager([])


def _call_options(retriever: Any) -> tuple[str, ...]:
    names = getattr(retriever, "call_options", None)
    return tuple(names()) if callable(names) else ("k",)


def _strict_state(component: BaseModel, **replace: Any) -> dict[Any, Any]:
    """pydantic's own pickle state of a LlamaIndex component, without LlamaIndex's silent dropping of
    whatever does not pickle; ``replace`` swaps fields (``Pickled`` wrappers name a failure)."""
    state = BaseModel.__getstate__(component)
    fields = dict(state["__dict__"])
    if "callback_manager" in fields:
        fields["callback_manager"] = CallbackManager([])  # runtime wiring: an engine sets its own
    fields.update(replace)
    state["__dict__"] = fields
    return state


def _check_compressor(compressor: Any) -> None:
    if isinstance(compressor, BaseNodePostprocessor):
        msg = (f"LlamaIndexPostprocessor wraps a latentrag compressor, but {type(compressor).__name__} is already a "
               f"LlamaIndex node postprocessor: pass it to node_postprocessors=[...] directly.")
        raise InvalidInputError(msg)
    if not isinstance(compressor, Compressor):
        msg = (f"compressor must be a latentrag compressor (compress(query, hits) and async acompress), got "
               f"{type(compressor).__name__} ({short(compressor)}); for example LatentRagCrossEncoderReranker() "
               f"or TokenBudgetCompressor(budget_tokens=...).")
        raise InvalidInputError(msg)


class LlamaIndexPostprocessor(BaseNodePostprocessor):
    """Any latentrag compressor (reranker, filter, token budget) as a ``BaseNodePostprocessor``.

    Node ids and metadata are kept; scores are the compressor's. Nodes whose text the compressor
    shortened are copies, so the caller's nodes are never mutated. ``class_name()`` is the class's own
    name (a subclass gets its own); ``to_dict()``/``to_json()`` describe the compressor (its kind and
    repr); a postprocessor is rebuilt from code or by pickle, not from that description.
    """

    compressor: Compressor = Field(description="A latentrag compressor: compress(query, hits) -> hits.")

    def __init__(self, compressor: Compressor | None = None, **data: Any) -> None:
        _check_compressor(compressor)
        data["compressor"] = compressor
        super().__init__(**data)

    @classmethod
    def from_defaults(cls, compressor: Compressor | None = None, *, top_n: int | None = None,
                      model: str | None = None, **data: Any) -> LlamaIndexPostprocessor:
        """``compressor``, or latentrag's cross-encoder reranker (``model``: the shipped one by default)
        keeping the ``top_n`` best nodes, the LlamaIndex reranker convention."""
        if compressor is None:
            from latentrag.compressors.rerank import CrossEncoderReranker

            compressor = CrossEncoderReranker(model=model, top_n=top_n)
        elif top_n is not None or model is not None:
            msg = "top_n= and model= build the default reranker; they cannot be combined with compressor=."
            raise InvalidInputError(msg)
        return cls(compressor=compressor, **data)

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__

    @field_serializer("compressor")
    def _describe_compressor(self, compressor: Any) -> dict[str, str]:
        return {"kind": _kind(compressor), "repr": repr(compressor)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> LlamaIndexPostprocessor:
        msg = (f"{cls.__name__}.from_dict cannot rebuild the compressor from its description "
               f"{data.get('compressor')!r}; build it in code, or pickle the postprocessor.")
        raise InvalidInputError(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.compressor!r})"

    def __getstate__(self) -> dict[Any, Any]:
        return _strict_state(self, compressor=Pickled(self.compressor, f"{type(self).__name__}.compressor"))

    def _merge(self, nodes: list[NodeWithScore], hits: list[Hit]) -> list[NodeWithScore]:
        by_id = {n.node.node_id: n for n in nodes}
        out = []
        for h in hits:
            original = by_id.get(h.id)
            if original is None:
                out.append(hit_to_node(h))
                continue
            node = original.node
            if h.text != node.get_content() or h.meta != node.metadata:
                node = node.model_copy(deep=True)
                if h.text != original.node.get_content() and isinstance(node, TextNode):
                    node.text = h.text
                node.metadata = {**node.metadata, **h.meta}
                hidden = [k for k in getattr(self.compressor, "llm_hidden_keys", ()) if k in node.metadata]
                if hidden:  # bookkeeping keys (token counts, original text) stay out of prompts and embeddings
                    node.excluded_llm_metadata_keys = sorted({*node.excluded_llm_metadata_keys, *hidden})
                    node.excluded_embed_metadata_keys = sorted({*node.excluded_embed_metadata_keys, *hidden})
            out.append(NodeWithScore(node=node, score=h.score))
        return out

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> str:
        query = query_bundle.query_str if query_bundle is not None else ""
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=int(getattr(self.compressor, "top_n", None) or len(nodes)),
                model_name=_kind(self.compressor),
            )
        )
        return query

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = "LlamaIndexPostprocessor needs the query; pass query_bundle or query_str."
            raise ValueError(msg)
        query = self._start(nodes, query_bundle)
        result = self._merge(nodes, self.compressor.compress(query, [node_to_hit(n) for n in nodes]))
        dispatcher.event(ReRankEndEvent(nodes=result))
        return result

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = "LlamaIndexPostprocessor needs the query; pass query_bundle or query_str."
            raise ValueError(msg)
        query = self._start(nodes, query_bundle)
        hits = await self.compressor.acompress(query, [node_to_hit(n) for n in nodes])
        result = self._merge(nodes, hits)
        dispatcher.event(ReRankEndEvent(nodes=result))
        return result


class LlamaIndexEmbedding(BaseEmbedding):
    """A latentrag encoder as a LlamaIndex ``BaseEmbedding`` (``encoder=None``: the shipped MiniLM).

    Text batches go to the encoder whole; the async methods run in a worker thread.
    """

    _encoder: Any = PrivateAttr()

    def __init__(self, encoder: Any = None, **kwargs: Any) -> None:
        from latentrag.encoders import load_encoder

        enc = load_encoder(encoder)
        kwargs.setdefault("model_name", enc.name)
        kwargs.setdefault("embed_batch_size", 64)
        super().__init__(**kwargs)
        self._encoder = enc

    @property
    def encoder(self) -> Any:
        return self._encoder

    @classmethod
    def class_name(cls) -> str:
        return "LatentRagEmbedding" if cls is LlamaIndexEmbedding else cls.__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}(encoder={self.model_name!r})"

    def __getstate__(self) -> dict[Any, Any]:
        state = _strict_state(self)
        private = dict(state.get("__pydantic_private__") or {})
        private["_encoder"] = Pickled(self._encoder, f"{type(self).__name__}.encoder")
        state["__pydantic_private__"] = private
        return state

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)
