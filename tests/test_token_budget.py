"""TokenBudgetCompressor: query-aware sentence selection under a tiktoken budget, document order kept."""

from __future__ import annotations

import pytest

from latentrag import Hit, InvalidInputError
from latentrag.compressors import TokenBudgetCompressor
from latentrag.compressors.token_budget import split_sentences
from latentrag.tokens import count_tokens

HITS = [
    Hit("a", "Jaws is a 1975 American thriller film. It was directed by Steven Spielberg. The film grossed $470 "
             "million worldwide. Its score was composed by John Williams.", 0.9, {"source": "wiki"}),
    Hit("b", "Honey bees live in colonies. A colony has one queen. Bees make honey from nectar.", 0.5),
    Hit("c", "Spielberg was born in Cincinnati, Ohio. He grew up in Arizona and California.", 0.4),
]


@pytest.mark.parametrize("scorer", ["embedding", "lexical"])
def test_keeps_answer_sentences_within_budget_in_document_order(scorer):
    comp = TokenBudgetCompressor(budget_tokens=22, scorer=scorer)
    out = comp.compress("Where was the director Spielberg born?", HITS)
    total = sum(count_tokens(h.text) for h in out)
    assert total <= 22 + len(out)  # sentences joined by one space
    joined = " ".join(h.text for h in out)
    assert "born in Cincinnati" in joined and "Honey bees" not in joined
    assert [h.id for h in out] == sorted((h.id for h in out), key="abc".index)  # hit order kept
    for h in out:
        assert h.meta["kept_tokens"] <= h.meta["original_tokens"]
        assert 0 < h.meta["kept_ratio"] <= 1
    assert HITS[0].text.startswith("Jaws is")  # callers' hits are not mutated


def test_ratio_budget_and_metadata_kept():
    out = TokenBudgetCompressor(ratio=0.5).compress("Who composed the music of Jaws?", HITS)
    before = sum(count_tokens(h.text) for h in HITS)
    assert sum(h.meta["kept_tokens"] for h in out) <= 0.5 * before + len(out)
    a = next(h for h in out if h.id == "a")
    assert "John Williams" in a.text and a.meta["source"] == "wiki" and a.score == 0.9
    full = TokenBudgetCompressor(ratio=1.0, scorer="lexical").compress("x", HITS)
    assert [h.meta["kept_ratio"] for h in full] == [1.0, 1.0, 1.0]


def test_bad_input_and_empty():
    with pytest.raises(InvalidInputError, match="exactly one of budget_tokens and ratio"):
        TokenBudgetCompressor()
    with pytest.raises(InvalidInputError, match=r"ratio must be a number in \(0, 1\], got 1.5"):
        TokenBudgetCompressor(ratio=1.5)
    with pytest.raises(InvalidInputError, match="scorer must be one of"):
        TokenBudgetCompressor(budget_tokens=10, scorer="bm25")
    assert TokenBudgetCompressor(budget_tokens=10).compress("q", []) == []
    assert split_sentences('It cost $3.5 million. "Then" it grew! 1990 came.\nNew line') == [
        "It cost $3.5 million.", '"Then" it grew!', "1990 came.", "New line"]


def test_through_both_framework_adapters():
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from latentrag.integrations.langchain import LangChainCompressor
    from latentrag.integrations.llama_index import LlamaIndexPostprocessor

    comp = TokenBudgetCompressor(budget_tokens=15, scorer="lexical")
    docs = [Document(id=h.id, page_content=h.text, metadata={"k": 1}) for h in HITS]
    out = LangChainCompressor(compressor=comp).compress_documents(docs, "Where was Spielberg born?")
    assert out and all(d.metadata["kept_tokens"] <= 15 for d in out) and out[0].metadata["k"] == 1
    nodes = [NodeWithScore(node=TextNode(id_=h.id, text=h.text), score=h.score) for h in HITS]
    post = LlamaIndexPostprocessor(compressor=comp)
    got = post.postprocess_nodes(nodes, QueryBundle("Where was Spielberg born?"))
    assert got and "Cincinnati" in " ".join(n.node.get_content() for n in got)
    assert nodes[2].node.get_content().startswith("Spielberg was born")  # originals untouched
