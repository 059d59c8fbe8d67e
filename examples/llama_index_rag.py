"""Retrieval-augmented answering with LlamaIndex over latentrag's embedded faiss store, offline.

The dense retriever becomes a LlamaIndex ``BaseRetriever`` inside a ``RetrieverQueryEngine``.
``MockLLM`` keeps the example offline; a real app passes any LlamaIndex LLM instead.

    python examples/llama_index_rag.py
"""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from latentrag import FaissStore
from latentrag.demo import load_corpus
from latentrag.integrations.llama_index import LlamaIndexRetriever
from latentrag.retrievers import DenseRetriever


def main() -> None:
    corpus = load_corpus()
    store = FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus],
                                  metadatas=[{"title": d["title"]} for d in corpus])
    engine = RetrieverQueryEngine.from_args(LlamaIndexRetriever(DenseRetriever(store, k=3)), llm=MockLLM(max_tokens=16))
    response = engine.query("Which element did Marie Curie discover with her husband?")
    for n in response.source_nodes:
        print(f"{n.score:.3f}  {n.node.node_id:<12} {n.node.metadata['title']}")


if __name__ == "__main__":
    main()
