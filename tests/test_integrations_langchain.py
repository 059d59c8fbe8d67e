"""LangChain adapters: the standard retriever suite, k handling, ids/metadata/scores, real async,
per-call options (filter), the retrieval group and LangChain's de-duplication (MultiQueryRetriever,
EnsembleRetriever), names in traces, construction checks, from_documents/as_retriever, the compressor
contract (copies, never mutates; custom trace events) and the tool-selection middleware's reports."""

from __future__ import annotations

import threading

import pytest
from conftest import gather_counting_loop_ticks

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from latentrag import FaissStore, Hit, InvalidInputError, default_encoder  # noqa: E402
from latentrag.compressors.base import BaseCompressor  # noqa: E402
from latentrag.integrations.langchain import (  # noqa: E402
    LangChainCompressor,
    LangChainRetriever,
    RetrievalInfo,
    from_documents,
)
from latentrag.retrievers import DenseRetriever, MultiHopRetriever  # noqa: E402

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
    info = docs[0].metadata["retrieval"]
    assert isinstance(info, RetrievalInfo) and isinstance(info["score"], float) and info["retriever"] == "dense"
    assert info["score"] >= docs[1].metadata["retrieval"]["score"]
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


# ---------------------------------------------------------------------------------------------- per-call options
def test_filter_per_call_is_honoured_and_anded_with_the_retrievers_own():
    r = make_retriever(k=3)
    docs = r.invoke("Who directed Jaws?", filter={"title": "Casablanca (film)"})
    assert [d.metadata["title"] for d in docs] == ["Casablanca (film)"]
    films = ["Jaws (film)", "Casablanca (film)"]
    scoped = LangChainRetriever(retriever=DenseRetriever(_demo_store(), k=4, filter={"title": films}))
    assert {d.id for d in scoped.invoke("Who directed Jaws?")} <= {"jaws", "casablanca"}
    assert [d.id for d in scoped.invoke("Who directed Jaws?", filter={"title": "Jaws (film)"})] == ["jaws"]
    # a per-call filter narrows, never widens: outside the retriever's own filter nothing matches
    assert scoped.invoke("Who directed Jaws?", filter={"title": "Albert Einstein"}) == []


async def test_filter_per_call_async_and_search_kwargs_defaults():
    r = LangChainRetriever(retriever=DenseRetriever(_demo_store()), search_kwargs={"k": 2,
                                                                                  "filter": {"title": "Jaws (film)"}})
    docs = await r.ainvoke("Who directed Jaws?")
    assert [d.id for d in docs] == ["jaws"]
    docs = await r.ainvoke("Who directed Jaws?", filter=None)  # the call's value wins over search_kwargs
    assert len(docs) == 2


def test_unknown_options_are_refused_naming_the_valid_ones():
    r = make_retriever(k=2)
    with pytest.raises(InvalidInputError, match=r"does not take the option\(s\) \['foo'\].*\['k', 'filter'\]"):
        r.invoke("Who directed Jaws?", foo=1)
    with pytest.raises(InvalidInputError, match="filter must be a dict"):
        r.invoke("Who directed Jaws?", filter="Jaws")
    assert len(r.invoke("Who directed Jaws?", verbose=False)) == 2  # LangChain's own keyword passes
    with pytest.raises(InvalidInputError, match=r"search_kwargs: DenseRetriever does not take .*\['n_hops'\]"):
        LangChainRetriever(retriever=DenseRetriever(_demo_store()), search_kwargs={"n_hops": 2})


def test_multihop_filter_per_call_or_a_typed_refusal():
    r = make_multihop_retriever(k=3)
    assert MultiHopRetriever.supports_filter
    docs = r.invoke("Where was the director of Jaws born?", filter={"title": "Jaws (film)"})
    assert [d.id for d in docs] == ["jaws"]


def test_construction_is_checked():
    store = _demo_store()
    with pytest.raises(InvalidInputError, match="retriever must be a latentrag retriever.*got str"):
        LangChainRetriever(retriever="x")
    with pytest.raises(InvalidInputError, match="k must be a positive integer, got 0"):
        LangChainRetriever(retriever=DenseRetriever(store), k=0)
    with pytest.raises(InvalidInputError, match="already a LangChain retriever"):
        LangChainRetriever(retriever=make_retriever())
    with pytest.raises(InvalidInputError, match="compressor must be a latentrag compressor"):
        LangChainCompressor(compressor=DenseRetriever(store))
    r = LangChainRetriever(DenseRetriever(store), k=2)  # positional, like LlamaIndexRetriever
    assert repr(r).startswith("LangChainRetriever(DenseRetriever(k=4") and "k=2" in repr(r)


