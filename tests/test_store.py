import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from latentrag import (
    DuplicateIdError,
    EncoderMismatchError,
    FaissStore,
    InvalidInputError,
    StoreCorruptError,
    StoreError,
)
from latentrag.encoders import BaseEncoder


class _OtherEncoder(BaseEncoder):
    """A real (if tiny) encoder of another name and dim, to check the mismatch errors."""

    name = "other-encoder"
    dim = 8

    def _encode_batch(self, texts):
        return np.array([[len(t) + i for i in range(8)] for t in texts], dtype=np.float32)


def test_search_exact_and_batched(store, encoder):
    qs = encoder.encode(["Who directed Jaws?", "Where was Einstein born?"])
    res = store.search(qs, k=3)
    assert [len(r) for r in res] == [3, 3]
    assert res[0][0].id == "jaws" and res[1][0].id == "einstein"
    assert res[0][0].score >= res[0][1].score >= res[0][2].score
    assert type(res[0][0].score) is float


def test_vectors_by_id_is_the_stored_slice(store, corpus_vectors):
    v = store.vectors(["jaws", "casablanca"])
    assert v.shape == (2, 384)
    np.testing.assert_array_equal(v[1], corpus_vectors[0])
    hits = store.search(v[:1], k=1, with_vectors=True)
    np.testing.assert_array_equal(hits[0][0].vector, v[0])
    with pytest.raises(StoreError, match="id 'nope' is not in the store"):
        store.vectors(["nope"])


def test_add_upsert_delete_visible(store, encoder):
    q = encoder.encode(["giant shark thriller"])
    with pytest.raises(DuplicateIdError, match=re.escape("ids already in the store: ['jaws']")):
        store.add(["dup"], ids=["jaws"])
    assert store.delete(["jaws", "unknown"]) == 1
    assert "jaws" not in [h.id for h in store.search(q, k=5)[0]]
    store.upsert(["Jaws: a shark movie by Spielberg."], ids=["jaws"])
    top = store.search(q, k=1)[0][0]
    assert top.id == "jaws" and top.text.startswith("Jaws: a shark movie")
    new_ids = store.add(["A brand new passage about sharks."])
    assert len(new_ids) == 1 and new_ids[0] in store


def test_many_deletes_trigger_compaction(store, encoder):
    ids = store.ids()
    store.delete(ids[:30])
    assert len(store) == len(ids) - 30
    res = store.search(encoder.encode(["sleep memory"]), k=len(store) + 5)[0]
    assert {h.id for h in res} == set(ids[30:])


def test_metadata_filter(store, encoder):
    res = store.search(encoder.encode(["film director"]), k=5, filter={"group": "other"})[0]
    assert res and all(h.metadata["group"] == "other" for h in res)
    res = store.search(encoder.encode(["x"]), k=5, filter={"title": ["Ulm", "Tokyo"]})[0]
    assert {h.id for h in res} == {"ulm", "tokyo"}


def test_bad_inputs(store, encoder):
    with pytest.raises(InvalidInputError, match=re.escape("query vectors must have shape (n, 384), got (1, 3)")):
        store.search(np.zeros((1, 3), np.float32), k=2)
    with pytest.raises(InvalidInputError, match="k must be an integer from 1 to 2147483648, got 0"):
        store.search(encoder.encode(["x"]), k=0)
    with pytest.raises(InvalidInputError, match="ids has 1 entries but texts has 2"):
        store.add(["a", "b"], ids=["x"])
    with pytest.raises(InvalidInputError, match="index must be one of"):
        FaissStore(encoder, index="annoy")


def test_save_load_roundtrip_and_manifest(store, tmp_path, encoder):
    store.delete(["ulm"])
    store.save(tmp_path / "s")
    loaded = FaissStore.load(tmp_path / "s")
    assert len(loaded) == len(store) and "ulm" not in loaded
    q = encoder.encode(["Who directed Psycho?"])
    assert [h.id for h in loaded.search(q, 5)[0]] == [h.id for h in store.search(q, 5)[0]]
    import json

    folder = tmp_path / "s" / (tmp_path / "s" / "CURRENT").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoder"] == {"name": encoder.name, "dim": 384}
    assert manifest["count"] == len(store) and manifest["index_type"] == "flat"
    assert set(manifest["checksums"]) >= {"index.faiss", "docs.jsonl", "vectors.npy"}
    store.save(tmp_path / "s")  # a second save replaces the version and cleans the old one
    assert len([p for p in (tmp_path / "s").iterdir() if p.name.startswith("v-")]) == 1


