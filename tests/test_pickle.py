"""Pickling: stores, retrievers and the framework adapters round-trip (locks re-created, the faiss index
through faiss.serialize_index), or refuse with a typed NotPicklableError; nothing is silently dropped.

Most tests use ``_ByName``, the session encoder behind a stand-in that pickles by name, so they check this
code whatever the encoders do; the tests on the session encoder itself need encoders that pickle."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from latentrag import FaissStore, Hit
from latentrag.compressors.base import BaseCompressor
from latentrag.retrievers import DenseRetriever, MultiHopRetriever
from latentrag.stores.base import NotPicklableError

_SESSION: list = []


class _ByName:
    """The session encoder, pickled as a reference to it (as encoders pickle by name)."""

    def __init__(self) -> None:
        self.inner = _SESSION[0]
        self.name, self.dim = self.inner.name, self.inner.dim

    def encode(self, texts, **kwargs):
        return self.inner.encode(texts, **kwargs)

    def __reduce__(self):
        return _ByName, ()


@pytest.fixture(scope="module")
def by_name(encoder) -> _ByName:
    _SESSION[:] = [encoder]
    return _ByName()


@pytest.fixture()
def demo(by_name, corpus, corpus_vectors) -> FaissStore:
    return FaissStore.from_texts([f"{d['title']}: {d['text']}" for d in corpus], ids=[d["id"] for d in corpus],
                                 metadatas=[{"title": d["title"]} for d in corpus], encoder=by_name,
                                 vectors=corpus_vectors)


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


def _random_store(index: str, n: int, by_name) -> tuple[FaissStore, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, by_name.dim)).astype(np.float32)
    store = FaissStore.from_texts([f"doc {i}" for i in range(n)], ids=[f"d{i}" for i in range(n)],
                                  metadatas=[{"even": i % 2 == 0} for i in range(n)], vectors=vecs,
                                  encoder=by_name, index=index)
    return store, rng.standard_normal((3, by_name.dim)).astype(np.float32)


@pytest.mark.parametrize(("index", "n"), [("flat", 50), ("hnsw", 50), ("pq", 40), ("pq", 300), ("ivfpq", 600)])
def test_faiss_store_round_trips(by_name, index, n):
    store, queries = _random_store(index, n, by_name)
    store.delete(["d1"])
    before = [[(h.id, round(h.score, 5)) for h in hits] for hits in store.search(queries, 5)]  # trains PQ types
    copy = _roundtrip(store)
    assert len(copy) == len(store) and copy.revision == store.revision and "d1" not in copy
    assert [[(h.id, round(h.score, 5)) for h in hits] for hits in copy.search(queries, 5)] == before
    assert [h.id for h in copy.search(queries, 3, filter={"even": True})[0]] == \
        [h.id for h in store.search(queries, 3, filter={"even": True})[0]]
    assert isinstance(copy._lock, type(threading.RLock())) and copy._lock is not store._lock
    copy.add(["a new one"], ids=["new"], vectors=queries[:1])  # the copy is a live store of its own
    assert "new" in copy and "new" not in store


def test_a_connection_store_refuses_with_a_typed_error(by_name):
    class _Connection(FaissStore):
        picklable = False

    with pytest.raises(NotPicklableError, match="cannot be pickled: it is a connection"):
        pickle.dumps(_Connection(by_name))
    assert issubclass(NotPicklableError, TypeError)


def test_retrievers_round_trip(demo):
    q = "Where was the director of Jaws born?"
    dense = DenseRetriever(demo, k=3, filter={"title": ["Jaws (film)", "Steven Spielberg"]})
    assert [h.id for h in _roundtrip(dense).retrieve(q)] == [h.id for h in dense.retrieve(q)]
    multihop = MultiHopRetriever(demo, k=4)
    copy = _roundtrip(multihop)
    assert [h.id for h in copy.retrieve(q)] == [h.id for h in multihop.retrieve(q)]
    assert copy.links is not None and copy.links.store is copy.store  # one store behind both, as before
    assert copy.links._lock is not multihop.links._lock and copy.alpha == multihop.alpha
    assert copy.hop_network is multihop.hop_network is False  # hybrid first stage here
    state = MultiHopRetriever.__getstate__
    try:  # a retriever pickled before hop_network existed (its state has none) ran the network: it still does
        MultiHopRetriever.__getstate__ = lambda self: {k: v for k, v in state(self).items() if k != "hop_network"}
        old = _roundtrip(multihop)
    finally:
        MultiHopRetriever.__getstate__ = state
    assert old.hop_network is True and old.retrieve(q)


class _Upper(BaseCompressor):
    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        return [h.copy(text=h.text.upper()) for h in hits]


class _Unpicklable(_Upper):
    def __init__(self) -> None:
        self.fn = lambda x: x  # a lambda does not pickle


def test_langchain_adapters_round_trip_or_say_which_part_failed(demo):
    from langchain_core.documents import Document

    from latentrag.integrations.langchain import LangChainCompressor, LangChainRetriever

    lc = LangChainRetriever(retriever=MultiHopRetriever(demo, k=3), k=2)
    copy = _roundtrip(lc)
    q = "Where was the director of Jaws born?"
    assert [d.id for d in copy.invoke(q)] == [d.id for d in lc.invoke(q)] and copy.get_name() == "MultiHopRetriever"
    comp = _roundtrip(LangChainCompressor(compressor=_Upper()))
    assert comp.compress_documents([Document(id="a", page_content="abc")], "q")[0].page_content == "ABC"
    with pytest.raises(NotPicklableError, match=r"LangChainCompressor.compressor \(_Unpicklable\) cannot be pickled"):
        pickle.dumps(LangChainCompressor(compressor=_Unpicklable()))


def test_llama_index_postprocessor_never_drops_its_compressor():
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from latentrag.integrations.llama_index import LlamaIndexPostprocessor

    copy = _roundtrip(LlamaIndexPostprocessor(compressor=_Upper()))
    assert isinstance(copy.compressor, _Upper)
    nodes = [NodeWithScore(node=TextNode(id_="a", text="abc"), score=1.0)]
    assert copy.postprocess_nodes(nodes, QueryBundle("q"))[0].node.get_content() == "ABC"
    with pytest.raises(NotPicklableError, match=r"LlamaIndexPostprocessor.compressor \(_Unpicklable\)"):
        pickle.dumps(LlamaIndexPostprocessor(compressor=_Unpicklable()))


def test_llama_index_retriever_and_embedding_round_trip(demo, by_name):
    from latentrag.integrations.llama_index import LlamaIndexEmbedding, LlamaIndexRetriever

    r = LlamaIndexRetriever(DenseRetriever(demo), similarity_top_k=2, filters={"title": "Jaws (film)"})
    copy = _roundtrip(r)
    assert [n.node.node_id for n in copy.retrieve("Who directed Jaws?")] == ["jaws"]
    emb = _roundtrip(LlamaIndexEmbedding(by_name))
    assert len(emb.get_query_embedding("Who directed Jaws?")) == by_name.dim  # the encoder came along


def test_framework_store_round_trips(by_name):
    from langchain_core.vectorstores import InMemoryVectorStore

    from latentrag.integrations.framework_store import FrameworkStore
    from latentrag.integrations.langchain import LangChainEmbeddings

    store = FrameworkStore(InMemoryVectorStore(LangChainEmbeddings(by_name)))
    store.add(["Paris is in France.", "Rome is in Italy."], ids=["p", "r"])
    copy = _roundtrip(store)
    q = by_name.encode(["Which country is Rome in?"])
    assert [h.id for h in copy.search(q, 1)[0]] == ["r"] and len(copy) == 2


def test_the_session_encoder_is_reused_on_load(encoder, corpus, corpus_vectors):
    assert pickle.loads(pickle.dumps(encoder)) is encoder  # the shipped default: the loaded object again
    store = FaissStore.from_texts([d["text"] for d in corpus], ids=[d["id"] for d in corpus], encoder=encoder,
                                  vectors=corpus_vectors)
    copy = _roundtrip(DenseRetriever(store, k=2))
    assert copy.store.encoder is encoder  # the loaded model is reused, not loaded again
    assert [h.id for h in copy.retrieve("Who directed Jaws?")] == [h.id for h in store.search(
        encoder.encode(["Who directed Jaws?"]), 2)[0]]
