"""Multi-hop retrieval (TreeHop) as a LangChain retriever, offline, with the hop tree printed.

The question needs two passages: one says where Einstein was born, the other which river runs through
that city. Dense retrieval finds the first; the hop network turns (question, first passage) into the
next query and finds the second, with no LLM call between hops.

    python examples/multihop_langchain.py
"""

from __future__ import annotations

from latentrag import FaissStore
from latentrag.demo import load_corpus
from latentrag.integrations.langchain import LangChainRetriever
from latentrag.retrievers import DenseRetriever, MultiHopRetriever


def main() -> None:
    corpus = load_corpus()
    store = FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus])
    question = "What river runs through the city where Albert Einstein was born?"
    multihop = MultiHopRetriever(store, k=3)
    retriever = LangChainRetriever(retriever=multihop)
    for doc in retriever.invoke(question):
        # how this passage was found (score, hop, parent) is this retrieval's, under metadata["retrieval"]
        info = {**doc.metadata, **doc.metadata["retrieval"]}
        print(f"hop {info['hop']}  parent={info['parent_id']!s:<9} {doc.id:<10} {doc.page_content[:70]}")
    print("dense only:", [h.id for h in DenseRetriever(store, k=3).retrieve(question)])
    print(multihop.trace(question))


if __name__ == "__main__":
    main()
