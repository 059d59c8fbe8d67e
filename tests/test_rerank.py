"""CrossEncoderReranker (the shipped model, real weights) and RelevanceFilter."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from latentrag import Hit, InvalidInputError, ModelLoadError
from latentrag.compressors import CrossEncoderReranker, RelevanceFilter
from latentrag.compressors.relevance import Calibration, fit_calibration

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
    assert out[0].meta == {"src": 1, "original_score": pytest.approx(0.1), "rerank_logit": pytest.approx(3.0, abs=2)}
    assert hits[1].score == pytest.approx(0.1)  # callers' hits untouched
    assert [h.id for h in CrossEncoderReranker(top_n=2).compress(Q, hits)] == [h.id for h in out[:2]]
    assert reranker.compress(Q, []) == []


def test_score_matches_compress_and_int8_is_close_to_fp32(reranker):
    s = reranker.score(Q, TEXTS)
    int8 = CrossEncoderReranker(quantize=True).score(Q, TEXTS)
    assert np.argmax(s) == 1 and np.argmax(int8) == 1
    assert np.corrcoef(s, int8)[0, 1] > 0.95
    # passage vectors given by a store are reused instead of re-encoding: same scores
    assert reranker.encoder is not None  # the shipped model fuses the bi-encoder cosine
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
