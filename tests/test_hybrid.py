"""Hybrid retrieval: the BM25 index over a store (built, kept in step with writes, saved) and the fusion."""

from __future__ import annotations

import pytest
from conftest import run_in_threads

from latentrag import FaissStore, InvalidInputError, StoreCorruptError
from latentrag.retrievers import DenseRetriever, HybridRetriever, MultiHopRetriever
from latentrag.retrievers.lexical import BM25Index

pytest.importorskip("bm25s")

PARTS = [
    ("valve", "Valve KX-4471 is rated to 40 bar and ships with a brass seat.", "hw"),
    ("pump1", "Centrifugal pumps move fluids by converting rotational energy into flow.", "hw"),
    ("pump2", "A pump's rating tells how much pressure it can deliver at a given flow.", "hw"),
    ("pump3", "Positive displacement pumps trap a fixed volume of fluid and push it out.", "hw"),
    ("poem", "The river runs quietly past the mill at dawn.", "lit"),
]
QUERY = "KX-4471 pressure rating"


@pytest.fixture()
def parts(encoder) -> FaissStore:
    return FaissStore.from_texts([t for _, t, _ in PARTS], ids=[i for i, _, _ in PARTS],
                                 metadatas=[{"shelf": s} for _, _, s in PARTS], encoder=encoder)


def test_bm25_finds_the_rare_term_and_follows_writes(parts):
    idx = BM25Index(parts)
    assert [i for i, _ in idx.search([QUERY], 2)[0]][0] == "valve"
    assert idx.search(["zebra quagga"], 3) == [[]]  # no shared term: nothing, not noise
    parts.add(["Zebra quagga crossings are rare."], ids=["zebra"])
    assert [i for i, _ in idx.search(["zebra quagga"], 3)[0]] == ["zebra"]  # rebuilt on the store's revision
    parts.delete(["valve"])
    assert "valve" not in [i for i, _ in idx.search([QUERY], 5)[0]]
    assert [i for i, _ in idx.search(["pumps"], 5, filter={"shelf": "lit"})[0]] == []
    assert len(idx) == len(parts)


def test_bm25_save_load_round_trip_and_refuses_a_changed_store(parts, tmp_path):
    idx = BM25Index(parts)
    before = idx.search([QUERY, "fluid pumps"], 3)
    idx.save(tmp_path / "bm25")
    again = BM25Index.load(tmp_path / "bm25", parts)
    assert again.search([QUERY, "fluid pumps"], 3) == before
    parts.add(["A new passage."], ids=["new"])
    with pytest.raises(StoreCorruptError, match="rebuild it with BM25Index"):
        BM25Index.load(tmp_path / "bm25", parts)


def test_hybrid_fuses_dense_and_lexical(parts):
    dense = [h.id for h in DenseRetriever(parts, k=5).retrieve(QUERY)]
    lexical = [i for i, _ in BM25Index(parts).search([QUERY], 5)[0]]
    # weight 1: dense alone (same order); weight 0: BM25 first, then the passages it does not match
    assert [h.id for h in HybridRetriever(parts, k=5, weight=1.0).retrieve(QUERY)] == dense
    assert [h.id for h in HybridRetriever(parts, k=5, weight=0.0).retrieve(QUERY)][: len(lexical)] == lexical
    hits = HybridRetriever(parts, k=5, weight=0.6).retrieve(QUERY)
    assert len(hits) == 5 and hits[0].id == "valve" and hits[0].metadata["via"] == "both"
    cos = [h.metadata["dense_score"] for h in hits]
    bm = [h.metadata["lexical_score"] for h in hits]
    for h in hits:  # the documented convex fusion, over the candidates (here every passage)
        want = 0.6 * (h.metadata["dense_score"] - min(cos)) / (max(cos) - min(cos)) + 0.4 * h.metadata[
            "lexical_score"] / max(bm)
        assert h.score == pytest.approx(want, abs=1e-6)
        assert h.metadata["via"] == ("both" if h.metadata["lexical_score"] > 0 else "dense")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    rrf = HybridRetriever(parts, k=5, fusion="rrf", rrf_k=60).retrieve(QUERY)
    top = rrf[0]
    assert top.score == pytest.approx(1 / (61 + dense.index(top.id)) + 1 / (61 + lexical.index(top.id)))
    # filters narrow both searches
    assert {h.id for h in HybridRetriever(parts, k=5).retrieve(QUERY, filter={"shelf": "lit"})} == {"poem"}


def test_hybrid_checks_its_arguments(parts, encoder):
    with pytest.raises(InvalidInputError, match="fusion must be one of 'rrf', 'convex', got 'sum'"):
        HybridRetriever(parts, fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"weight must be a number in \[0, 1\].*got 1.5"):
        HybridRetriever(parts, weight=1.5)
    other = FaissStore.from_texts(["x"], ids=["x"], encoder=encoder)
    with pytest.raises(InvalidInputError, match="index was built for another store"):
        HybridRetriever(parts, index=BM25Index(other))
    with pytest.raises(InvalidInputError, match="first_stage must be 'auto', 'dense', 'hybrid' or a HybridRetriever"):
        MultiHopRetriever(parts, first_stage="bm25")  # type: ignore[arg-type]
    assert "fusion='convex'" in repr(HybridRetriever(parts))


def test_hybrid_is_thread_safe(parts):
    r = HybridRetriever(parts, k=3)
    want = [h.id for h in r.retrieve(QUERY)]
    got = run_in_threads(lambda: [[h.id for h in r.retrieve(QUERY)] for _ in range(5)])
    assert got == [[want] * 5] * 4


def test_multihop_with_a_hybrid_first_stage(store):
    bridge = "What river runs through the city where Albert Einstein was born?"
    r = MultiHopRetriever(store, k=4, first_stage="hybrid")
    hits = r.retrieve(bridge)
    assert hits[0].id == "einstein" and "ulm" in [h.id for h in hits]
    assert "first_stage='hybrid'" in repr(r)
    assert MultiHopRetriever(store).first_stage is not None  # "auto": hybrid on a store that lists its passages
    assert MultiHopRetriever(store, first_stage="dense").first_stage is None
    # hop-1 scores stay on the cosine scale the later hops use
    assert all(-1 <= h.metadata["question_similarity"] <= 1 for h in hits)


def test_hybrid_pickles_and_large_indexes_rebuild_in_the_background(parts, monkeypatch):
    import pickle

    from latentrag.retrievers import lexical

    r = HybridRetriever(parts, k=2)
    want = [h.id for h in r.retrieve(QUERY)]
    again = pickle.loads(pickle.dumps(r))
    assert [h.id for h in again.retrieve(QUERY)] == want
    # a write to a store whose index counts as large: queries keep the old index until the rebuild lands
    monkeypatch.setattr(lexical, "BACKGROUND_REBUILD", 1)
    parts.add(["Zebra quagga crossings are rare."], ids=["zebra"])
    r.index.search(["zebra quagga"], 3)  # starts the rebuild, answers from the previous index
    r.index.wait(30)
    assert [i for i, _ in r.index.search(["zebra quagga"], 3)[0]] == ["zebra"]


def test_building_an_index_logs_nothing_below_warning(parts, caplog):
    # bm25s sets its logger to DEBUG on import; a demo or an app with a root handler must not print its chatter
    with caplog.at_level("DEBUG"):
        len(BM25Index(parts))
    assert not [r for r in caplog.records if r.name.startswith("bm25s") and r.levelno < 30]
