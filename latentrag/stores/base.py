"""The store contract: the :class:`Store` protocol retrievers depend on, and :class:`BaseStore`, the one
base every backend (faiss, pgvector, Milvus, the framework stores) subclasses.

``BaseStore``'s public methods validate their input once, at the door (:mod:`latentrag.validate`: ids,
texts, metadata, vectors, ``k``, filters), assign uuids, reject duplicates, encode, and then call the
small hooks a backend writes (``_count``, ``_existing``, ``_add``, ``_upsert``, ``_delete``, ``_search``,
``_get``, optionally ``_vectors`` and ``_ids``). Capabilities are declared as class attributes
(``can_list``, ``can_count``), not probed. Retrievers and compressors depend on the protocol only.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from latentrag.encoders import Encoder
from latentrag.errors import DuplicateIdError, EncoderMismatchError, InvalidInputError, LatentRagError, StoreError
from latentrag.types import Hit
from latentrag.validate import (
    check_filter,
    check_ids,
    check_k,
    check_metadata,
    check_str_list,
    check_unique,
    json_equal,
    short,
    unit_rows,
)


class NotPicklableError(LatentRagError, TypeError):
    """An object cannot be pickled: it is a connection (not a copy of the data), or it holds something that
    cannot cross a process boundary. Also a ``TypeError``, as pickle's own refusals are."""


# ----------------------------------------------------------------------------------------------- pickling
#: Attributes that belong to the running process: pickling leaves them out, unpickling makes fresh ones.
_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())
_THREAD_BOUND: tuple[type, ...] = (_LOCK, _RLOCK, threading.local)
#: Key under which a pickled state lists its thread-bound attributes.
_FRESH = "__latentrag_fresh__"


def _fresh(kind: str) -> Any:
    return {"lock": threading.Lock, "rlock": threading.RLock}.get(kind, threading.local)()


