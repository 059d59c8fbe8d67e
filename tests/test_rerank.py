"""CrossEncoderReranker (the shipped model, real weights) and RelevanceFilter."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from latentrag import Hit, InvalidInputError, ModelLoadError
from latentrag.compressors import CrossEncoderReranker, RelevanceFilter
from latentrag.compressors.relevance import Calibration, HopCalibration, fit_calibration, hop_features

Q = "Who directed the film Jaws?"
TEXTS = [
    "Honey bees live in colonies with one queen.",
    "Jaws is a 1975 American thriller film directed by Steven Spielberg.",
    "The Eiffel Tower is in Paris.",
    "Steven Spielberg also directed E.T. the Extra-Terrestrial.",
]


@pytest.fixture(scope="module")
def reranker():
    return CrossEncoderReranker()


def test_shipped_reranker_orders_by_relevance_and_keeps_metadata(reranker):
    hits = [Hit(f"d{i}", t, score=0.1 * i, metadata={"src": i}) for i, t in enumerate(TEXTS)]
    out = reranker.compress(Q, hits)
    assert out[0].id == "d1" and {h.id for h in out} == {h.id for h in hits}
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    cosine = float(reranker._cosines(Q, [TEXTS[1]], None)[0])
    raw = reranker.logits(Q, TEXTS)[1]
    assert out[0].meta == {"src": 1, "original_score": pytest.approx(0.1), "rerank_logit": pytest.approx(raw, abs=1e-4),
                           "rerank_cosine": pytest.approx(cosine, abs=2e-3),
                           "rerank_model": "latentrag/minilm-l6-late-interaction"}
    assert hits[1].score == pytest.approx(0.1)  # callers' hits untouched
    assert [h.id for h in CrossEncoderReranker(top_n=2).compress(Q, hits)] == [h.id for h in out[:2]]
    assert reranker.compress(Q, []) == []


def test_score_matches_compress_and_int8_is_the_calibrated_openvino_path(reranker, caplog):
    from latentrag.encoders import _installed

    s = reranker.score(Q, TEXTS)
    with caplog.at_level("WARNING", logger="latentrag.device"):
        asked = CrossEncoderReranker(quantize=True)
    if _installed("openvino"):  # the shipped score's calibrated int8 ranges give its encoder an int8 path
        assert str(asked.path) == "openvino-int8" and "openvino-int8" in repr(asked)
    else:  # the int8 ONNX MiniLM cannot take the tuned layer
        assert asked.path.precision != "int8" and "has no int8 path" in caplog.text
    assert list(np.argsort(asked.score(Q, TEXTS))) == list(np.argsort(s))
    np.testing.assert_allclose(asked.score(Q, TEXTS), s, atol=0.25)  # z-score mixes, about -4 to 4
    # passage vectors given by a store are accepted (the default takes its cosines from its own pass): same scores
    assert reranker.encoder is not None
    vecs = [reranker.encoder.encode([t])[0] for t in TEXTS]
    np.testing.assert_allclose(reranker.score(Q, TEXTS, vectors=vecs), s, rtol=1e-4, atol=1e-4)
    logits = reranker.logits(Q, TEXTS)
    assert np.argmax(logits) == 1 and logits != s


def test_long_passages_truncate_with_notice_and_threads_are_safe(reranker, caplog):
    long = "Jaws was directed by Steven Spielberg. " + "filler words " * 600
    with caplog.at_level("INFO", logger="latentrag.compressors.rerank"):
        reranker.score(Q, [long, TEXTS[0]])
    assert "longer than max_length" in caplog.text

    async def many():
        return await asyncio.gather(*[reranker.acompress(Q, [Hit(str(i), t) for i, t in enumerate(TEXTS)])
                                      for _ in range(8)])

    results = asyncio.run(many())
    assert all([h.id for h in r] == [h.id for h in results[0]] for r in results)


def test_bad_models_and_inputs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="is not a cross-encoder"):
        CrossEncoderReranker(str(tmp_path))
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelLoadError, match="not a cross-encoder"):
        CrossEncoderReranker(str(tmp_path / "weights.bin"))
    with pytest.raises(InvalidInputError, match="top_n must be"):
        CrossEncoderReranker(top_n=0)


def test_relevance_filter_shipped_default_cuts_irrelevant_and_can_return_nothing(reranker):
    hits = reranker.compress(Q, [Hit(f"d{i}", t) for i, t in enumerate(TEXTS)])
    kept = RelevanceFilter().compress(Q, hits)
    assert [h.id for h in kept][:1] == ["d1"] and "d0" not in {h.id for h in kept}
    assert all(0 <= h.meta["relevance"] <= 1 for h in kept)
    nothing = reranker.compress("What is the airspeed of an unladen swallow?", [Hit("e", TEXTS[2])])
    assert RelevanceFilter().compress("What is the airspeed of an unladen swallow?", nothing) == []
    assert len(RelevanceFilter(min_k=1).compress("What is the airspeed of an unladen swallow?", nothing)) == 1
    assert len(RelevanceFilter(threshold=0.0, max_k=2).compress(Q, hits)) == 2


def test_fit_learns_a_query_conditioned_cut():
    rng = np.random.default_rng(0)
    queries, scores, labels = [], [], []
    for i in range(40):  # two kinds of queries whose score scales differ: a global cut cannot serve both
        q = f"question about cats number {i}" if i % 2 else f"query on quantum physics {i}"
        shift = 0.0 if i % 2 else 3.0
        for _ in range(10):
            lab = int(rng.random() < 0.4)
            queries.append(q)
            labels.append(lab)
            scores.append(float(shift + (2.0 if lab else 0.0) + rng.normal(0, 0.4)))
    global_cal = fit_calibration(queries, scores, labels, n_dirs=0)
    cond_cal = fit_calibration(queries, scores, labels, n_dirs=4)

    def acc(cal: Calibration) -> float:
        f = RelevanceFilter(calibration=cal)
        pred = np.concatenate([f.probabilities(q, [s]) for q, s in zip(queries, scores, strict=True)]) >= f.threshold
        return float(np.mean(pred == np.asarray(labels, dtype=bool)))

    assert acc(cond_cal) > acc(global_cal) + 0.1 and acc(cond_cal) > 0.9
    with pytest.raises(InvalidInputError, match="hold both classes"):
        fit_calibration(["q"], [1.0], [1])
    with pytest.raises(InvalidInputError, match="max_k .* must be >= min_k"):
        RelevanceFilter(min_k=3, max_k=2)


def test_term_stats_bm25_uses_shipped_document_frequencies(tmp_path):
    from latentrag.models.term_stats import TermStats

    stats = TermStats.count(["the cat sat", "a cat ran", "a dog ran", "zebras graze"])
    assert stats.df == {"cat": 2, "ran": 2}  # min_df=2 leaves the once-seen words out; stop words never count
    texts = ["cat and zebras", "zebras zebras zebras", "nothing here"]
    scores = stats.bm25("zebras or cat", texts)
    assert scores[2] == 0.0 and scores[0] > 0 and scores[1] > 0
    assert stats.idf("zebras") > stats.idf("cat")  # an unseen word is rarer than a counted one
    assert np.allclose(TermStats.load(stats.save(tmp_path / "df.json.gz")).bm25("zebras or cat", texts), scores)
    with pytest.raises(ModelLoadError, match="could not read term statistics"):
        TermStats.load(tmp_path / "missing.json.gz")


def test_shipped_score_is_the_documented_late_interaction_mix(reranker):
    """Recomputed here from the encoder's own outputs: cosines of encode(), MaxSim of token_states()."""
    late = reranker.late
    assert reranker.model_name == "latentrag/minilm-l6-late-interaction" and set(late.weights) <= {
        "cosine", "maxsim", "bm25"}
    assert set(late.meta["folds"]) >= {"dl20", "dl21"} and reranker.term_stats is not None
    enc = reranker.encoder
    vecs = enc.encode([Q, *TEXTS])
    cos = vecs[1:] @ vecs[0]
    states = [s / np.linalg.norm(s, axis=1, keepdims=True) for s in enc.token_states([Q, *TEXTS])]
    ms = np.asarray([(states[0] @ d.T).max(axis=1).mean() for d in states[1:]])
    bm25 = reranker.term_stats.bm25(Q, TEXTS)

    def z(x):
        return (x - x.mean()) / x.std()

    w = late.weights
    want = w["cosine"] * z(cos) + w["maxsim"] * z(ms) + w["bm25"] * z(bm25)
    assert np.allclose(reranker.score(Q, TEXTS), want, atol=1e-2)
    assert np.allclose(reranker.logits(Q, TEXTS), ms, atol=1e-3)
    assert np.argmax(ms) == 1 and ms[1] > ms[3] > ms[0]  # MaxSim alone already puts Jaws first, Spielberg next
    with pytest.raises(InvalidInputError, match="token states of its own MiniLM"):
        CrossEncoderReranker(encoder=_Foreign())


