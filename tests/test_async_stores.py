"""Real async I/O on the server stores (issue 23): ``asearch``/``aget``/``ais_empty`` and
``DenseRetriever.aretrieve`` await psycopg's ``AsyncConnection`` (from an ``AsyncConnectionPool``) and
pymilvus's ``AsyncMilvusClient``, not a worker thread per call, and 50 concurrent calls never block the event
loop for more than a few milliseconds."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from conftest import gather_watching_loop

from latentrag import FaissStore, StoreError
from latentrag.retrievers import DenseRetriever

#: The longest one step of the event loop may take while the calls are in flight (seconds). The criterion is
#: this thread's CPU time per step: a step of the async path prepares one query or decodes one result (about
#: 1 ms). Wall-clock time per step is only a coarse check (a sync call waiting on the network, or Milvus's
#: 200 ms strong read): on 2 cores shared with a training job and the encoder's own threads, the OS preempts a
#: 1 ms step for 60 ms at times. A call that blocked would also finish before the next one starts, which the
#: count of calls in flight at once catches (:func:`_in_flight`).
MAX_STEP_CPU = 0.010
MAX_STEP_WALL = 0.150
N_CALLS = 50
KINDS = ["pgvector", "milvus_server", "milvus_lite", "faiss"]
#: The stores whose async reads await a driver's async client (no worker thread at all).
ASYNC_KINDS = {"pgvector", "milvus_server"}
#: milvus-lite's engine is a gRPC server inside this process: its work holds the GIL, and so the event loop,
#: whichever path the client takes (MilvusStore takes the worker thread there); the loop still turns.
GIL_BOUND = {"milvus_lite"}


@pytest.fixture(params=KINDS)
def server_store(request, encoder, corpus, corpus_vectors):
    texts = [f"{d['title']}: {d['text']}" for d in corpus]
    ids = [d["id"] for d in corpus]
    metas = [{"group": "people" if " was " in d["text"] else "other"} for d in corpus]
    name = f"t_async_{uuid.uuid4().hex[:8]}"
    kind = request.param
    if kind == "pgvector":
        from latentrag.stores import PgVectorStore

        store = PgVectorStore.from_texts(texts, ids=ids, metadatas=metas, vectors=corpus_vectors,
                                         dsn=request.getfixturevalue("pg_uri"), table=name, encoder=encoder,
                                         pool_size=4)
    elif kind.startswith("milvus"):
        from latentrag.stores import MilvusStore

        uri = (request.getfixturevalue("milvus_server_uri") if kind == "milvus_server"
               else str(request.getfixturevalue("milvus_dir") / "async.db"))
        store = MilvusStore.from_texts(texts, ids=ids, metadatas=metas, vectors=corpus_vectors, uri=uri,
                                       collection=name, encoder=encoder)
    else:
        store = FaissStore.from_texts(texts, ids=ids, metadatas=metas, vectors=corpus_vectors, encoder=encoder)
    yield kind, store
    if kind != "faiss":
        store.drop()


def _in_flight(awaitables: list) -> tuple[list[int], list]:
    """The awaitables wrapped to count how many are in flight at once; ``peak[0]`` is the most."""
    peak, now = [0], [0]

    async def tracked(aw):
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        try:
            return await aw
        finally:
            now[0] -= 1

    return peak, [tracked(aw) for aw in awaitables]


def _assert_short_steps(kind: str, wall: float, cpu: float) -> None:
    if kind in GIL_BOUND:
        return
    assert cpu < MAX_STEP_CPU and wall < MAX_STEP_WALL, \
        f"{kind}: one step held the event loop for {wall * 1000:.1f} ms ({cpu * 1000:.1f} ms CPU)"


def _no_threads(monkeypatch) -> None:
    """Fail the test if anything hands work to a worker thread (asyncio.to_thread or the default executor)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a worker thread was used on the async I/O path")

    monkeypatch.setattr(asyncio, "to_thread", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", refuse)


async def test_50_concurrent_asearch_never_block_the_loop(server_store, encoder, monkeypatch):
    kind, store = server_store
    queries = [f"who directed film number {i}?" for i in range(N_CALLS)]
    q = encoder.encode(queries)
    want = [[(h.id, round(h.score, 4)) for h in r] for r in store.search(q, k=5)]
    await store.ais_empty()  # the async pool / client is connected once, before the measured calls
    if kind in ASYNC_KINDS:
        _no_threads(monkeypatch)
    peak, calls = _in_flight([store.asearch(q[i : i + 1], k=5, filter={"group": ["people", "other"]})
                              for i in range(N_CALLS)])
    results, ticks, wall, cpu = await gather_watching_loop(calls)
    assert [[(h.id, round(h.score, 4)) for h in r[0]] for r in results] == want
    _assert_short_steps(kind, wall, cpu)
    assert peak[0] == N_CALLS and ticks >= 3  # all 50 in flight at once (blocking calls: one at a time)
    got = await store.aget(["jaws", "einstein"], with_vectors=True)
    assert [h.id for h in got] == ["jaws", "einstein"]
    np.testing.assert_allclose(got[0].vector, store.vectors(["jaws"])[0], atol=1e-6)
    assert [h.id for h in await store.aget(["jaws", "nope"], missing="skip")] == ["jaws"]
    with pytest.raises(StoreError, match="'nope' is not in"):
        await store.aget(["nope"])
    if kind == "pgvector":
        pool = await store._async_pool()
        assert pool.get_stats()["pool_size"] <= store.pool_size == 4  # 50 callers, at most 4 connections


async def test_50_concurrent_dense_aretrieve(server_store, encoder, monkeypatch):
    """DenseRetriever.aretrieve over each backend: the answers of the sync path, and the loop keeps turning
    (the encoder runs in worker threads; the search awaits the async client)."""
    kind, store = server_store
    retriever = DenseRetriever(store, k=5)
    queries = [f"a film about a shark, part {i}" if i % 2 else f"a physicist born in city {i}" for i in range(N_CALLS)]
    want = [[h.id for h in r] for r in retriever.retrieve_batch(queries)]
    await store.ais_empty()
    peak, calls = _in_flight([retriever.aretrieve(qu) for qu in queries])
    results, ticks, wall, cpu = await gather_watching_loop(calls)
    assert [[h.id for h in r] for r in results] == want
    _assert_short_steps(kind, wall, cpu)
    assert peak[0] == N_CALLS and ticks >= 3
    filtered = await retriever.aretrieve("Who directed Jaws?", filter={"group": "other"})
    assert filtered and all(h.meta["group"] == "other" for h in filtered)


async def test_async_reads_after_close_and_on_a_second_loop(pg_uri, encoder, corpus_vectors):
    """A closed store refuses async reads with a clear error; aclose() closes this loop's pool."""
    from latentrag.stores import PgVectorStore

    store = PgVectorStore.from_texts(["a", "b"], ids=["a", "b"], vectors=corpus_vectors[:2], dsn=pg_uri,
                                     table=f"t_async_{uuid.uuid4().hex[:8]}", encoder=encoder)
    assert [h.id for h in (await store.asearch(corpus_vectors[:1], k=1))[0]] == ["a"]
    name = store.table
    await store.aclose()
    with pytest.raises(StoreError, match="is closed"):
        await store.asearch(corpus_vectors[:1], k=1)
    PgVectorStore(pg_uri, name, create=False).drop()


def test_each_event_loop_gets_its_own_pool_and_closed_loops_are_dropped(pg_uri, encoder, corpus_vectors):
    """asyncio.run twice: each loop reads through a pool of its own; the first loop's entry is dropped once
    that loop is closed, so repeated asyncio.run calls do not pile up pools."""
    from latentrag.stores import PgVectorStore

    store = PgVectorStore.from_texts(["a", "b"], ids=["a", "b"], vectors=corpus_vectors[:2], dsn=pg_uri,
                                     table=f"t_async_{uuid.uuid4().hex[:8]}", encoder=encoder)
    try:
        for _ in range(3):
            hits = asyncio.run(store.asearch(corpus_vectors[1:2], k=1))
            assert hits[0][0].id == "b"
        assert len(store._apools) == 1  # only the last loop's (closed) entry, pruned at the next use
        assert all(loop.is_closed() for loop in store._apools)
    finally:
        store.drop()
