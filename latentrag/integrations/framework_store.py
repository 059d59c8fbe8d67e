"""``FrameworkStore``: the store protocol over a vector store a user already has in LangChain or LlamaIndex.

It wraps
- a LangChain ``VectorStore`` (searched with ``similarity_search_with_score_by_vector``), or
- a LlamaIndex vector store that stores text (searched with ``VectorStoreQuery(query_embedding=...)``),
  or a LlamaIndex ``VectorStoreIndex`` (its vector store plus its docstore, for stores such as
  ``SimpleVectorStore`` that keep only vectors),

so multi-hop retrieval, tool selection and reranking run on Qdrant, Elasticsearch, Chroma, pgvector
through LangChain, and so on, without latentrag knowing the engine.

Costs, and what differs from the native stores:
- **Vectors.** Multi-hop retrieval needs each hit's vector. Where the framework store hands them back
  (LangChain's ``InMemoryVectorStore``, LlamaIndex's ``SimpleVectorStore``) they are read; elsewhere
  the hit's text is re-encoded with latentrag's encoder, whose cache (10,000 texts by default) makes a
  repeated passage free. A cold re-encode costs about 15 ms per passage on 2 CPU cores.
- **Scores** are always the cosine of the query and the hit's vector, recomputed here, so they mean
  the same as ``FaissStore``'s whatever distance the engine reports; hits are re-sorted by them.
- **Filters** are passed to the engine (a callable for ``InMemoryVectorStore``, the dict itself for
  other LangChain stores, ``MetadataFilters`` for LlamaIndex) and re-checked here, so an engine that
  ignores a filter never leaks a non-matching hit; it can then return fewer than ``k`` hits.
- **Counting** works where the engine exposes it (the in-memory stores); elsewhere ``len()`` raises
  :class:`~latentrag.errors.StoreError`, and retrievers treat the store as non-empty.
- **Encoder.** The framework store embeds added texts with its own embedding model. At construction
  one probe text is embedded by both; a cosine below 0.99 raises
  :class:`~latentrag.errors.EncoderMismatchError`. Build the framework store with
  :class:`~latentrag.integrations.langchain.LangChainEmbeddings` or
  :class:`~latentrag.integrations.llama_index.LlamaIndexEmbedding` to share latentrag's encoder.

This module imports neither framework at import time; the LlamaIndex query types are imported when
a LlamaIndex store is wrapped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import EncoderMismatchError, InvalidInputError, StoreError, check_positive_int
from latentrag.stores.base import BaseStore, Batch, Filter, matches
from latentrag.types import Hit

logger = logging.getLogger(__name__)

#: The text both embedding models embed at construction to check that they agree.
PROBE_TEXT = "latentrag encoder check: where was the composer of this opera born?"
MIN_PROBE_COSINE = 0.99


class FrameworkStore(BaseStore):
    can_list = False
    can_count = False
    #: Pickling copies the wrapped framework store with it (an in-memory store is copied; one that is a
    #: client of a server pickles as its framework allows, or raises).
    picklable = True

    """The latentrag store protocol over a LangChain or LlamaIndex vector store (see the module docs).

    Example::

        from langchain_core.vectorstores import InMemoryVectorStore
        from latentrag.integrations.langchain import LangChainEmbeddings
        vs = InMemoryVectorStore(LangChainEmbeddings())           # or Qdrant, Chroma, ...
        store = FrameworkStore(vs)
        store.add(texts, ids=ids)
        MultiHopRetriever(store, k=10).retrieve("where was the performer of X born?")
    """

    def __init__(self, vectorstore: Any, encoder: Encoder | str | None = None, *, check: bool = True,
                 max_workers: int = 8) -> None:
        super().__init__()
        self.vectorstore = vectorstore
        self.max_workers = check_positive_int("max_workers", max_workers)
        if hasattr(vectorstore, "similarity_search_with_score_by_vector"):
            self._backend: _Backend = _LangChainBackend(vectorstore)
        elif hasattr(vectorstore, "vector_store") and hasattr(vectorstore, "docstore"):
            self._backend = _LlamaIndexBackend(vectorstore.vector_store, index=vectorstore)
        elif hasattr(vectorstore, "query") and hasattr(vectorstore, "stores_text"):
            if not vectorstore.stores_text:
                msg = (
                    f"the LlamaIndex vector store {type(vectorstore).__name__} keeps only vectors, not text; "
                    f"wrap the VectorStoreIndex built on it instead: FrameworkStore(index)."
                )
                raise InvalidInputError(msg)
            self._backend = _LlamaIndexBackend(vectorstore, index=None)
        else:
            msg = (
                f"FrameworkStore wraps a LangChain VectorStore, a LlamaIndex vector store or a LlamaIndex "
                f"VectorStoreIndex; got {type(vectorstore).__name__}. For a database, use PgVectorStore or "
                f"MilvusStore."
            )
            raise InvalidInputError(msg)
        own = self._backend.own_encoder()
        self.encoder = load_encoder(own if encoder is None and own is not None else encoder)
        self._backend.encoder = self.encoder
        if check:
            self._check_encoder()

    def _check_encoder(self) -> None:
        theirs = self._backend.embed_probe(PROBE_TEXT)
        if theirs is None:
            logger.info("FrameworkStore: %s exposes no embedding model; encoder agreement not checked",
                        type(self.vectorstore).__name__)
            return
        ours = self.encoder.encode([PROBE_TEXT])[0]
        theirs = np.asarray(theirs, dtype=np.float32)
        if theirs.shape != ours.shape:
            msg = (
                f"the wrapped store embeds with a {theirs.shape[0]}-d model but latentrag's encoder "
                f"{self.encoder.name!r} is {ours.shape[0]}-d; build the store with "
                f"LangChainEmbeddings/LlamaIndexEmbedding, or pass the matching encoder=."
            )
            raise EncoderMismatchError(msg)
        cos = float(ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs) + 1e-12))
        if cos < MIN_PROBE_COSINE:
            msg = (
                f"the wrapped store's embedding model disagrees with latentrag's encoder {self.encoder.name!r} "
                f"(probe cosine {cos:.3f} < {MIN_PROBE_COSINE}); build the store with "
                f"LangChainEmbeddings/LlamaIndexEmbedding, or pass the matching encoder=."
            )
            raise EncoderMismatchError(msg)

    # ----------------------------------------------------------------- protocol basics
    def _count(self) -> int:
        n = self._backend.count()
        if n is None:
            msg = f"{type(self.vectorstore).__name__} cannot count its documents through the framework API."
            raise StoreError(msg)
        return n

    def is_empty(self) -> bool:
        """True when the wrapped store is known to be empty (a store that cannot count is taken as non-empty)."""
        n = self._backend.count()
        return n == 0

    def __repr__(self) -> str:
        return f"FrameworkStore({type(self.vectorstore).__name__}, encoder={self.encoder.name!r})"

    def _where(self) -> str:
        return "the wrapped store"

    # ----------------------------------------------------------------- hooks: writes
    def _vectors_for(self, texts: list[str], vectors: Any) -> np.ndarray:
        """Caller-given vectors, validated; without them the framework embeds the texts itself (empty array)."""
        if vectors is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        return super()._vectors_for(texts, vectors)

    def _existing(self, ids: list[str]) -> set[str]:
        return set(self._backend.fetch(ids))

    def _add(self, batch: Batch) -> None:
        """Add through the framework (its embedding model embeds them, unless vectors were given and the
        framework accepts vectors)."""
        self._backend.add(batch.ids, batch.texts, batch.metas, batch.vecs if len(batch.vecs) else None)

    def _upsert(self, batch: Batch) -> None:
        """Replace documents by id (delete, then add)."""
        present = list(self._backend.fetch(batch.ids))
        if present:
            self._backend.delete(present)
        self._add(batch)

    def _delete(self, ids: list[str]) -> int:
        present = list(self._backend.fetch(ids))
        if present:
            self._backend.delete(present)
        return len(present)

    # ----------------------------------------------------------------- hooks: reads
    def _search(self, q: np.ndarray, k: int, filter: dict[str, Any] | None, with_vectors: bool) -> list[list[Hit]]:
        """Top-``k`` hits per query row, scored by cosine with each hit's vector (read or re-encoded)."""

        def one(row: np.ndarray) -> list[Hit]:
            found = [d for d in self._backend.search(row, k, filter) if matches(d.meta, filter)]
            vecs = self._vectors_of(found)
            scores = vecs @ row if len(found) else np.zeros(0, dtype=np.float32)
            order = np.argsort(-scores, kind="stable")
            return [Hit(found[j].id, found[j].text, float(scores[j]), found[j].meta,
                        vector=vecs[j].copy() if with_vectors else None) for j in order]

        if len(q) == 1:
            return [one(q[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(q))) as pool:
            return list(pool.map(one, q))

    def _vectors_of(self, docs: list[_Doc]) -> np.ndarray:
        out = np.empty((len(docs), self.dim), dtype=np.float32)
        missing = []
        for j, doc in enumerate(docs):
            if doc.vector is not None:
                out[j] = doc.vector
            else:
                missing.append(j)
        if missing:  # the encoder's cache makes repeated passages free
            out[missing] = self.encoder.encode([docs[j].text for j in missing])
        return out

    def _get(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        found = self._backend.fetch(ids)
        docs = list(found.values())
        vecs = self._vectors_of(docs) if with_vectors else None
        return {d.id: Hit(d.id, d.text, 0.0, d.meta, vector=None if vecs is None else vecs[j])
                for j, d in enumerate(docs)}


class _Doc:
    """One document as a backend returns it: vector is None when the engine does not hand it back."""

    __slots__ = ("id", "meta", "text", "vector")

    def __init__(self, doc_id: str, text: str, meta: dict[str, Any], vector: Any = None) -> None:
        self.id, self.text, self.meta = doc_id, text, meta
        self.vector = None if vector is None else np.asarray(vector, dtype=np.float32)


class _Backend:
    encoder: Encoder

    def own_encoder(self) -> Encoder | None:
        return None

    def embed_probe(self, text: str) -> Any:
        return None

    def count(self) -> int | None:
        return None

    def search(self, q: np.ndarray, k: int, filter: Filter | None) -> list[_Doc]:
        raise NotImplementedError

    def fetch(self, ids: list[str]) -> dict[str, _Doc]:
        raise NotImplementedError

    def add(self, ids: list[str], texts: list[str], metas: list[dict[str, Any]], vecs: np.ndarray | None) -> None:
        raise NotImplementedError

    def delete(self, ids: list[str]) -> None:
        raise NotImplementedError


class _LangChainBackend(_Backend):
    def __init__(self, vs: Any) -> None:
        self.vs = vs
        self.in_memory = type(vs).__name__ == "InMemoryVectorStore" and isinstance(getattr(vs, "store", None), dict)

    def own_encoder(self) -> Encoder | None:
        return getattr(getattr(self.vs, "embeddings", None), "encoder", None)

    def embed_probe(self, text: str) -> Any:
        emb = getattr(self.vs, "embeddings", None)
        return None if emb is None else emb.embed_query(text)

    def count(self) -> int | None:
        return len(self.vs.store) if self.in_memory else None

    def search(self, q: np.ndarray, k: int, filter: Filter | None) -> list[_Doc]:
        kwargs: dict[str, Any] = {}
        if filter:
            kwargs["filter"] = _callable_filter(filter) if self.in_memory else dict(filter)
        pairs = self.vs.similarity_search_with_score_by_vector(q.tolist(), k=k, **kwargs)
        return [self._doc(doc) for doc, _score in pairs]

    def _doc(self, doc: Any) -> _Doc:
        vector = self.vs.store[doc.id]["vector"] if self.in_memory and doc.id in self.vs.store else None
        return _Doc(str(doc.id), doc.page_content, dict(doc.metadata), vector)

    def fetch(self, ids: list[str]) -> dict[str, _Doc]:
        try:
            docs = self.vs.get_by_ids(ids)
        except NotImplementedError:
            msg = (
                f"{type(self.vs).__name__} does not implement get_by_ids(), so documents cannot be read back by id "
                f"(needed by vectors(), get(), add()'s duplicate check, upsert() and delete())."
            )
            raise StoreError(msg) from None
        return {str(d.id): self._doc(d) for d in docs}

    def add(self, ids: list[str], texts: list[str], metas: list[dict[str, Any]], vecs: np.ndarray | None) -> None:
        if vecs is not None and hasattr(self.vs, "add_embeddings"):  # e.g. langchain-community FAISS
            self.vs.add_embeddings(list(zip(texts, vecs.tolist(), strict=True)), metadatas=metas, ids=ids)
        else:
            self.vs.add_texts(texts, metadatas=metas, ids=ids)

    def delete(self, ids: list[str]) -> None:
        self.vs.delete(ids=ids)


def _callable_filter(filter: Filter) -> Callable[[Any], bool]:
    return lambda doc: matches(doc.metadata, filter)


class _LlamaIndexBackend(_Backend):
    def __init__(self, vs: Any, index: Any | None) -> None:
        from latentrag._optional import require

        types = require("llama_index.core.vector_stores.types", "llama-index")
        schema = require("llama_index.core.schema", "llama-index")
        self._types, self._schema = types, schema
        self.vs, self.index = vs, index

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_types"], state["_schema"]  # modules: imported again on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from latentrag._optional import require

        self.__dict__.update(state)
        self._types = require("llama_index.core.vector_stores.types", "llama-index")
        self._schema = require("llama_index.core.schema", "llama-index")

    def own_encoder(self) -> Encoder | None:
        return getattr(self._embed_model(), "encoder", None)

    def _embed_model(self) -> Any:
        return None if self.index is None else getattr(self.index, "_embed_model", None)

    def embed_probe(self, text: str) -> Any:
        model = self._embed_model()
        return None if model is None else model.get_query_embedding(text)

    def _embedding_dict(self) -> dict[str, Any] | None:
        data = getattr(self.vs, "data", None)
        table = getattr(data, "embedding_dict", None)
        return table if isinstance(table, dict) else None

    def count(self) -> int | None:
        table = self._embedding_dict()
        return None if table is None else len(table)

    def search(self, q: np.ndarray, k: int, filter: Filter | None) -> list[_Doc]:
        query = self._types.VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=k,
                                             filters=self._filters(filter))
        result = self.vs.query(query)
        if result.nodes is not None:
            return [self._doc(node) for node in result.nodes]
        found = self.fetch([str(i) for i in result.ids or []])
        return [found[str(i)] for i in result.ids or [] if str(i) in found]

    def _filters(self, filter: Filter | None) -> Any:
        if not filter:
            return None
        ops = self._types.FilterOperator
        parts = []
        for key, want in filter.items():
            values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
            if not values or any(v is None or isinstance(v, bool) for v in values):
                continue  # LlamaIndex filters cannot say "missing" or "a bool": matches() checks these hits
            if len(values) > 1 or want is not values[0]:
                parts.append(self._types.MetadataFilter(key=key, value=values, operator=ops.IN))
            else:
                parts.append(self._types.MetadataFilter(key=key, value=want, operator=ops.EQ))
        return self._types.MetadataFilters(filters=parts) if parts else None

    def _doc(self, node: Any) -> _Doc:
        vector = node.embedding
        if vector is None:
            table = self._embedding_dict()
            vector = None if table is None else table.get(node.node_id)
        return _Doc(str(node.node_id), node.get_content(), dict(node.metadata), vector)

    def fetch(self, ids: list[str]) -> dict[str, _Doc]:
        if not ids:
            return {}
        if self.index is not None:
            docstore = self.index.docstore
            nodes = [docstore.get_node(i, raise_error=False) for i in ids]
            return {str(n.node_id): self._doc(n) for n in nodes if n is not None}
        return {str(n.node_id): self._doc(n) for n in self.vs.get_nodes(node_ids=ids)}

    def add(self, ids: list[str], texts: list[str], metas: list[dict[str, Any]], vecs: np.ndarray | None) -> None:
        nodes = [
            self._schema.TextNode(id_=i, text=t, metadata=m, embedding=None if vecs is None else vecs[j].tolist())
            for j, (i, t, m) in enumerate(zip(ids, texts, metas, strict=True))
        ]
        if self.index is not None:
            self.index.insert_nodes(nodes)
        else:  # a bare vector store embeds nothing itself
            if vecs is None:
                for node, vec in zip(nodes, self.encoder.encode(texts), strict=True):
                    node.embedding = vec.tolist()
            self.vs.add(nodes)

    def delete(self, ids: list[str]) -> None:
        if self.index is not None:
            self.index.delete_nodes(ids, delete_from_docstore=True)
        else:
            self.vs.delete_nodes(node_ids=ids)