def test_load_with_other_encoder_says_how_to_fix(store, tmp_path):
    store.save(tmp_path / "s")
    with pytest.raises(EncoderMismatchError, match=r"built with encoder 'sentence-transformers/all-MiniLM-L6-v2' "
                       r"\(dim 384\) but the encoder given is 'other-encoder' \(dim 8\).*--rebuild"):
        FaissStore.load(tmp_path / "s", encoder=_OtherEncoder())


def test_corrupt_and_missing_store(store, tmp_path):
    with pytest.raises(StoreError, match="no saved FaissStore at"):
        FaissStore.load(tmp_path / "missing")
    store.save(tmp_path / "s")
    folder = tmp_path / "s" / (tmp_path / "s" / "CURRENT").read_text()
    with open(folder / "docs.jsonl", "a") as fh:
        fh.write("tampered\n")
    with pytest.raises(StoreCorruptError, match="'docs.jsonl'.*fails its checksum"):
        FaissStore.load(tmp_path / "s")


@pytest.mark.parametrize("index", ["hnsw", "pq", "ivfpq"])
def test_approximate_index_types(index, encoder, tmp_path):
    rng = np.random.default_rng(0)
    # Clustered unit vectors, as sentence embeddings are (isotropic noise is the worst case for PQ).
    centers = rng.standard_normal((60, 384)).astype(np.float32)
    x = centers[rng.integers(0, 60, 3000)] + 0.6 * rng.standard_normal((3000, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(len(x))]
    exact = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=encoder)
    approx = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=encoder, index=index)
    q = x[:50] + 0.05 * rng.standard_normal((50, 384)).astype(np.float32)
    truth = [{h.id for h in r} for r in exact.search(q, 10)]
    got = [{h.id for h in r} for r in approx.search(q, 10)]
    recall = np.mean([len(a & b) / 10 for a, b in zip(truth, got, strict=True)])
    assert recall > (0.95 if index == "hnsw" else 0.5)
    assert [r[0].id for r in approx.search(x[:5], 1)] == ids[:5]
    approx.save(tmp_path / index)
    again = FaissStore.load(tmp_path / index)
    assert [r[0].id for r in again.search(x[:5], 1)] == ids[:5]
    assert again.vectors(["d1", "d2"]).shape == (2, 384)
    if index != "hnsw":  # per added vector, the PQ code costs >10x less than the float32 row
        before = approx.nbytes()
        more = x[:1000] + 0.01 * rng.standard_normal((1000, 384)).astype(np.float32)
        approx.add([f"m{i}" for i in range(1000)], ids=[f"m{i}" for i in range(1000)], vectors=more)
        assert (approx.nbytes() - before) * 10 < 1000 * 384 * 4


