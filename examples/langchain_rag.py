"""Retrieval-augmented answering with LangChain over latentrag's embedded faiss store, offline.

Builds a store from the demo corpus shipped in the package, wraps the dense retriever as a
LangChain ``BaseRetriever`` and runs a small LCEL chain: retrieve -> format context -> prompt.
A real app puts a chat model where ``show_prompt`` stands (``| ChatOpenAI()`` or any local model).

    python examples/langchain_rag.py
"""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from latentrag import FaissStore
from latentrag.demo import load_corpus
from latentrag.integrations.langchain import LangChainRetriever
from latentrag.retrievers import DenseRetriever


def main() -> None:
    corpus = load_corpus()
    store = FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus],
                                  metadatas=[{"title": d["title"]} for d in corpus])
    retriever = LangChainRetriever(retriever=DenseRetriever(store), k=3)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context only.\n\nContext:\n{context}"),
        ("human", "{question}"),
    ])

    def format_docs(docs):
        return "\n".join(f"[{d.id}] {d.page_content}" for d in docs)

    def show_prompt(value):
        return value.to_string()

    inputs = {"context": retriever | format_docs, "question": RunnablePassthrough()}
    chain = inputs | prompt | RunnableLambda(show_prompt)
    question = "Who directed the film about a giant shark?"
    docs = retriever.invoke(question)
    print("retrieved:", [(d.id, round(d.metadata["score"], 3)) for d in docs])
    print(chain.invoke(question))


if __name__ == "__main__":
    main()