# ---------------------------------------------------------------------------------------------- de-duplication
_QUERIES = "Who directed Jaws?\nWho made the shark film Jaws?\nJaws movie director"


def _multi_query(base: LangChainRetriever):
    from langchain_classic.retrievers import MultiQueryRetriever
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    return MultiQueryRetriever.from_llm(retriever=base, llm=FakeListChatModel(responses=[_QUERIES] * 4))


@pytest.mark.parametrize("make", [make_retriever, make_multihop_retriever], ids=["dense", "multi-hop"])
def test_multi_query_retriever_returns_each_passage_once(make):
    base = make(k=3)
    docs = _multi_query(base).invoke("Who directed Jaws?")
    ids = [d.id for d in docs]
    assert ids and len(ids) == len(set(ids)) and "jaws" in ids
    assert all(isinstance(d.metadata["retrieval"]["score"], float) for d in docs)  # scores stay visible
    # the flat layout shows why: each query's copy carries its own score, so LangChain keeps all of them
    flat = LangChainRetriever(retriever=base.retriever, k=3, retrieval_key=None)
    flat_ids = [d.id for d in _multi_query(flat).invoke("Who directed Jaws?")]
    assert len(flat_ids) > len(set(flat_ids))


def test_ensemble_retriever_fuses_dense_and_multihop():
    from langchain_classic.retrievers import EnsembleRetriever

    ensemble = EnsembleRetriever(retrievers=[make_retriever(k=3), make_multihop_retriever(k=3)], weights=[0.5, 0.5])
    docs = ensemble.invoke("Where was the director of Jaws born?")
    ids = [d.id for d in docs]
    assert len(ids) == len(set(ids)) and "jaws" in ids
    assert {d.metadata["retrieval"]["retriever"] for d in docs} <= {"dense", "multi-hop"}


