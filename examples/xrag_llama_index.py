"""xRAG with LlamaIndex, offline: a RetrieverQueryEngine whose postprocessor compresses passages to soft tokens.

``LlamaIndexPostprocessor(compressor=XRAGCompressor())`` turns each retrieved node into an
``<xrag:KEY>`` marker; ``XRAGLLM`` (a ``CustomLLM`` on SmolLM2-135M-Instruct plus the shipped
projector) reads the markers in the synthesizer's prompt as soft tokens.

    python examples/xrag_llama_index.py
"""

from __future__ import annotations

from llama_index.core.query_engine import RetrieverQueryEngine

from latentrag import FaissStore
from latentrag.compressors import XRAGCompressor
from latentrag.demo import load_corpus
from latentrag.integrations.llama_index import XRAGLLM, LlamaIndexPostprocessor, LlamaIndexRetriever
from latentrag.retrievers import DenseRetriever


def main() -> None:
    corpus = load_corpus()
    store = FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus])
    for mode in ("xrag", "text"):
        engine = RetrieverQueryEngine.from_args(
            LlamaIndexRetriever(DenseRetriever(store, k=2)),
            llm=XRAGLLM(mode=mode, max_new_tokens=24),
            node_postprocessors=[LlamaIndexPostprocessor(compressor=XRAGCompressor())],
        )
        response = engine.query("Who directed the film about a giant shark?")
        print(f"{mode:<5} sources {[n.node.node_id for n in response.source_nodes]}: {response}")


if __name__ == "__main__":
    main()
