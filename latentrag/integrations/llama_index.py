"""LlamaIndex adapters: one generic adapter per surface.

- :class:`LlamaIndexRetriever` wraps any latentrag retriever as a LlamaIndex ``BaseRetriever``
  (reusing ``QueryBundle.embedding`` when given; ``_aretrieve`` runs in a worker thread).
- :class:`LlamaIndexPostprocessor` wraps any latentrag compressor as a ``BaseNodePostprocessor``,
  emitting ``ReRankStartEvent``/``ReRankEndEvent`` instrumentation events.
- :class:`LlamaIndexEmbedding` exposes a latentrag encoder as a ``BaseEmbedding``, so a LlamaIndex
  index built with it can back :class:`~latentrag.stores.FrameworkStore`.

Importing this module imports ``llama_index.core``; nothing else in latentrag does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from latentrag._lazy import lazy_exports
from latentrag._optional import require

require("llama_index.core", "llama-index")

import llama_index.core.instrumentation as instrument  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from latentrag.errors import InvalidInputError  # noqa: E402
from latentrag.types import Hit  # noqa: E402

dispatcher = instrument.get_dispatcher(__name__)

_LAZY = {
    "LlamaIndexToolRetriever": "latentrag.integrations.llama_index_tools:LlamaIndexToolRetriever",
    "XRAGLLM": "latentrag.integrations.llama_index_xrag:XRAGLLM",
}

__all__ = [
    "LlamaIndexEmbedding", "LlamaIndexPostprocessor", "LlamaIndexRetriever", "hit_to_node", "node_to_hit", *_LAZY,
]


__getattr__ = lazy_exports(__name__, _LAZY, __all__)


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A ``NodeWithScore`` whose ``TextNode`` keeps the hit's id as ``id_`` and its metadata."""
    return NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=dict(hit.meta)), score=hit.score)


def node_to_hit(node: NodeWithScore) -> Hit:
    """A ``Hit`` for a LlamaIndex ``NodeWithScore`` (id, content, score and metadata kept)."""
    if not isinstance(node, NodeWithScore):
        msg = f"nodes must be LlamaIndex NodeWithScore objects, got {type(node).__name__} ({str(node)[:60]!r})."
        raise InvalidInputError(msg)
    return Hit(node.node.node_id, node.node.get_content(), node.score or 0.0, dict(node.node.metadata))


class LlamaIndexRetriever(BaseRetriever):
    """Any latentrag retriever as a LlamaIndex ``BaseRetriever``."""

    def __init__(self, retriever: Any, k: int | None = None, callback_manager: CallbackManager | None = None,
                 use_query_embedding: bool = True) -> None:
        self.retriever = retriever
        self.k = k
        #: Reuse ``QueryBundle.embedding`` when its dimension matches the retriever's encoder. Set False when
        #: the bundle is shared with retrievers of another embedding model of the same dimension (e.g. inside
        #: ``QueryFusionRetriever``), since a foreign vector cannot be told apart by its shape.
        self.use_query_embedding = use_query_embedding
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.use_query_embedding and self._embedding_fits(query_bundle.embedding):
            hits = self.retriever.retrieve_with_embedding(query_bundle.query_str, query_bundle.embedding, k=self.k)
        else:
            hits = self.retriever.retrieve(query_bundle.query_str, k=self.k)
        return [hit_to_node(h) for h in hits]

    def _embedding_fits(self, embedding: Any) -> bool:
        if embedding is None or not hasattr(self.retriever, "retrieve_with_embedding"):
            return False
        store = getattr(self.retriever, "store", None)
        encoder = getattr(store, "encoder", None) or getattr(self.retriever, "encoder", None)
        return encoder is not None and len(embedding) == int(encoder.dim)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class LlamaIndexPostprocessor(BaseNodePostprocessor):
    """Any latentrag compressor (reranker, filter, token budget) as a ``BaseNodePostprocessor``.

    Node ids and metadata are kept; scores are the compressor's. Nodes whose text the compressor
    shortened are copies, so the caller's nodes are never mutated.
    """

    compressor: Any = Field(description="A latentrag compressor: compress(query, hits) -> hits.")

    @classmethod
    def class_name(cls) -> str:
        return "LatentRagPostprocessor"

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
                model_name=type(self.compressor).__name__,
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
        return "LatentRagEmbedding"

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
