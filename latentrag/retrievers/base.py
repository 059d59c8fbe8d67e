"""Template-method base for retrievers: the public methods validate, batch and run async; a
subclass implements one hook, :meth:`BaseRetriever._retrieve_batch`.

Per-call metadata filters: ``retrieve(query, filter={...})`` (and every other public method) narrows one
call. The filter a subclass's hook receives is the *effective* one, the constructor's ``filter`` AND the
call's (:func:`combine_filters`), so a retriever scoped to one tenant can never be widened per call. A
subclass opts in by declaring a ``filter`` keyword on ``_retrieve_batch``; the others refuse a per-call
filter with :class:`~latentrag.errors.InvalidInputError` (``supports_filter`` says which).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from latentrag.errors import InvalidInputError, check_positive_int, check_query
from latentrag.stores.base import Filter, portable, restore_thread_bound, split_thread_bound
from latentrag.types import Hit
from latentrag.validate import check_filter, json_equal, short


@runtime_checkable
class Retriever(Protocol):
    """Anything with ``retrieve(query, k=None) -> list[Hit]`` and ``async aretrieve(query, k=None)``; the
    framework adapters accept any such object (extra keyword options, such as ``filter``, pass through)."""

    def retrieve(self, query: str, k: int | None = None) -> list[Hit]: ...

    async def aretrieve(self, query: str, k: int | None = None) -> list[Hit]: ...


def combine_filters(first: Filter | None, second: Filter | None) -> dict[str, Any] | None:
    """Both filters at once (AND): keys of either must match; a key in both keeps the values allowed by
    both (as a list). A key whose allowed values do not intersect becomes ``[]``, which matches nothing
    (:func:`unsatisfiable` tells).

    >>> combine_filters({"lang": ["en", "de"]}, {"lang": "de", "year": 2024})
    {'lang': ['de'], 'year': 2024}
    """
    a, b = check_filter(first), check_filter(second)
    if not a or not b:
        return a or b or None
    out = dict(a)
    for key, want in b.items():
        if key not in out:
            out[key] = want
            continue
        have = _options(out[key])
        out[key] = [w for w in _options(want) if any(_same(w, h) for h in have)]
    return out


def unsatisfiable(filter: Filter | None) -> bool:
    """True when ``filter`` has a key with no allowed value (the AND of two disjoint filters)."""
    if not filter:
        return False
    return any(isinstance(v, list) and not v for v in filter.values())


def _options(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _same(a: Any, b: Any) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and json_equal(a, b))


def _technique(class_name: str) -> str:
    """``MultiHopRetriever`` -> ``"multi-hop"``: the class name without ``Retriever``, in kebab case."""
    stem = class_name.removesuffix("Retriever") or class_name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", stem).lower()


class BaseRetriever(ABC):
    """Query in, ranked :class:`~latentrag.Hit` list out. Subclasses are stateless across calls and
    therefore safe to share between threads.

    Pickling copies the retriever with its store (locks are re-created on load); a store that is a
    database connection refuses with :class:`~latentrag.stores.base.NotPicklableError`.
    """

    k: int
    #: The constructor's metadata filter (subclasses that filter set it; ``None``: no filter).
    filter: Filter | None = None
    #: The technique's name in traces and framework run names (``"dense"``, ``"multi-hop"``, ``"tools"``);
    #: derived from the class name unless a subclass sets it.
    technique: ClassVar[str] = "base"
    #: Metadata keys this retriever adds to a hit *per query* (provenance such as a hop number, not
    #: properties of the passage). The framework adapters group them with the score under one key, so the
    #: frameworks' de-duplication still sees one passage found by several queries as one document.
    retrieval_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when ``_retrieve_batch`` takes the per-call ``filter`` keyword (set for each subclass).
    supports_filter: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "technique" not in cls.__dict__:
            cls.technique = _technique(cls.__name__)
        hook = cls.__dict__.get("_retrieve_batch")
        if hook is not None:
            cls.supports_filter = "filter" in inspect.signature(hook).parameters

    def __init__(self, k: int) -> None:
        self.k = check_positive_int("k", k)

    @abstractmethod
    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None) -> list[list[Hit]]:
        """Hits for each query, best first. ``vectors`` (n, dim) are precomputed query embeddings or None.

        A subclass that filters declares ``*, filter: Filter | None = None`` too: it receives the
        effective filter of the call (constructor AND call) and searches with
        ``self.filter if filter is None else filter`` (``None`` from the public methods means that
        neither filter is set; a direct call of the hook without it gets the constructor's)."""

    # ----------------------------------------------------------------------------------------- per call
    def _k(self, k: int | None) -> int:
        return self.k if k is None else check_positive_int("k", k)

    def call_options(self) -> tuple[str, ...]:
        """The keyword options :meth:`retrieve` honours per call (the framework adapters accept these)."""
        return ("k", "filter") if self.supports_filter else ("k",)

    def effective_filter(self, filter: Filter | None = None) -> dict[str, Any] | None:
        """The filter one call runs with: the constructor's AND ``filter`` (validated)."""
        if filter is not None and not self.supports_filter:
            msg = (f"{type(self).__name__} does not take a per-call filter, got filter={short(filter)}; "
                   f"the options it takes per call are {list(self.call_options())}.")
            raise InvalidInputError(msg)
        return combine_filters(self.filter, filter)

    def _run_batch(self, queries: list[str], k: int, vectors: np.ndarray | None,
                   filter: Filter | None) -> list[list[Hit]]:
        flt = self.effective_filter(filter)
        if unsatisfiable(flt):  # the constructor's and the call's filters exclude each other
            return [[] for _ in queries]
        if self.supports_filter:
            return self._retrieve_batch(queries, k, vectors, filter=flt)  # type: ignore[call-arg]
        return self._retrieve_batch(queries, k, vectors)

    # ----------------------------------------------------------------------------------------- public
    def retrieve(self, query: str, k: int | None = None, *, filter: Filter | None = None) -> list[Hit]:
        """At most ``k`` hits for ``query`` (``k`` defaults to the constructor's), best first; ``filter``
        narrows this call (AND the constructor's filter)."""
        return self._run_batch([check_query(query)], self._k(k), None, filter)[0]

    def retrieve_with_embedding(
        self, query: str, embedding: Sequence[float] | np.ndarray, k: int | None = None, *,
        filter: Filter | None = None,
    ) -> list[Hit]:
        """Like :meth:`retrieve` but reuses a query embedding computed elsewhere (e.g. LlamaIndex's QueryBundle)."""
        vec = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        return self._run_batch([check_query(query)], self._k(k), vec, filter)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int | None = None, *,
                       filter: Filter | None = None) -> list[list[Hit]]:
        """Hits for many queries at once: one encoder call and batched searches."""
        qs = _batch_queries(queries, "retrieve")
        if not qs:
            return []
        return self._run_batch(qs, self._k(k), None, filter)

    async def aretrieve(self, query: str, k: int | None = None, *, filter: Filter | None = None) -> list[Hit]:
        """Async :meth:`retrieve`; the event loop is never blocked. A retriever with an async hook
        (:class:`~latentrag.retrievers.dense.DenseRetriever`) awaits the store's async client (PgVectorStore,
        MilvusStore) and runs only the query encoding in a worker thread; the others run in a worker thread."""
        return (await self._arun_batch([check_query(query)], self._k(k), filter))[0]

    async def aretrieve_batch(self, queries: Sequence[str], k: int | None = None, *,
                              filter: Filter | None = None) -> list[list[Hit]]:
        """Async :meth:`retrieve_batch` (as :meth:`aretrieve`)."""
        qs = _batch_queries(queries, "aretrieve")
        if not qs:
            return []
        return await self._arun_batch(qs, self._k(k), filter)

    async def _arun_batch(self, queries: list[str], k: int, filter: Filter | None) -> list[list[Hit]]:
        flt = self.effective_filter(filter)
        if unsatisfiable(flt):
            return [[] for _ in queries]
        return await self._aretrieve_batch(queries, k, flt)

    async def _aretrieve_batch(self, queries: list[str], k: int, filter: dict[str, Any] | None) -> list[list[Hit]]:
        """The async hook: ``filter`` is the effective one. The default runs the sync hook in a worker thread."""
        def run() -> list[list[Hit]]:
            if self.supports_filter:
                return self._retrieve_batch(queries, k, None, filter=filter)  # type: ignore[call-arg]
            return self._retrieve_batch(queries, k, None)

        return await asyncio.to_thread(run)

    # ----------------------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """The retriever's attributes without locks (re-created on load); helpers that hold locks (title
        links) travel without theirs too."""
        state = split_thread_bound(self.__dict__)
        return {key: portable(value) for key, value in state.items()}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        restore_thread_bound(self, state)


#: Technique names accepted by :func:`retriever_for` (and ``store.as_retriever``).
TECHNIQUES = ("dense", "hybrid", "multi-hop")


def query_vectors(store: Any, queries: list[str], vectors: np.ndarray | None) -> np.ndarray:
    """The query embeddings for a search of ``store``: ``vectors`` checked against the store's dimension, or
    ``queries`` encoded by the store's encoder; a typed error for an empty store or a count mismatch."""
    from latentrag.errors import StoreError
    from latentrag.stores.base import check_queries, store_is_empty

    if store_is_empty(store):
        msg = "the store is empty; add documents (store.add(...) or `latentrag index`) before retrieving."
        raise StoreError(msg)
    q = store.encoder.encode(queries) if vectors is None else check_queries(vectors, store.dim)
    if len(q) != len(queries):
        msg = f"got {len(q)} query vectors for {len(queries)} queries; give one vector per query."
        raise InvalidInputError(msg)
    return q