def _clustered(n, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((60, 384)).astype(np.float32)
    x = centers[rng.integers(0, 60, n)] + 0.6 * rng.standard_normal((n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng


def _recall(store, exact, q, k=10):
    truth = [{h.id for h in r} for r in exact.search(q, k)]
    got = [{h.id for h in r} for r in store.search(q, k)]
    return float(np.mean([len(a & b) / k for a, b in zip(truth, got, strict=True)]))


@pytest.mark.parametrize("index", ["pq", "ivfpq"])
def test_compressed_index_reranks_with_exact_vectors_memory_mapped_after_load(index, encoder, tmp_path):
    from latentrag.stores.faiss import ExactVectors

    x, rng = _clustered(3000)
    ids = [f"d{i}" for i in range(len(x))]
    exact = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=encoder)
    raw = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=encoder, index=index)
    fine = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=encoder, index=index, rerank=100)
    q = x[:50] + 0.05 * rng.standard_normal((50, 384)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert _recall(fine, exact, q) >= 0.98 > _recall(raw, exact, q)
    hit = fine.search(q[:1], 3)[0][0]  # scores are exact inner products, not PQ estimates
    assert hit.score == pytest.approx(float(q[0] @ x[int(hit.id[1:])]), abs=1e-5)
    assert np.array_equal(fine.vectors(["d7"])[0], x[7])  # exact, not decoded from the codes
    assert "rerank=100" in repr(fine)
    before = [[h.id for h in r] for r in fine.search(q, 10)]
    fine.save(tmp_path / "s")
    again = FaissStore.load(tmp_path / "s")
    assert isinstance(again._vecs, ExactVectors) and isinstance(again._vecs.base, np.memmap)
    assert again.nbytes() == raw.nbytes()  # the exact rows stay on disk: in memory, the index alone
    assert [[h.id for h in r] for r in again.search(q, 10)] == before
    # rows added after the load are held in memory and found; a second save streams map + new rows
    more = x[:200] + 0.01 * rng.standard_normal((200, 384)).astype(np.float32)
    more /= np.linalg.norm(more, axis=1, keepdims=True)
    again.add([f"m{i}" for i in range(200)], ids=[f"m{i}" for i in range(200)], vectors=more)
    assert again.search(more[5:6], 1)[0][0].id == "m5"
    assert np.array_equal(again.vectors(["m5", "d9"]), np.stack([more[5], x[9]]))
    again.delete(ids[:1000])  # enough to compact: renumbered rows, the index re-filled
    assert again.search(more[5:6], 1)[0][0].id == "m5" and "d3" not in again
    again.save(tmp_path / "s")
    third = FaissStore.load(tmp_path / "s")
    assert len(third) == len(x) - 1000 + 200 and third.search(x[1500:1501], 1)[0][0].id == "d1500"
    assert np.array_equal(third.vectors(["m199"])[0], more[199])


def test_rerank_is_checked_at_the_door(encoder):
    with pytest.raises(InvalidInputError, match="rerank=50 applies to the compressed index types"):
        FaissStore(encoder, index="hnsw", rerank=50)
    with pytest.raises(InvalidInputError, match="got -1"):
        FaissStore(encoder, index="ivfpq", rerank=-1)


_SAVER = r"""
import sys, numpy as np
from latentrag import FaissStore
from latentrag.encoders import BaseEncoder
class E(BaseEncoder):
    name = "sentence-transformers/all-MiniLM-L6-v2"; dim = 384
    def _encode_batch(self, t): raise AssertionError
path = sys.argv[1]
rng = np.random.default_rng(1)
x = rng.standard_normal((60000, 384)).astype(np.float32)
ids = [f"n{i}" for i in range(len(x))]
s = FaissStore.from_texts(ids, ids=ids, vectors=x, encoder=E())
print("ready", flush=True)
while True:
    s.save(path)
"""


def test_crash_during_save_keeps_previous_store(store, tmp_path, encoder):
    target = tmp_path / "s"
    store.save(target)
    before = len(store)
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # a save of ~100 MB is in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = FaissStore.load(target, encoder=encoder)  # either the old or a completed new version
    assert len(loaded) in (before, 60000)
    q = loaded.vectors(loaded.ids()[:1])
    assert loaded.search(q, k=1)[0][0].id == loaded.ids()[0]


@pytest.mark.parametrize("index", ["pq", "ivfpq"])
def test_small_untrained_pq_store_survives_deletes_and_save(index, encoder, corpus_vectors, tmp_path):
    ids = [f"d{i}" for i in range(20)]
    s = FaissStore.from_texts(ids, ids=ids, vectors=corpus_vectors[:20], encoder=encoder, index=index)
    assert s.delete(ids[:8]) == 8  # compaction before the quantiser is trained
    assert s.search(corpus_vectors[8:9], k=1)[0][0].id == "d8"
    s.save(tmp_path / "s")
    assert len(FaissStore.load(tmp_path / "s")) == 12


def test_huge_k_is_clamped_to_the_live_count(store, encoder):
    store.delete(["ulm"])
    res = store.search(encoder.encode(["x"]), k=10**8)[0]
    assert len(res) == len(store) and "ulm" not in {h.id for h in res}
