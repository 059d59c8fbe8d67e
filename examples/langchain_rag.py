"""Retrieval-augmented answering with LangChain over latentrag's embedded faiss store, offline.

Builds a store from LangChain ``Document``s (the demo corpus shipped in the package), takes a LangChain
retriever from it (``store.as_retriever(framework="langchain")``) and runs a small LCEL chain:
retrieve -> format context -> prompt. A per-call ``filter`` narrows one retrieval to matching metadata.
A real app puts a chat model where ``show_prompt`` stands (``| ChatOpenAI()`` or any local model).

    python examples/langchain_rag.py
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from latentrag import FaissStore
from latentrag.demo import load_corpus


def main() -> None:
    corpus = load_corpus()
    docs = [Document(id=d["id"], page_content=f"{d['title']}: {d['text']}", metadata={"title": d["title"]})
            for d in corpus]
    store = FaissStore.from_documents(docs)  # ids and metadata kept
    retriever = store.as_retriever("dense", framework="langchain", search_kwargs={"k": 3})
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
    found = retriever.invoke(question)
    print("retrieved:", [(d.id, round(d.metadata["retrieval"]["score"], 3)) for d in found])
    only = retriever.invoke("Who directed it?", filter={"title": ["Jaws (film)", "Casablanca (film)"]}, k=2)
    print("filtered:", [d.id for d in only])
    print(chain.invoke(question))


if __name__ == "__main__":
    main()