def retriever_for(store: Any, technique: str = "dense", **options: Any) -> BaseRetriever:
    """A latentrag retriever of ``technique`` (``"dense"``, ``"hybrid"`` or ``"multi-hop"``) over ``store``; ``options``
    go to its constructor (``k``, ``filter``, ``n_hops``, ...)."""
    name = str(technique).replace("_", "-").lower()
    if name == "dense":
        from latentrag.retrievers.dense import DenseRetriever

        return DenseRetriever(store, **options)
    if name in ("multi-hop", "multihop"):
        from latentrag.retrievers.multihop import MultiHopRetriever

        return MultiHopRetriever(store, **options)
    if name == "hybrid":
        from latentrag.retrievers.hybrid import HybridRetriever

        return HybridRetriever(store, **options)
    msg = f"technique must be one of {list(TECHNIQUES)}, got {short(technique)}."
    raise InvalidInputError(msg)


def check_retriever(retriever: Any, *, foreign: type, framework: str, where: str = "") -> None:
    """Raise :class:`InvalidInputError` unless ``retriever`` is a latentrag retriever; ``foreign`` is the
    framework's own retriever base (``framework`` names it), which an adapter must not wrap."""
    prefix = f"{where}: " if where else ""
    if isinstance(retriever, foreign):
        msg = (f"{prefix}retriever is already a {framework} retriever ({type(retriever).__name__}); use it directly, "
               f"or pass a latentrag retriever (DenseRetriever, MultiHopRetriever, ToolRetriever).")
        raise InvalidInputError(msg)
    if not isinstance(retriever, Retriever):
        msg = (f"{prefix}retriever must be a latentrag retriever (anything with retrieve(query, k) and async "
               f"aretrieve(query, k)), got {type(retriever).__name__} ({short(retriever)}); for example "
               f"DenseRetriever(store) or MultiHopRetriever(store).")
        raise InvalidInputError(msg)


def _batch_queries(queries: Sequence[str], method: str) -> list[str]:
    """The checked queries of a ``<method>_batch`` call (a single str is refused: it is not a list)."""
    if isinstance(queries, str):
        msg = f"{method}_batch() takes a list of queries, got a single str; use {method}() or wrap it in a list."
        raise InvalidInputError(msg)
    return [check_query(q) for q in queries]
