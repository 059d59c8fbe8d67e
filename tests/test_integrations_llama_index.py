"""LlamaIndex adapters: retriever and postprocessor inside RetrieverQueryEngine with a mock LLM,
QueryBundle.embedding reuse, real async, instrumentation events, ids/metadata/scores kept, LlamaIndex
conventions (similarity_top_k, MetadataFilters, from_defaults, from_nodes), construction checks,
class_name/to_json, and the tool retriever following recent turns."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gather_counting_loop_ticks

pytest.importorskip("llama_index.core")

from llama_index.core import Settings  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from latentrag import FaissStore, Hit, InvalidInputError  # noqa: E402
from latentrag.compressors.base import BaseCompressor  # noqa: E402
from latentrag.integrations.llama_index import LlamaIndexPostprocessor, LlamaIndexRetriever  # noqa: E402
from latentrag.retrievers import DenseRetriever, MultiHopRetriever  # noqa: E402


class _TopTwoReversed(BaseCompressor):
    """Keeps the two best hits, reverses them and stamps metadata (exercises merge and copy paths)."""

    top_n = 2

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        best = sorted(hits, key=lambda h: -h.score)[:2][::-1]
        return [h.copy(score=float(i), metadata={**h.meta, "stage": "rev"}) for i, h in enumerate(best)]


class _Collect(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event, **kwargs):
        self.events.append(type(event).__name__)


def test_query_engine_with_mock_llm(store):
    handler = _Collect()
    get_dispatcher().add_event_handler(handler)
    engine = RetrieverQueryEngine.from_args(
        LlamaIndexRetriever(DenseRetriever(store, k=4)),
        llm=MockLLM(max_tokens=8),
        node_postprocessors=[LlamaIndexPostprocessor(compressor=_TopTwoReversed())],
    )
    resp = engine.query("Who directed Jaws?")
    ids = [n.node.node_id for n in resp.source_nodes]
    assert len(ids) == 2 and ids[1] == "jaws"
    assert resp.source_nodes[1].node.metadata["stage"] == "rev"
    assert resp.source_nodes[1].node.metadata["title"] == "Jaws (film)"
    assert resp.source_nodes[1].score == 1.0
    assert {"ReRankStartEvent", "ReRankEndEvent", "RetrievalStartEvent"} <= set(handler.events)
    assert Settings is not None


def test_retriever_reuses_query_bundle_embedding(store, encoder):
    r = LlamaIndexRetriever(DenseRetriever(store, k=2))
    emb = encoder.encode(["Where was Einstein born?"])[0]
    # the text says one thing, the embedding another: the embedding must win
    nodes = r.retrieve(QueryBundle(query_str="Who directed Jaws?", embedding=emb.tolist()))
    assert nodes[0].node.node_id == "einstein"
    assert isinstance(nodes[0].score, float)


async def test_aretrieve_does_not_block_the_loop(store):
    r = LlamaIndexRetriever(DenseRetriever(store, k=3))
    results, ticks = await gather_counting_loop_ticks([r.aretrieve(q) for q in ["Jaws", "Einstein", "Curie",
                                                                               "vaccines"]])
    assert ticks > 3 and all(len(x) == 3 for x in results)


async def test_postprocessor_does_not_mutate_nodes():
    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=f"text {i}", metadata={"i": i}), score=float(i))
             for i in range(4)]
    pp = LlamaIndexPostprocessor(compressor=_TopTwoReversed())
    out = await pp.apostprocess_nodes(nodes, query_str="anything")
    assert [n.node.node_id for n in out] == ["n2", "n3"]
    assert out[0].node.metadata == {"i": 2, "stage": "rev"}
    assert nodes[2].node.metadata == {"i": 2}  # the caller's node is untouched
    assert LlamaIndexPostprocessor.class_name() == "LlamaIndexPostprocessor"
    with pytest.raises(ValueError, match="needs the query"):
        pp.postprocess_nodes(nodes)
    assert np.isfinite([n.score for n in out]).all()


# ---------------------------------------------------------------------------------------------- conventions
def test_similarity_top_k_filters_and_from_defaults(store):
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    r = LlamaIndexRetriever(DenseRetriever(store, k=4), similarity_top_k=2)
    assert r.similarity_top_k == 2 and len(r.retrieve("Who directed Jaws?")) == 2
    filters = MetadataFilters(filters=[MetadataFilter(key="group", value="other"),
                                       MetadataFilter(key="title", value=["Jaws (film)", "Albert Einstein"],
                                                      operator=FilterOperator.IN)])
    r = LlamaIndexRetriever.from_defaults(store=store, similarity_top_k=3, filters=filters)
    assert [n.node.node_id for n in r.retrieve("Who directed Jaws?")] == ["jaws"]
    assert "filters={'group': 'other', 'title': ['Jaws (film)', 'Albert Einstein']}" in repr(r)
    r = store.as_retriever("multi-hop", framework="llama_index", similarity_top_k=3)
    assert isinstance(r.retriever, MultiHopRetriever) and len(r.retrieve("Where was the director of Jaws born?")) == 3
    with pytest.raises(InvalidInputError, match="operator"):
        LlamaIndexRetriever(DenseRetriever(store), filters=MetadataFilters(filters=[
            MetadataFilter(key="year", value=2000, operator=FilterOperator.GT)]))
    with pytest.raises(InvalidInputError, match="disagree"):
        LlamaIndexRetriever(DenseRetriever(store), k=2, similarity_top_k=3)


def test_construction_is_checked(store):
    with pytest.raises(InvalidInputError, match="retriever must be a latentrag retriever.*got str"):
        LlamaIndexRetriever("x")
    with pytest.raises(InvalidInputError, match="k must be a positive integer, got 0"):
        LlamaIndexRetriever(DenseRetriever(store), k=0)
    with pytest.raises(InvalidInputError, match="compressor must be a latentrag compressor"):
        LlamaIndexPostprocessor(compressor="rerank")
    with pytest.raises(InvalidInputError, match="already a LlamaIndex node postprocessor"):
        LlamaIndexPostprocessor(compressor=LlamaIndexPostprocessor(compressor=_TopTwoReversed()))
    if not MultiHopRetriever.supports_filter:
        with pytest.raises(InvalidInputError, match="does not take a filter"):
            LlamaIndexRetriever(MultiHopRetriever(store), filters={"group": "other"})


def test_per_query_metadata_stays_out_of_the_prompt(store):
    from llama_index.core.schema import MetadataMode

    class _Tagged(DenseRetriever):
        retrieval_keys = frozenset({"hop"})

        def _retrieve_batch(self, queries, k, vectors, *, filter=None):
            out = super()._retrieve_batch(queries, k, vectors, filter=filter)
            return [[h.copy(metadata={**h.meta, "hop": 1}) for h in hits] for hits in out]

    node = LlamaIndexRetriever(_Tagged(store, k=1)).retrieve("Who directed Jaws?")[0].node
    assert node.metadata["hop"] == 1 and "hop" not in node.get_content(MetadataMode.LLM)
    assert "Jaws (film)" in node.get_content(MetadataMode.LLM)


def test_from_nodes_keeps_ids_and_metadata(encoder):
    from llama_index.core import Document as LlamaDocument

    nodes = [TextNode(id_="paris", text="Paris is the capital of France.", metadata={"lang": "en"}),
             NodeWithScore(node=TextNode(id_="rome", text="Rome is the capital of Italy.", metadata={"lang": "it"})),
             LlamaDocument(doc_id="berlin", text="Berlin is the capital of Germany.")]
    store = FaissStore.from_nodes(nodes, encoder=encoder)
    assert sorted(store.ids()) == ["berlin", "paris", "rome"]
    assert store.get(["rome"])[0].metadata == {"lang": "it"} and store.get(["rome"])[0].text.startswith("Rome")
    emb = encoder.encode(["Oslo is the capital of Norway."])[0].tolist()
    store = FaissStore.from_nodes([TextNode(id_="oslo", text="Oslo is the capital of Norway.", embedding=emb)],
                                  encoder=encoder, use_embeddings=True)
    assert np.allclose(store.vectors(["oslo"])[0], emb, atol=1e-6)
    with pytest.raises(InvalidInputError, match="have no embedding"):
        FaissStore.from_nodes(nodes, encoder=encoder, use_embeddings=True)
    with pytest.raises(InvalidInputError, match=r"nodes\[0\] must be a LlamaIndex node"):
        FaissStore.from_nodes(["text"], encoder=encoder)


def test_class_name_and_to_json_per_class():
    import json

    from latentrag.compressors import TokenBudgetCompressor

    class MyPostprocessor(LlamaIndexPostprocessor):
        pass

    pp = LlamaIndexPostprocessor.from_defaults(TokenBudgetCompressor(budget_tokens=20, scorer="lexical"))
    data = json.loads(pp.to_json())
    assert data["class_name"] == "LlamaIndexPostprocessor"
    assert data["compressor"]["kind"] == "latentrag.TokenBudgetCompressor"
    assert MyPostprocessor.class_name() == "MyPostprocessor"
    assert repr(pp).startswith("LlamaIndexPostprocessor(")
    with pytest.raises(InvalidInputError, match="cannot rebuild the compressor"):
        LlamaIndexPostprocessor.from_dict(data)


# ---------------------------------------------------------------------------------------------- tools
def _tool_retriever(encoder, keep_turns: int = 1):
    from llama_index.core.tools import FunctionTool

    from latentrag.retrievers.tools import ToolRetriever

    def weather(city: str) -> str:
        return "sunny"

    def currency(amount: float) -> str:
        return "1.0"

    def email(to: str) -> str:
        return "sent"

    tools = [FunctionTool.from_defaults(fn=weather, name="get_weather", description="Current weather for a city."),
             FunctionTool.from_defaults(fn=currency, name="convert_currency",
                                        description="Convert an amount between two currencies."),
             FunctionTool.from_defaults(fn=email, name="send_email", description="Send an e-mail to a recipient.")]
    return ToolRetriever.from_tools(tools, encoder=encoder, k=1, keep_turns=keep_turns, refiner=False)


async def test_tool_retriever_follows_recent_turns(encoder):
    from latentrag.integrations.llama_index import LlamaIndexToolRetriever

    tr = _tool_retriever(encoder)
    oret = LlamaIndexToolRetriever(tr, k=1)
    names = lambda tools: [t.metadata.name for t in tools]  # noqa: E731
    assert names(oret.retrieve("Do I need an umbrella in Oslo right now?")) == ["get_weather"]
    assert names(oret.retrieve("get_weather")) == ["get_weather"]  # the agent's look-up by name: not a turn
    assert names(await oret.aretrieve("And how many euros is 20 dollars?")) == ["convert_currency", "get_weather"]
    assert "keep_turns=None" in repr(oret) and repr(oret).startswith("LlamaIndexToolRetriever(ToolRetriever(")
    oret.reset()
    assert names(oret.retrieve("And how many euros is 20 dollars?")) == ["convert_currency"]
    assert LlamaIndexToolRetriever(tr, k=1, keep_turns=0).retrieve("Do I need an umbrella in Oslo?") is not None


async def test_tool_retriever_reads_turns_from_the_agents_memory(encoder):
    from llama_index.core.llms import ChatMessage
    from llama_index.core.memory import ChatMemoryBuffer

    from latentrag.integrations.llama_index import LlamaIndexToolRetriever

    memory = ChatMemoryBuffer.from_defaults()
    for role, text in [("user", "Do I need an umbrella in Oslo right now?"), ("assistant", "Yes, bring one."),
                       ("user", "And how many euros is 20 dollars?")]:
        memory.put(ChatMessage(role=role, content=text))
    oret = LlamaIndexToolRetriever(_tool_retriever(encoder), k=1, memory=memory)
    got = await oret.aretrieve("And how many euros is 20 dollars?")
    assert [t.metadata.name for t in got] == ["convert_currency", "get_weather"]
    with pytest.raises(InvalidInputError, match="memory must be a LlamaIndex chat memory"):
        LlamaIndexToolRetriever(_tool_retriever(encoder), memory=[])
