"""LangChain adapters: the standard retriever suite, k handling, ids/metadata/scores, real async,
and the compressor contract (copies, never mutates; custom trace events)."""

from __future__ import annotations

import threading

import pytest
from conftest import gather_counting_loop_ticks

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from latentrag import FaissStore, Hit, default_encoder  # noqa: E402
from latentrag.compressors.base import BaseCompressor  # noqa: E402
from latentrag.integrations.langchain import LangChainCompressor, LangChainRetriever  # noqa: E402
from latentrag.retrievers import DenseRetriever  # noqa: E402

_STORE: list[FaissStore] = []


def _demo_store() -> FaissStore:
    if not _STORE:
        from latentrag.demo import load_corpus

        corpus = load_corpus()
        _STORE.append(FaissStore.from_texts(
            [f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus],
            metadatas=[{"title": d["title"]} for d in corpus], encoder=default_encoder(),
        ))
    return _STORE[0]


def make_retriever(k: int | None = None) -> LangChainRetriever:
    return LangChainRetriever(retriever=DenseRetriever(_demo_store(), k=4), k=k)


class TestLangChainRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return make_retriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "Who directed the shark film?"


class _KeepShort(BaseCompressor):
    """A real (if simple) compressor: keeps passages under ``limit`` characters, shortest first,
    truncating text to 60 characters, so the adapter's copy and merge paths are exercised."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        kept = sorted((h for h in hits if len(h.text) < self.limit), key=lambda h: len(h.text))
        return [h.copy(text=h.text[:60], score=1.0 / (1 + i), metadata={**h.meta, "cut": True})
                for i, h in enumerate(kept)]


def test_k_in_constructor_and_call_keeps_ids_metadata_scores():
    r = make_retriever(k=3)
    docs = r.invoke("Who directed Jaws?")
    assert len(docs) == 3 and docs[0].id == "jaws"
    assert docs[0].metadata["title"] == "Jaws (film)"
    assert isinstance(docs[0].metadata["score"], float)
    assert docs[0].metadata["score"] >= docs[1].metadata["score"]
    assert len(r.invoke("Who directed Jaws?", k=1)) == 1
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        r.invoke("Who directed Jaws?", k=0)


async def test_ainvoke_does_not_block_the_event_loop():
    r = make_retriever(k=2)
    docs, ticks = await gather_counting_loop_ticks([r.ainvoke(q) for q in ["Jaws director", "Curie element",
                                                                           "vaccines"]])
    assert [d[0].id for d in docs][0] == "jaws" and all(len(d) == 2 for d in docs)
    assert ticks > 3  # the loop kept running while retrieval ran in worker threads


def test_batch_is_thread_safe():
    r = make_retriever(k=2)
    qs = ["Jaws director", "Einstein birthplace", "Curie element", "vaccines", "Casablanca"] * 4
    seq = [[d.id for d in r.invoke(q)] for q in qs]
    par = [[d.id for d in ds] for ds in r.batch(qs, config={"max_concurrency": 8})]
    assert par == seq


def test_compressor_copies_and_keeps_ids():
    docs = [Document(id="a", page_content="x" * 100, metadata={"src": "1"}),
            Document(id="b", page_content="short text", metadata={"src": "2"}),
            Document(page_content="y" * 500, metadata={})]
    before = [d.model_copy(deep=True) for d in docs]
    out = LangChainCompressor(compressor=_KeepShort(200)).compress_documents(docs, "q")
    assert [d.id for d in out] == ["b", "a"]
    assert out[0].metadata == {"src": "2", "cut": True, "score": 1.0}
    assert out[1].page_content == "x" * 60
    assert docs == before  # the caller's documents are untouched


async def test_compressor_async_and_custom_event_inside_a_run():
    from langchain_classic.retrievers import ContextualCompressionRetriever

    pipeline = ContextualCompressionRetriever(
        base_compressor=LangChainCompressor(compressor=_KeepShort(10_000)), base_retriever=make_retriever(k=4)
    )
    events = [e async for e in pipeline.astream_events("Who directed Jaws?", version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event" and e["name"] == "latentrag.compress"]
    assert custom and custom[0]["data"]["n_in"] == 4 and custom[0]["data"]["compressor"] == "_KeepShort"
    docs = await pipeline.ainvoke("Who directed Jaws?")
    assert len(docs) == 4 and "jaws" in {d.id for d in docs}


def test_adapter_errors_are_typed():
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        make_retriever().invoke("   ")


def test_concurrent_invoke_from_threads():
    r = make_retriever(k=1)
    out: list[str] = []
    lock = threading.Lock()

    def work():
        ids = r.invoke("Who directed Jaws?")[0].id
        with lock:
            out.append(ids)

    ts = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert out == ["jaws"] * 6


def make_multihop_retriever(k: int | None = None) -> LangChainRetriever:
    from latentrag.retrievers import MultiHopRetriever

    return LangChainRetriever(retriever=MultiHopRetriever(_demo_store(), k=4), k=k)


class TestLangChainMultiHopStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return make_multihop_retriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "Where was the director of Jaws born?"