def test_shipped_score_runs_the_minilm_with_its_tuned_last_layer(reranker):
    """The score's encoder is the shipped MiniLM whose last layer (only) was fine-tuned for MaxSim: its token
    states differ from the shipped encoder's, it is named apart, and the shipped encoder cannot stand in."""
    from safetensors.numpy import load_file

    from latentrag.encoders import default_encoder
    from latentrag.models.late_interaction import ENCODER_NAME

    late, enc = reranker.late, reranker.encoder
    assert late.overrides is not None and enc.name == ENCODER_NAME
    tensors = load_file(late.overrides)
    assert tensors and all(k.startswith("encoder.layer.5.") for k in tensors)  # the last of six layers only
    assert late.meta["tuning"]["epochs"] > 0
    shipped = default_encoder()
    a, b = enc.token_states([Q])[0], shipped.token_states([Q])[0]
    assert a.shape == b.shape and float(np.abs(a - b).max()) > 0.05
    with pytest.raises(InvalidInputError, match="token states of its own MiniLM"):
        CrossEncoderReranker(encoder=shipped)
    assert CrossEncoderReranker().encoder is enc  # every default reranker shares one loaded model


def test_weight_overrides_are_checked_when_loaded(tmp_path):
    from safetensors.numpy import save_file

    from latentrag.encoders import shipped_encoder

    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.layer.5.output.dense.bias": np.zeros(7, dtype=np.float32)}, str(bad))
    with pytest.raises(ModelLoadError, match=r"does not fit the shipped MiniLM \(shape \(384,\)\)"):
        shipped_encoder(overrides=bad, name="me/tuned")
    with pytest.raises(ModelLoadError, match="could not read weight overrides"):
        shipped_encoder(overrides=tmp_path / "missing.safetensors", name="me/tuned")
    with pytest.raises(InvalidInputError, match="needs a name of its own"):
        shipped_encoder(overrides=bad)