def split_thread_bound(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``attrs`` without its locks and thread-locals; ``state[_FRESH]`` names them, so
    :func:`restore_thread_bound` re-creates them (unheld, empty) after unpickling."""
    state: dict[str, Any] = {}
    fresh: dict[str, str] = {}
    for key, value in attrs.items():
        if isinstance(value, _RLOCK):
            fresh[key] = "rlock"
        elif isinstance(value, _LOCK):
            fresh[key] = "lock"
        elif isinstance(value, threading.local):
            fresh[key] = "local"
        else:
            state[key] = value
    state[_FRESH] = fresh
    return state


def restore_thread_bound(obj: Any, state: Mapping[str, Any]) -> None:
    """Set ``obj``'s attributes from a state made by :func:`split_thread_bound`, with fresh locks."""
    values = dict(state)
    fresh = values.pop(_FRESH, {})
    obj.__dict__.update(values)
    for key, kind in fresh.items():
        obj.__dict__[key] = _fresh(kind)


def _own_pickling(cls: type) -> bool:
    """True when ``cls`` (or a base other than ``object``) defines how it pickles."""
    inherited = any(getattr(cls, name) is not getattr(object, name) for name in ("__reduce__", "__reduce_ex__",
                                                                              "__getstate__"))
    return inherited or hasattr(cls, "__setstate__")


def _rebuild(cls: type[Any], state: dict[str, Any]) -> Any:
    obj = object.__new__(cls)
    restore_thread_bound(obj, state)
    return obj


class _LockFree:
    """Pickles a latentrag helper object without its locks and thread-locals (see :func:`portable`)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self.obj), split_thread_bound(vars(self.obj)))


def portable(value: Any) -> Any:
    """``value``, or a stand-in that pickles it without its locks and thread-locals when it is a latentrag
    object that holds some and has no pickling of its own (title links, a reranker's tokenizer cache).
    Unpickling gives the object itself, with fresh locks."""
    cls = type(value)
    if (not cls.__module__.startswith("latentrag.") or not hasattr(value, "__dict__") or _own_pickling(cls)
            or cls.__new__ is not object.__new__):
        return value
    if any(isinstance(v, _THREAD_BOUND) for v in vars(value).values()):
        return _LockFree(value)
    return value


class Pickled:
    """Pickles ``obj`` on its own, so that a failure names the part that failed (``what``) with a typed
    :class:`NotPicklableError` instead of a bare ``TypeError`` from deep inside, or a silent drop."""

    __slots__ = ("hint", "obj", "what")

    def __init__(self, obj: Any, what: str, hint: str = "") -> None:
        self.obj, self.what, self.hint = obj, what, hint

    def __reduce__(self) -> tuple[Any, ...]:
        import pickle

        try:
            data = pickle.dumps(portable(self.obj), protocol=pickle.HIGHEST_PROTOCOL)
        except NotPicklableError:
            raise
        except Exception as exc:
            msg = (f"{self.what} ({type(self.obj).__name__}) cannot be pickled: {type(exc).__name__}: {exc}. "
                   f"{self.hint or 'Build it again in the other process instead of pickling it.'}")
            raise NotPicklableError(msg) from exc
        return pickle.loads, (data,)


#: Metadata filter: every key must equal the given value (a list value means "any of"); see
#: :mod:`latentrag.validate` for the exact semantics, which every backend shares.
Filter = Mapping[str, Any]


@runtime_checkable
class Store(Protocol):
    """Vectors plus documents, by id. Search is batched: ``queries`` has shape (n_queries, dim)."""

    encoder: Encoder

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(
        self, texts: Sequence[str], *, ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None, vectors: np.ndarray | None = None,
    ) -> list[str]: ...

    def upsert(
        self, texts: Sequence[str], *, ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None, vectors: np.ndarray | None = None,
    ) -> list[str]: ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, *, filter: Filter | None = None, with_vectors: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row, best first. ``with_vectors`` attaches each hit's stored vector."""
        ...

    def vectors(self, ids: Sequence[str]) -> np.ndarray: ...

    def get(self, ids: Sequence[str]) -> list[Hit]: ...

    def close(self) -> None: ...


def matches(metadata: Mapping[str, Any], filter: Filter | None) -> bool:
    """True when ``metadata`` satisfies every condition of ``filter``: equality by JSON type and value
    (``True`` never matches ``1``), a list means any of, ``None`` means missing or null.

    >>> matches({"g": True, "n": 1}, {"n": [1, 2]}), matches({"g": True}, {"g": 1})
    (True, False)
    """
    if not filter:
        return True
    for key, want in filter.items():
        have = metadata.get(key)
        options = want if isinstance(want, (list, tuple, set, frozenset)) else [want]
        if not any(have is None if w is None else json_equal(have, w) for w in options):
            return False
    return True


def store_is_empty(store: Any) -> bool:
    """True when ``store`` holds no documents: :meth:`BaseStore.is_empty`, or ``len()`` for another
    protocol store (one that cannot count is taken to be non-empty)."""
    if isinstance(store, BaseStore):
        return store.is_empty()
    try:
        return len(store) == 0
    except StoreError:
        return False


def can_list(store: Any) -> bool:
    """True when ``store`` can enumerate its documents (``ids()`` and ``get()``)."""
    if isinstance(store, BaseStore):
        return store.can_list
    return callable(getattr(store, "ids", None)) and callable(getattr(store, "get", None))


def get_existing(store: Any, ids: Sequence[str], *, with_vectors: bool = False) -> list[Hit]:
    """The hits of ``ids`` that are in ``store`` now (an id deleted meanwhile is skipped where the store can:
    every :class:`BaseStore`), optionally with their stored vectors; for another protocol store, its
    ``get`` (which may raise for a missing id) and then its ``vectors``."""
    if isinstance(store, BaseStore):
        return store.get(ids, with_vectors=with_vectors, missing="skip")
    hits = list(store.get(ids))
    if not with_vectors or not hits:
        return hits
    vecs = store.vectors([h.id for h in hits])
    return [h.copy(vector=np.asarray(v, dtype=np.float32)) for h, v in zip(hits, vecs, strict=True)]


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """A query matrix as C-contiguous float32 of shape (n, dim) at unit length; NaN/inf/zero rows rejected."""
    arr = np.asarray(queries)
    if arr.ndim == 2 and arr.shape == (0, dim):
        return np.zeros((0, dim), dtype=np.float32)
    return unit_rows(arr, dim, name="query vectors")


@dataclass
class Batch:
    """Validated parallel lists for one write: ids, texts, metadata dicts and unit vectors."""

    ids: list[str]
    texts: list[str]
    metas: list[dict[str, Any]]
    vecs: np.ndarray


class BaseStore(ABC):
    """The public skeleton of every store; a backend writes the hooks (see the module docs).

    Thread safety: every hook runs under ``self._lock`` (an ``RLock``), so one store object may be
    shared by threads, and a ``get(..., with_vectors=True)`` reads texts and vectors in one step. Writes
    through this object bump ``revision``, which derived indexes (title links) watch.
    """

    #: ``ids()`` lists the store and ``get()`` reads any id (title links need both).
    can_list: ClassVar[bool] = True
    #: ``len()`` is exact.
    can_count: ClassVar[bool] = True
    #: The read hooks (``_search``, ``_get``, ``_vectors``) are safe to run from several threads at once
    #: (each takes its own connection from a pool): reads then skip ``self._lock`` and run in parallel.
    concurrent_reads: bool = False

    #: ``pickle`` copies the store (documents, vectors, index). A store that is a connection to a database
    #: is not a copy of the data and leaves this False: pickling it raises :class:`NotPicklableError`.
    picklable: ClassVar[bool] = False

    encoder: Encoder

    def __init__(self) -> None:
        self._lock = threading.RLock()
        #: Counts writes made through this object (add, upsert, delete).
        self.revision = 0

    # ----------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """The store's state without its lock (re-created on load); refused for connection stores."""
        if not self.picklable:
            msg = (
                f"{type(self).__name__} cannot be pickled: it is a connection to {self._where()}, not a copy of "
                f"the data. Open it again in the other process (latentrag.stores.uri.open_store(URI) or the "
                f"constructor), or copy the documents into a FaissStore."
            )
            raise NotPicklableError(msg)
        with self._lock:
            return split_thread_bound(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore_thread_bound(self, state)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        vectors: np.ndarray | None = None,
        **options: Any,
    ) -> Self:
        """A new store ``cls(**options)`` holding ``texts`` (input checked before anything connects)."""
        prepare(texts, ids, metadatas, need_ids=False)
        store = cls(**options)
        store.add(texts, ids=ids, metadatas=metadatas, vectors=vectors)
        return store

    @classmethod
    def from_documents(cls, documents: Sequence[Any], *, vectors: np.ndarray | None = None, **options: Any) -> Self:
        """A new store ``cls(**options)`` holding LangChain ``Document``s: ``Document.id`` is the id (a fresh
        uuid when it is ``None``), ``page_content`` the text, ``metadata`` the metadata.

        Needs ``langchain-core``; see :func:`latentrag.integrations.langchain.from_documents`."""
        from latentrag.integrations.langchain import from_documents

        return from_documents(documents, store_class=cls, vectors=vectors, **options)

    @classmethod
    def from_nodes(cls, nodes: Sequence[Any], *, use_embeddings: bool = False, **options: Any) -> Self:
        """A new store ``cls(**options)`` holding LlamaIndex nodes (``TextNode``, ``Document`` or
        ``NodeWithScore``): ``node_id`` is the id, the node's text the text, ``metadata`` the metadata.
        ``use_embeddings=True`` keeps the nodes' own embeddings (they must come from this store's encoder).

        Needs ``llama-index-core``; see :func:`latentrag.integrations.llama_index.from_nodes`."""
        from latentrag.integrations.llama_index import from_nodes

        return from_nodes(nodes, store_class=cls, use_embeddings=use_embeddings, **options)

    def as_retriever(self, technique: str = "dense", *, framework: str | None = None, **options: Any) -> Any:
        """A retriever over this store: ``technique`` is ``"dense"``, ``"hybrid"`` or ``"multi-hop"``;
        ``framework=None`` gives the latentrag retriever, ``"langchain"`` a LangChain ``BaseRetriever`` and
        ``"llama_index"`` a LlamaIndex ``BaseRetriever``. ``options`` are the retriever's (``k``, ``filter``,
        ``n_hops``, ...), plus each framework's own spelling: LangChain's
        ``search_kwargs={"k": 3, "filter": {...}}`` and LlamaIndex's ``similarity_top_k`` and ``filters``.

        >>> store.as_retriever("multi-hop", framework="langchain", search_kwargs={"k": 5})  # doctest: +SKIP
        """
        from latentrag.retrievers.base import retriever_for

        if framework is None:
            return retriever_for(self, technique, **options)
        if framework == "langchain":
            from latentrag.integrations.langchain import LangChainRetriever

            return LangChainRetriever.from_store(self, technique, **options)
        if framework in ("llama_index", "llama-index", "llamaindex"):
            from latentrag.integrations.llama_index import LlamaIndexRetriever

            return LlamaIndexRetriever.from_defaults(store=self, technique=technique, **options)
        msg = f"framework must be None, 'langchain' or 'llama_index', got {short(framework)}."
        raise InvalidInputError(msg)

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def is_empty(self) -> bool:
        """True when the store holds no documents."""
        return len(self) == 0

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str) or not doc_id:
            return False
        with self._lock:
            return bool(self._existing([doc_id]))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - a no-op default, not a hook every backend must write
        """Release connections (the data stays). The embedded store holds none."""

    # ----------------------------------------------------------------- writes
    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[str]:
        """Add new documents; an id already present raises :class:`DuplicateIdError` (see :meth:`upsert`)."""
        batch = prepare(texts, ids, metadatas, need_ids=False)
        if not batch.ids:
            return []
        self._raise_on_clash(batch.ids)
        batch.vecs = self._vectors_for(batch.texts, vectors)
        with self._lock:
            self._raise_on_clash(batch.ids)
            self._add(batch)
            self.revision += 1
        return batch.ids

    def upsert(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[str]:
        """Insert or replace documents by id."""
        batch = prepare(texts, ids, metadatas, need_ids=True)
        if not batch.ids:
            return []
        batch.vecs = self._vectors_for(batch.texts, vectors)
        with self._lock:
            self._upsert(batch)
            self.revision += 1
        return batch.ids

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; unknown ids are ignored. Returns how many were deleted."""
        id_list = sorted(set(check_ids(ids)))
        if not id_list:
            return 0
        with self._lock:
            n = self._delete(id_list)
            self.revision += 1
        return n

    def _raise_on_clash(self, id_list: list[str]) -> None:
        with self._lock:
            clash = self._existing(id_list)
        if clash:
            msg = f"ids already in {self._where()}: {sorted(clash)[:5]}; use upsert() to replace documents."
            raise DuplicateIdError(msg)

    def _vectors_for(self, texts: list[str], vectors: Any) -> np.ndarray:
        if vectors is None:
            return unit_rows(self.encoder.encode(texts), self.dim, name="encoded vectors")
        return unit_rows(vectors, self.dim, rows=len(texts))

    # ----------------------------------------------------------------- reads
    def search(
        self, queries: np.ndarray, k: int, *, filter: Filter | None = None, with_vectors: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` hits per row of ``queries`` (shape (n, dim)), best first; ``with_vectors`` attaches each
        hit's stored vector. Scores are cosines (queries are taken at unit length)."""
        k = check_k(k)
        flt = check_filter(filter)
        q = check_queries(queries, self.dim)
        if len(q) == 0:
            return []
        with self._read_lock():
            return self._search(q, k, flt, bool(with_vectors))

    def _read_lock(self) -> Any:
        """The store lock, or nothing where the read hooks are thread-safe (:attr:`concurrent_reads`)."""
        from contextlib import nullcontext

        return nullcontext() if self.concurrent_reads else self._lock

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``ids`` as one array of shape (len(ids), dim), in the order given;
        an unknown id raises :class:`StoreError`."""
        id_list = check_ids(ids)
        if not id_list:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._read_lock():
            return self._vectors(id_list)

    def get(self, ids: Sequence[str], *, with_vectors: bool = False, missing: str = "raise") -> list[Hit]:
        """The documents of ``ids`` (score 0.0), in the order given, read in one locked step (with
        ``with_vectors`` each hit carries its own stored vector). ``missing="raise"`` raises
        :class:`StoreError` for an unknown id; ``"skip"`` leaves it out (for derived indexes that may
        lag behind a concurrent delete)."""
        id_list = _get_ids(ids, missing)
        if not id_list:
            return []
        with self._read_lock():
            found = self._get(id_list, bool(with_vectors))
        return self._ordered(id_list, found, missing)

    def _ordered(self, id_list: list[str], found: dict[str, Hit], missing: str) -> list[Hit]:
        if missing == "raise":
            for doc_id in id_list:
                if doc_id not in found:
                    raise self._unknown(doc_id)
        return [found[i].copy() for i in id_list if i in found]

    # ----------------------------------------------------------------- async reads
    async def asearch(
        self, queries: np.ndarray, k: int, *, filter: Filter | None = None, with_vectors: bool = False
    ) -> list[list[Hit]]:
        """Async :meth:`search`, checked the same way. A server store (PgVectorStore, MilvusStore on a server)
        awaits its driver's async client on a connection pool, so no thread waits for the network; the others
        run :meth:`search` in a worker thread."""
        k = check_k(k)
        flt = check_filter(filter)
        q = check_queries(queries, self.dim)
        if len(q) == 0:
            return []
        return await self._asearch(q, k, flt, bool(with_vectors))

    async def aget(self, ids: Sequence[str], *, with_vectors: bool = False, missing: str = "raise") -> list[Hit]:
        """Async :meth:`get` (same checks and order; a server store awaits its async client)."""
        id_list = _get_ids(ids, missing)
        if not id_list:
            return []
        found = await self._aget(id_list, bool(with_vectors))
        return self._ordered(id_list, found, missing)

    async def ais_empty(self) -> bool:
        """Async :meth:`is_empty`."""
        return await asyncio.to_thread(self.is_empty)

    async def aclose(self) -> None:
        """Async :meth:`close` (a server store also closes its async pool on this event loop)."""
        self.close()

    async def _asearch(self, q: np.ndarray, k: int, filter: dict[str, Any] | None,
                       with_vectors: bool) -> list[list[Hit]]:
        """The async search hook; the default runs the sync hook in a worker thread."""
        def run() -> list[list[Hit]]:
            with self._read_lock():
                return self._search(q, k, filter, with_vectors)

        return await asyncio.to_thread(run)

    async def _aget(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        def run() -> dict[str, Hit]:
            with self._read_lock():
                return self._get(ids, with_vectors)

        return await asyncio.to_thread(run)

    def ids(self) -> list[str]:
        """Every id in the store."""
        if not self.can_list:
            msg = f"{type(self).__name__} cannot list its documents; use a FaissStore, PgVectorStore or MilvusStore."
            raise StoreError(msg)
        with self._lock:
            return self._ids()

    def _where(self) -> str:
        return "the store"

    def _unknown(self, doc_id: str) -> StoreError:
        return StoreError(f"id {doc_id!r} is not in {self._where()}; check the id or add the document first.")

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _existing(self, ids: list[str]) -> set[str]:
        """The subset of ``ids`` already in the store."""

    @abstractmethod
    def _add(self, batch: Batch) -> None:
        """Insert new rows (no id of ``batch`` is in the store; ``batch.vecs`` are unit length)."""

    @abstractmethod
    def _upsert(self, batch: Batch) -> None: ...

    @abstractmethod
    def _delete(self, ids: list[str]) -> int: ...

    @abstractmethod
    def _search(self, q: np.ndarray, k: int, filter: dict[str, Any] | None, with_vectors: bool) -> list[list[Hit]]:
        """``q``: validated unit rows (at least one); ``filter``: validated (or None)."""

    @abstractmethod
    def _get(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        """The stored documents of ``ids`` by id (unknown ids absent)."""

    def _vectors(self, ids: list[str]) -> np.ndarray:
        found = self._get(ids, True)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, doc_id in enumerate(ids):
            hit = found.get(doc_id)
            if hit is None or hit.vector is None:
                raise self._unknown(doc_id)
            out[j] = hit.vector
        return out

    def _ids(self) -> list[str]:
        msg = f"{type(self).__name__} does not implement ids()."
        raise StoreError(msg)


def prepare(texts: Any, ids: Any, metadatas: Any, *, need_ids: bool) -> Batch:
    """Validate one write's parallel lists at the door; ids default to fresh uuids (not for upsert)."""
    text_list = check_str_list("texts", texts)
    if ids is None:
        if need_ids:
            msg = "upsert() needs ids=[...] to know which documents to replace."
            raise InvalidInputError(msg)
        id_list = [uuid.uuid4().hex for _ in text_list]
    else:
        id_list = check_unique(check_ids(ids))
        if len(id_list) != len(text_list):
            msg = f"ids has {len(id_list)} entries but texts has {len(text_list)}; give one id per text."
            raise InvalidInputError(msg)
    if metadatas is None:
        metas: list[dict[str, Any]] = [{} for _ in text_list]
    else:
        if isinstance(metadatas, (str, bytes, Mapping)) or not isinstance(metadatas, Iterable):
            msg = f"metadatas must be a list of dicts (one per text), got {type(metadatas).__name__}."
            raise InvalidInputError(msg)
        metas = [check_metadata(f"metadatas[{i}]", m) for i, m in enumerate(metadatas)]
        if len(metas) != len(text_list):
            msg = f"metadatas has {len(metas)} entries but texts has {len(text_list)}; give one dict per text."
            raise InvalidInputError(msg)
    return Batch(id_list, text_list, metas, np.zeros((0, 0), dtype=np.float32))


def check_encoder(stored_name: str, stored_dim: int, encoder: Encoder, where: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` has the recorded name and dim."""
    if encoder.name != stored_name or int(encoder.dim) != int(stored_dim):
        msg = (
            f"{where} was built with encoder {stored_name!r} (dim {stored_dim}) but the encoder given is "
            f"{encoder.name!r} (dim {encoder.dim}); pass encoder=None to use the recorded one, or rebuild "
            f"the index with `latentrag index --rebuild`."
        )
        raise EncoderMismatchError(msg)


def _get_ids(ids: Sequence[str], missing: str) -> list[str]:
    """The checked ids of a ``get``/``aget`` call, and its ``missing`` policy checked."""
    if missing not in ("raise", "skip"):
        msg = f"missing must be 'raise' or 'skip', got {short(missing)}."
        raise InvalidInputError(msg)
    return check_ids(ids)


class PerLoop:
    """One async resource (a client, a pool) per running event loop, opened on first use by ``opener()``: one
    task per loop, so concurrent first callers share it, and a failed open is retried by the next caller.
    Entries of closed loops (``asyncio.run`` returned) are dropped; their connections close when collected.
    ``lock`` guards the table; a store may pass the lock that guards its other connection state."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, Any]], lock: threading.Lock) -> None:
        self._opener = opener
        self._lock = lock
        self._tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.AbstractEventLoop]:
        """The event loops that hold a resource (or its opening task)."""
        return iter(list(self._tasks))

    async def get(self, check: Callable[[], None] | None = None) -> Any:
        """This loop's resource; ``check`` runs first under the lock (e.g. to refuse a closed store)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if check is not None:
                check()
            for old in [lp for lp in self._tasks if lp.is_closed()]:
                del self._tasks[old]
            task = self._tasks.get(loop)
            if task is None or (task.done() and task.exception() is not None):
                task = loop.create_task(self._opener())
                self._tasks[loop] = task
        return await task

    def detach(self) -> dict[asyncio.AbstractEventLoop, asyncio.Task[Any]]:
        """Every loop's task, taken out of the table. Call it with the lock held."""
        tasks, self._tasks = self._tasks, {}
        return tasks

    async def aclose_current(self) -> None:
        """Close (awaited) this loop's resource, if it has one."""
        with self._lock:
            task = self._tasks.pop(asyncio.get_running_loop(), None)
        if task is not None:
            await _close_task(task)

    @staticmethod
    def close_detached(tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]]) -> None:
        """Close the resources of :meth:`detach`, each from any thread on its own loop while that runs; a
        closed loop took its sockets with it."""
        for loop, task in tasks.items():
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(_close_task(task))
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(_close_task(task), loop)


async def _close_task(task: asyncio.Task[Any]) -> None:
    """Close the resource ``task`` resolves to; a task that failed has nothing to close."""
    try:
        resource = await task
    except Exception:  # noqa: BLE001 - never connected: nothing to close
        return
    await resource.close()