# ---------------------------------------------------------------------------------------------- names
async def test_traces_and_events_name_the_technique():
    r = make_multihop_retriever(k=2)
    assert r.get_name() == "MultiHopRetriever" and r.technique == "multi-hop"
    params = r._get_ls_params()
    assert params["ls_retriever_name"] == "multi-hop" and params["ls_vector_store_provider"] == "faiss"
    assert params["ls_embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert make_retriever()._get_ls_params()["ls_retriever_name"] == "dense"
    events = [e async for e in r.astream_events("Who directed Jaws?", version="v2")]
    start = next(e for e in events if e["event"] == "on_retriever_start")
    assert start["name"] == "MultiHopRetriever" and start["metadata"]["ls_retriever_name"] == "multi-hop"
    assert "MultiHopRetriever(k=4" in repr(r)


def test_cross_encoder_names_cannot_be_confused():
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker as ClassicReranker
    from langchain_classic.retrievers.document_compressors.cross_encoder import BaseCrossEncoder

    from latentrag.compressors import CrossEncoderReranker
    from latentrag.integrations.langchain import LatentRagCrossEncoderReranker

    assert LatentRagCrossEncoderReranker is CrossEncoderReranker

    class _Model(BaseCrossEncoder):
        def score(self, text_pairs):
            return [0.0 for _ in text_pairs]

    with pytest.raises(InvalidInputError, match="already a LangChain .*compressor.*LatentRagCrossEncoderReranker"):
        LangChainCompressor(compressor=ClassicReranker(model=_Model()))


# ---------------------------------------------------------------------------------------------- constructors
def test_from_documents_keeps_ids_and_metadata(encoder):
    docs = [Document(id="a", page_content="Paris is the capital of France.", metadata={"lang": "en"}),
            Document(page_content="Rome is the capital of Italy.", metadata={"lang": "it"})]
    store = FaissStore.from_documents(docs, encoder=encoder)
    assert len(store) == 2 and "a" in store and store.get(["a"])[0].metadata == {"lang": "en"}
    # documents that came out of a retriever go back in without their retrieval group
    retrieved = LangChainRetriever(retriever=DenseRetriever(store, k=2)).invoke("Italy")
    again = from_documents(retrieved, encoder=encoder)
    assert sorted(h.metadata["lang"] for h in again.get(again.ids())) == ["en", "it"]
    assert all("retrieval" not in h.metadata for h in again.get(again.ids()))
    with pytest.raises(InvalidInputError, match=r"documents\[0\] must be a langchain_core Document"):
        FaissStore.from_documents(["just text"], encoder=encoder)


def test_as_retriever_shortcut(store):
    r = store.as_retriever(framework="langchain", search_kwargs={"k": 2, "filter": {"group": "other"}})
    assert isinstance(r, LangChainRetriever) and r.k == 2
    docs = r.invoke("Who directed Jaws?")
    assert len(docs) == 2 and all(d.metadata["group"] == "other" for d in docs)
    mh = store.as_retriever("multi-hop", framework="langchain", n_hops=2, k=3)
    assert mh.technique == "multi-hop" and len(mh.invoke("Where was the director of Jaws born?")) == 3
    assert isinstance(store.as_retriever(k=2), DenseRetriever)
    hy = store.as_retriever("hybrid", framework="langchain", search_kwargs={"k": 2, "filter": {"group": "other"}})
    docs = hy.invoke("Who directed Jaws?")  # dense + BM25, per-query scores grouped under "retrieval"
    assert hy.technique == "hybrid" and len(docs) == 2 and all(d.metadata["group"] == "other" for d in docs)
    assert {"score", "dense_score", "lexical_score", "via"} <= set(docs[0].metadata["retrieval"])
    with pytest.raises(InvalidInputError, match="technique must be one of"):
        store.as_retriever("sparse")


# ---------------------------------------------------------------------------------------------- compressor layout
def test_compressor_puts_the_new_score_in_the_retrieval_group():
    docs = make_retriever(k=3).invoke("Who directed Jaws?")
    out = LangChainCompressor(compressor=_KeepShort(10_000)).compress_documents(docs, "Who directed Jaws?")
    assert out[0].metadata["retrieval"]["score"] == 1.0 and "score" not in out[0].metadata
    assert out[0].metadata["retrieval"]["retriever"] == "dense" and out[0].metadata["cut"] is True
    assert docs[0].metadata["retrieval"]["score"] != 1.0  # the input documents are untouched


# ---------------------------------------------------------------------------------------------- tool middleware
def _tool_retriever(encoder, keep_turns: int = 0):
    from latentrag.retrievers.tools import ToolRetriever

    tools = [{"name": "get_weather", "description": "Current weather conditions for a city.", "parameters": {}},
             {"name": "convert_currency", "description": "Convert an amount between two currencies.",
              "parameters": {}},
             {"name": "send_email", "description": "Send an e-mail message to a recipient.", "parameters": {}},
             {"name": "play_music", "description": "Play a song or playlist on the speaker.", "parameters": {}}]
    return ToolRetriever.from_tools(tools, examples=[("Do I need an umbrella in Oslo?", ["get_weather"])],
                                    encoder=encoder, k=1, keep_turns=keep_turns, refiner=False)


async def test_middleware_reports_the_tools_it_offered(encoder):
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import StructuredTool

    from latentrag.integrations.langchain import ToolSelectionMiddleware

    class _Model(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    def noop() -> str:
        return "ok"

    retriever = _tool_retriever(encoder)
    tools = [StructuredTool.from_function(noop, name=s.name, description=s.description) for s in retriever.specs()]
    mw = ToolSelectionMiddleware(retriever, max_tools=1, keep_turns=1)
    assert repr(mw).startswith("ToolSelectionMiddleware(ToolRetriever(tools=4") and "keep_turns=1" in repr(mw)
    agent = create_agent(_Model(messages=iter([AIMessage(content="done")] * 4)), tools=tools, middleware=[mw])
    messages = [{"role": "user", "content": "Do I need an umbrella in Oslo right now?"},
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "And how many euros is 20 dollars?"}]
    result = agent.invoke({"messages": messages})
    assert result["offered_tools"] == ["convert_currency", "get_weather"]  # this turn's tool, then the last turn's
    events = [e async for e in agent.astream_events({"messages": messages}, version="v2")
              if e["event"] == "on_custom_event" and e["name"] == "latentrag.tools_offered"]
    assert events and events[0]["data"]["offered"] == ["convert_currency", "get_weather"]
    assert events[0]["data"]["n_available"] == 4 and events[0]["data"]["followed_turns"] == [
        "Do I need an umbrella in Oslo right now?"]
    why = events[0]["data"]["scores"]  # why each was offered: its score and calibrated p_needed
    assert set(why) == {"convert_currency", "get_weather"} and all(0.0 <= w["p_needed"] <= 1.0 for w in why.values())
    assert why["convert_currency"]["score"] > 0
    with pytest.raises(InvalidInputError, match="retriever must be a latentrag ToolRetriever"):
        ToolSelectionMiddleware(DenseRetriever(_demo_store()).store)