class _Foreign:
    name, dim = "someone/else", 3

    def encode(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


def test_previous_cross_encoder_still_loads_with_its_documented_mix():
    from latentrag.compressors.rerank import CROSS_ENCODER_NAME
    from latentrag.models.cross_encoder import fuse_scores

    reranker = CrossEncoderReranker(CROSS_ENCODER_NAME)
    assert reranker.late is None and CROSS_ENCODER_NAME in repr(reranker)
    fusion = reranker.fusion
    assert fusion["kind"] == "linear" and set(fusion["weights"]) == {"cosine", "logit", "bm25"}
    assert set(fusion["folds"]) >= {"dl20", "dl21"} and reranker.term_stats is not None
    scores = reranker.score(Q, TEXTS)
    logits, cos = np.asarray(reranker.logits(Q, TEXTS)), reranker._cosines(Q, TEXTS, None)
    bm25 = reranker.term_stats.bm25(Q, TEXTS)

    def z(x):
        return (x - x.mean()) / x.std()

    w = fusion["weights"]
    assert np.allclose(scores, w["cosine"] * z(cos) + w["logit"] * z(logits) + w["bm25"] * z(bm25), atol=1e-4)
    with pytest.raises(ValueError, match="pass bm25="):
        fuse_scores(logits, cos, fusion)


def _hop_hit(hid: str, qs: float, hop: int = 1, via: str = "dense", parent: str | None = None,
             path: float | None = None, nested: bool = False) -> Hit:
    prov = {"hop": hop, "via": via, "parent_id": parent, "path_score": qs if path is None else path,
            "similarity": qs, "question_similarity": qs}
    return Hit(hid, f"passage {hid}", score=qs, metadata={"retrieval": prov} if nested else prov)


def test_relevance_filter_reads_multihop_provenance_flat_or_in_a_langchain_group():
    hits = [_hop_hit("a", 0.62), _hop_hit("b", 0.35, hop=2, via="link", parent="a", path=0.85),
            _hop_hit("c", 0.35, hop=2, via="hop", parent=None, path=0.3)]
    f = RelevanceFilter()
    probs, kinds = f.hit_probabilities("q", hits)
    assert kinds == ["multihop"] * 3
    # the same question similarity: a title link from a strong parent is evidence, an orphan hop is not
    assert probs[1] > probs[2]
    nested = [_hop_hit(h.id, h.meta["question_similarity"], h.meta["hop"], h.meta["via"], h.meta["parent_id"],
                       h.meta["path_score"], nested=True) for h in hits]
    assert np.allclose(f.hit_probabilities("q", nested)[0], probs)
    kept = f.compress("q", hits)
    assert all(h.meta["relevance_map"] == "multihop" for h in kept) and "a" in {h.id for h in kept}
    # a plain dense hit goes through the cosine map, a reranked one through the reranker's
    assert f.hit_probabilities("q", [Hit("x", "t", score=0.5)])[1] == ["cosine"]
    reranked = Hit("x", "t", score=0.5, metadata={"rerank_logit": 2.0, "rerank_cosine": 0.6})
    assert f.hit_probabilities("q", [reranked])[1] == ["reranker"]
    other = Hit("z", "t", score=0.5, metadata={"rerank_logit": 2.0, "rerank_cosine": 0.6,
                                               "rerank_model": "cross-encoder/ms-marco-MiniLM-L-6-v2"})
    with pytest.raises(InvalidInputError, match="fitted on the scores of 'latentrag/minilm-l6-late-interaction'"):
        f.compress("q", [other])
    with pytest.raises(InvalidInputError, match="rerank_cosine"):  # another model's logit: the shipped map refuses
        f.compress("q", [Hit("y", "t", score=0.5, metadata={"rerank_logit": 2.0})])
    with pytest.raises(InvalidInputError, match="needs hits of a MultiHopRetriever"):
        RelevanceFilter(score="multihop").compress("q", [Hit("x", "t", score=0.5)])
    assert "multihop" in repr(f) and "cosine" in repr(f)


def test_hop_calibration_fit_keeps_the_asked_share_of_gold():
    rng = np.random.default_rng(0)
    hits = [_hop_hit(f"h{i}", float(rng.uniform(0.2, 0.8)), hop=1 + i % 2, via=("dense", "link")[i % 2])
            for i in range(400)]
    x = hop_features([h.id for h in hits], [h.meta for h in hits])
    y = (x[:, 0] + 0.3 * x[:, 4] + rng.normal(0, 0.05, len(hits)) > 0.6).astype(int)
    cal = HopCalibration.fit(x, y, keep_gold=0.9)
    keep = cal.probabilities(x) >= cal.threshold
    assert 0.88 <= keep[y == 1].mean() <= 0.95 and keep[y == 0].mean() < 0.5
    with pytest.raises(InvalidInputError, match="keep_gold"):
        HopCalibration.fit(x, y, keep_gold=0.0)


def test_relevance_filter_keeps_the_evidence_multihop_found(data_dir, encoder, tmp_path):
    """Real path: a dev slice (its own questions' pools as the corpus), MultiHopRetriever(k=10), RelevanceFilter()."""
    from latentrag.retrievers import MultiHopRetriever
    from latentrag.training.multihop import DiskEmbeddingCache, load_dev

    store, sets = load_dev(data_dir, DiskEmbeddingCache(encoder, tmp_path),
                           [str(data_dir / "multihop" / "dev_hotpotqa.part1.jsonl")])
    ds = sets["hotpotqa"]
    f = RelevanceFilter()
    gold_found = gold_kept = others = others_dropped = 0
    for hits, gold in zip(MultiHopRetriever(store, k=10)._retrieve_batch(ds.questions, 10, ds.vectors), ds.gold,
                          strict=True):
        kept = {h.id for h in f.compress("q", hits)}
        for h in hits:
            if h.meta["key"] in gold:
                gold_found += 1
                gold_kept += h.id in kept
            else:
                others += 1
                others_dropped += h.id not in kept
    assert gold_found >= 20
    assert gold_kept / gold_found >= 0.85 and others_dropped / others >= 0.3


def test_through_both_frameworks(reranker, store):
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    from latentrag.integrations.langchain import LangChainCompressor, LangChainRetriever
    from latentrag.integrations.llama_index import LlamaIndexPostprocessor, LlamaIndexRetriever
    from latentrag.retrievers import DenseRetriever

    lc = ContextualCompressionRetriever(base_compressor=LangChainCompressor(compressor=reranker),
                                        base_retriever=LangChainRetriever(retriever=DenseRetriever(store, k=10)))
    docs = lc.invoke("Who directed the film about a giant shark?")
    assert docs[0].id == "jaws" and "original_score" in docs[0].metadata
    engine = RetrieverQueryEngine.from_args(LlamaIndexRetriever(DenseRetriever(store, k=10)), llm=MockLLM(),
                                            node_postprocessors=[LlamaIndexPostprocessor(compressor=reranker),
                                                                 LlamaIndexPostprocessor(compressor=RelevanceFilter())])
    response = engine.query("Who directed the film about a giant shark?")
    assert response.source_nodes and response.source_nodes[0].node.node_id == "jaws"


def test_small_training_run_ships_a_loadable_reranker(tmp_path, data_dir):
    from latentrag.training.reranker import RerankerTrainConfig, train

    cfg = RerankerTrainConfig(sources=("msmarco",), max_groups=8, groups_per_step=4, dense_negatives=0,
                              max_length=64, threads=1)
    report = train(tmp_path / "rr", cfg, data_dir=data_dir, evaluate=False, progress=False)
    assert report["data"]["steps"] == 2 and (tmp_path / "rr" / "model.safetensors").is_file()
    trained = CrossEncoderReranker(str(tmp_path / "rr"))
    assert len(trained.score(Q, TEXTS)) == 4 and trained.max_length == 64
