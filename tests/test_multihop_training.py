"""Training the hop network end to end on the shared data (slow: it embeds thousands of passages)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentrag.models.hop import HopModel
from latentrag.training.multihop import build_edges, load_examples, passage_key, recall


def test_load_examples_orders_hops_and_infers_missing_order(data_dir):
    ex = load_examples([data_dir / "multihop" / "train.part0.jsonl"])
    assert len(ex) > 100
    wiki = next(e for e in ex if e.dataset == "2wikimultihopqa")
    lines = (data_dir / "multihop" / "train.part0.jsonl").read_text().splitlines()
    raw = next(json.loads(line) for line in lines if json.loads(line)["id"] == wiki.qid)
    by_hop = sorted(raw["gold"], key=lambda g: g["hop"])
    assert wiki.gold[0].startswith(by_hop[0]["title"]) and wiki.ordered
    assert all(p not in wiki.gold for p in wiki.pool)


def test_recall_is_micro_over_gold_titles():
    from latentrag import Hit

    hits = [[Hit("1", "a", metadata={"key": "A"}), Hit("2", "x", metadata={"key": "X"})],
            [Hit("3", "b", metadata={"key": "B"})]]
    assert recall(hits, [{"A", "C"}, {"B"}], k=2) == pytest.approx(2 / 3)
    assert recall(hits, [{"A", "C"}, {"B"}], k=1) == pytest.approx(2 / 3)
    assert passage_key("Title", "text") == "Title"


def test_edges_cover_chain_complement_and_distractors():
    from latentrag.training.multihop import TrainSet

    ts = TrainSet(np.zeros((6, 4), np.float32), np.zeros((1, 4), np.float32), [[0, 1]], [[2]], [[3, 4]], [])
    edges = build_edges(ts, complement=True, distractors=1)
    kinds = {(tuple(e.path), tuple(e.positives), e.weight) for e in edges}
    assert ((0,), (1,), 1.0) in kinds  # chain g1 -> g2
    assert ((1,), (0,), 1.0) in kinds  # complement g2 -> g1
    assert any(e.weight == 0.5 and e.path[0] in (3, 4) and e.positives == [0, 1] for e in edges)


def test_bridge_chains_follow_title_mentions(encoder):
    from latentrag.training.multihop import TrainSet, add_chains, bridge_chains

    texts = ["Dillon Francis: Dillon Hart Francis (born October 5, 1987) is an American electronic musician.",
             "Get Low: Get Low is a 2014 single by the producer Dillon Francis and DJ Snake.",
             "Paris: Paris is the capital of France."]
    vecs = encoder.encode(texts)
    ts = TrainSet(vecs, vecs[:1], [[1, 0]], [[2]], [[2]], [], texts, [1.0])
    chains = bridge_chains(ts)
    assert [(a, b) for _, a, b in chains] == [(1, 0)]  # Get Low mentions Dillon Francis; nothing else links
    question = chains[0][0]
    assert "Get Low" in question and "American electronic musician" in question and "Dillon" not in question

    class Cache:
        def embed(self, qs):
            return encoder.encode(list(qs))

    grown = add_chains(ts, chains, Cache(), weight=0.5, n_hard=1)  # type: ignore[arg-type]
    assert grown.gold == [[1, 0], [1, 0]] and grown.weights == [1.0, 0.5] and len(grown.questions) == 2
    assert {(e.path[0], e.weight) for e in build_edges(grown, distractors=0) if e.example == 1} == {(1, 0.5), (0, 0.5)}


@pytest.mark.slow
def test_train_one_epoch_end_to_end(data_dir, tmp_path):
    from latentrag.training.multihop import train_multihop

    report = train_multihop([data_dir / "multihop" / "train.part0.jsonl"], tmp_path / "m", epochs=1,
                            dev_paths=[str(data_dir / "multihop" / "dev_hotpotqa.part1.jsonl")], progress=False)
    model = HopModel.load(tmp_path / "m")
    assert 0.0 <= model.extra["alpha"] <= 1.0 and "stop_score" in model.extra
    assert report["best_epoch"] == 1 and (tmp_path / "m" / "MODEL_CARD.md").is_file()
    assert report["dev_multihop_calibrated"]["hotpotqa"]["R@10"] > 0


def test_train_end_to_end_small(data_dir, tmp_path, monkeypatch):
    """CI's real end-to-end training path: 150 questions, one epoch, calibration, save, reload, retrieve."""
    from latentrag import FaissStore
    from latentrag.retrievers import MultiHopRetriever
    from latentrag.training.multihop import train_multihop

    monkeypatch.setenv("LATENTRAG_CACHE", str(tmp_path / "cache"))
    lines = (data_dir / "multihop" / "train.part0.jsonl").read_text().splitlines()[:150]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    report = train_multihop([tmp_path / "train.jsonl"], tmp_path / "m", epochs=1, progress=False,
                            dev_paths=[str(data_dir / "multihop" / "dev_hotpotqa.part1.jsonl")])
    assert report["n_train_questions"] == 150 and report["best_epoch"] == 1
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "latentrag train multihop" in card and "| hotpotqa |" in card
    store = FaissStore.from_texts(["Paris is the capital of France.", "France is in Europe."], ids=["p", "f"])
    hits = MultiHopRetriever(store, k=2, model=tmp_path / "m").retrieve("Which continent is Paris in?")
    assert {h.id for h in hits} == {"p", "f"}
