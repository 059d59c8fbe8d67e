"""LlamaIndex adapters: retriever and postprocessor inside RetrieverQueryEngine with a mock LLM,
QueryBundle.embedding reuse, real async, instrumentation events, ids/metadata/scores kept."""

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

from latentrag import Hit  # noqa: E402
from latentrag.compressors.base import BaseCompressor  # noqa: E402
from latentrag.integrations.llama_index import LlamaIndexPostprocessor, LlamaIndexRetriever  # noqa: E402
from latentrag.retrievers import DenseRetriever  # noqa: E402


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
    assert LlamaIndexPostprocessor.class_name() == "LatentRagPostprocessor"
    with pytest.raises(ValueError, match="needs the query"):
        pp.postprocess_nodes(nodes)
    assert np.isfinite([n.score for n in out]).all()
