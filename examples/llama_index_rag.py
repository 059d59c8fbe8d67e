"""Retrieval-augmented answering with LlamaIndex over latentrag's embedded faiss store, offline.

LlamaIndex nodes go into the store (``FaissStore.from_nodes``, ids and metadata kept); the dense retriever
becomes a LlamaIndex ``BaseRetriever`` (``LlamaIndexRetriever.from_defaults``, with LlamaIndex's
``similarity_top_k``) inside a ``RetrieverQueryEngine``.
``MockLLM`` keeps the example offline; a real app passes any LlamaIndex LLM instead.

    python examples/llama_index_rag.py
"""

from __future__ import annotations

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode

from latentrag import FaissStore
from latentrag.demo import load_corpus
from latentrag.integrations.llama_index import LlamaIndexRetriever


def main() -> None:
    corpus = load_corpus()
    nodes = [TextNode(id_=d["id"], text=f"{d['title']}: {d['text']}", metadata={"title": d["title"]}) for d in corpus]
    store = FaissStore.from_nodes(nodes)
    retriever = LlamaIndexRetriever.from_defaults(store=store, similarity_top_k=3)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=16))
    response = engine.query("Which element did Marie Curie discover with her husband?")
    for n in response.source_nodes:
        print(f"{n.score:.3f}  {n.node.node_id:<12} {n.node.metadata['title']}")


if __name__ == "__main__":
    main()
