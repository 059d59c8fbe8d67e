"""latentrag.device (CPU features, the path each model takes, the LATENTRAG_PRECISION override) and the
agreement of every path with the fast one, so machines without AMX keep working.

Tolerances (each against the path ``precision="auto"`` takes on this machine): fp32 paths cosine >= 0.9999
per embedding, bf16 >= 0.999, int8 >= 0.998 (its measured minimum is 0.9988); on every path the same top-3
demo-corpus passages (as a set, same first) for each query below, and for the cross-encoder the same top-3
candidates and logits within 1e-3 on the same path, 0.01 across runtimes or precisions.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from latentrag import FaissStore, InvalidInputError
from latentrag import device as dev
from latentrag.encoders import (
    DEFAULT_ENCODER_NAME,
    OnnxMiniLMEncoder,
    bert_fusable,
    default_encoder,
    plan_batches,
    shipped_encoder,
    shipped_paths,
)

QUERIES = ["Who directed Jaws?", "Where was Einstein born?", "a song about peace by a Beatle",
           "which antibiotic did Fleming find", "the river through Vienna and Budapest", "how do bees live"]
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.999, "int8": 0.998}

CPUINFO = """processor\t: 0
model name\t: Example CPU
physical id\t: 0
core id\t: 0
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: Example CPU
physical id\t: 0
core id\t: 0
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16

processor\t: 2
model name\t: Example CPU
physical id\t: 0
core id\t: 1
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16
"""


def features(flags: str, mkldnn_bf16: bool | None = True) -> dev.CpuFeatures:
    return dev.CpuFeatures("test", frozenset(flags.split()), 2, 2, torch_mkldnn_bf16=mkldnn_bf16)


def test_parse_cpuinfo_counts_physical_cores_and_respects_affinity():
    model, flags, logical, physical = dev.parse_cpuinfo(CPUINFO)
    assert model == "Example CPU" and {"amx_bf16", "avx512_bf16", "avx512_vnni"} <= flags
    assert (logical, physical) == (3, 2)  # processors 0 and 1 are hyperthreads of one core
    assert dev.parse_cpuinfo(CPUINFO, allowed={0, 1})[2:] == (2, 1)


@pytest.mark.parametrize(("flags", "mkldnn", "isa", "native"), [
    ("avx2 avx512f avx512_bf16 amx_tile amx_bf16", True, "AMX-BF16", True),
    ("avx2 avx512f avx512_vnni avx512_bf16", True, "AVX512-BF16", True),
    ("avx2 avx512f avx512_vnni", True, "AVX512-VNNI", False),
    ("avx2", None, "AVX2", False),
    ("avx2 amx_bf16", False, "AMX-BF16", False),  # torch's oneDNN says no: not used
])
def test_native_bf16_needs_the_instructions_and_torch(flags, mkldnn, isa, native):
    f = features(flags, mkldnn)
    assert f.isa == isa and f.native_bf16 is native


def test_this_machine_is_described():
    f = dev.cpu_features()
    assert f.logical_cpus >= 1 and f.physical_cores >= 1 and dev.threads() >= 1
    assert set(f.summary()) >= {"isa", "native_bf16", "threads"}


OFFERED = [("torch", "bf16"), ("onnx", "fp32"), ("torch", "fp32"), ("onnx", "int8")]


def test_choose_path_rule_and_override(monkeypatch, caplog):
    monkeypatch.delenv(dev.ENV_PRECISION, raising=False)
    monkeypatch.setattr(dev, "cpu_features", lambda: features("avx2 avx512f avx512_bf16 amx_bf16"))
    assert str(dev.choose_path("m-amx", OFFERED)) == "torch-bf16"
    monkeypatch.setattr(dev, "cpu_features", lambda: features("avx2"))
    path = dev.choose_path("m-avx2", OFFERED)
    assert str(path) == "onnx-fp32" and "no native bf16" in path.reason  # first fp32 offered
    assert str(dev.choose_path("m-avx2", OFFERED[2:])) == "torch-fp32"  # no onnxruntime
    assert str(dev.choose_path("m-avx2", OFFERED, "int8")) == "onnx-int8"  # int8 only when asked
    monkeypatch.setenv(dev.ENV_PRECISION, "BF16")
    assert str(dev.choose_path("m-env", OFFERED)) == "torch-bf16"
    assert dev.choose_path("m-env", OFFERED).reason.startswith(f"{dev.ENV_PRECISION}=bf16; no native bf16")
    assert str(dev.choose_path("m-env", OFFERED, "fp32")) == "onnx-fp32"  # an argument beats the variable
    with caplog.at_level(logging.WARNING, logger="latentrag.device"):
        assert str(dev.choose_path("m-env", [("torch", "fp32")])) == "torch-fp32"
    assert "has no bf16 path" in caplog.text
    monkeypatch.setenv(dev.ENV_PRECISION, "fp16")
    must = "LATENTRAG_PRECISION must be one of auto, fp32, bf16, bf16-mixed, int8"
    with pytest.raises(InvalidInputError, match=must):
        dev.choose_path("m", OFFERED)


def test_int8_is_automatic_only_where_vouched_for_and_the_cpu_has_int8_dot_products(monkeypatch):
    monkeypatch.delenv(dev.ENV_PRECISION, raising=False)
    offered = [("openvino", "int8"), *OFFERED]
    monkeypatch.setattr(dev, "cpu_features", lambda: features("avx2 avx512f avx512_vnni avx512_bf16"))
    assert str(dev.choose_path("m-vouched", offered, int8_auto=True)) == "openvino-int8"
    assert str(dev.choose_path("m-not-vouched", offered)) == "torch-bf16"
    assert str(dev.choose_path("m-vouched", offered, "bf16", int8_auto=True)) == "torch-bf16"  # asked beats auto
    monkeypatch.setattr(dev, "cpu_features", lambda: features("avx2"))  # no VNNI: the float rule
    assert str(dev.choose_path("m-vouched", offered, int8_auto=True)) == "onnx-fp32"
    assert features("avx2 amx_int8").int8_dot and not features("avx2 avx512f").int8_dot


def test_path_is_logged_once(monkeypatch, caplog):
    monkeypatch.delenv(dev.ENV_PRECISION, raising=False)
    with caplog.at_level(logging.INFO, logger="latentrag.device"):
        for _ in range(3):
            dev.choose_path("log-once-model", OFFERED)
    assert caplog.text.count("log-once-model runs") == 1


def test_threads_override(monkeypatch):
    monkeypatch.setenv(dev.ENV_THREADS, "3")
    assert dev.threads() == 3
    monkeypatch.setenv(dev.ENV_THREADS, "zero")
    with pytest.raises(InvalidInputError, match="LATENTRAG_THREADS must be a positive integer"):
        dev.threads()


def test_short_queries_never_pay_for_a_long_passage():
    lengths = [12] * 64 + [256]
    batches = plan_batches(lengths, max_batch=64, max_tokens=4096)
    assert [64] in batches and all(len(b) <= 64 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(65))
    for b in batches:  # padding bounded, token budget respected (one over-long text may stand alone)
        widths = [lengths[i] for i in b]
        assert max(widths) <= 1.25 * min(widths) + 8 and (len(b) == 1 or len(b) * max(widths) <= 4096)


def test_bert_fusable_says_why_not():
    assert bert_fusable({"model_type": "bert", "hidden_act": "gelu", "hidden_size": 384,
                         "num_attention_heads": 12}) is None
    assert "not 'bert'" in (bert_fusable({"model_type": "roberta"}) or "")
    assert "gelu_new" in (bert_fusable({"model_type": "bert", "hidden_act": "gelu_new"}) or "")


# ------------------------------------------------------------------ every path agrees with the fast one


#: Score gap under which two documents count as tied for a rank: a path within cosine 0.99992 of another moves
#: a unit vector by at most sqrt(2 * 0.00008) = 0.0126, so a query's score by at most that (on the torch bf16
#: path, one text, or a cached one, runs on the short-batch fp32 graph, mixing precisions in one ranking).
TIE = 0.013


def _fallback_paths() -> list[str]:
    return [f"{b}-{p}" for b, p in shipped_paths()]


@pytest.fixture(scope="module")
def fast(encoder, corpus):
    texts = [f"{d['title']}: {d['text']}" for d in corpus]
    return encoder, texts, encoder.encode(texts), encoder.encode(QUERIES)


def _top3(q: np.ndarray, docs: np.ndarray) -> list[list[int]]:
    return [list(np.argsort(-row, kind="stable")[:3]) for row in q @ docs.T]


@pytest.mark.parametrize("path", _fallback_paths())
def test_forced_path_agrees_with_the_fast_path(path, fast, monkeypatch):
    encoder, texts, docs, queries = fast
    backend, precision = path.split("-")
    if precision == "bf16" and not dev.cpu_features().native_bf16:
        # emulated bf16 is slow: rank among each query's top-4 contenders only
        keep = sorted({int(i) for row in queries @ docs.T for i in np.argsort(-row)[:4]})
        texts, docs = [texts[i] for i in keep], docs[keep]
    forced = shipped_encoder(backend, precision, cache_size=0)  # fresh, on the forced path
    assert forced.path is not None and str(forced.path) == path
    assert forced.name == DEFAULT_ENCODER_NAME and path in repr(forced)
    got_docs, got_q = forced.encode(texts), forced.encode(QUERIES)
    cos = np.concatenate([(got_docs * docs).sum(1), (got_q * queries).sum(1)])
    assert cos.min() >= MIN_COSINE[precision], (forced.path, float(cos.min()))
    ref = queries @ docs.T
    for row, got in zip(ref, _top3(got_q, got_docs), strict=True):
        # the same top 3 up to near-ties: every document the forced path ranks in the top 3 scores, by the fast
        # path's embeddings, within TIE of that rank's score there (a tie broken the other way is not an error)
        want = np.sort(row)[::-1][:3]
        assert all(row[g] >= want[i] - TIE for i, g in enumerate(got)), (forced.path, got, want)
    chunks = forced.encode_chunks(texts[:3], 2)  # chunk embeddings work on every path
    assert chunks.shape == (3, 3, 384)
    assert (chunks[:, 0] * docs[:3]).sum(1).min() >= MIN_COSINE[precision]


def test_torch_fp32_and_fused_onnx_fp32_agree(fast):
    pytest.importorskip("onnxruntime")
    encoder, texts, docs, _ = fast
    torch_fp32 = shipped_encoder("torch", "fp32")
    fused = OnnxMiniLMEncoder(precision="fp32")
    a, b = torch_fp32.encode(texts[:12]), fused.encode(texts[:12])
    assert (a * b).sum(1).min() > 0.99999
    assert str(fused.path) == "onnx-fp32" and "onnx-fp32" in repr(fused)


def test_openvino_path_matches_torch_fp32_in_every_output(fast):
    if ("openvino", "bf16") not in shipped_paths():
        pytest.skip("no OpenVINO bf16 path here (needs openvino and a CPU with native bf16)")
    from concurrent.futures import ThreadPoolExecutor

    _, texts, _, _ = fast
    ov = shipped_encoder("openvino", "bf16")
    ref = shipped_encoder("torch", "fp32")
    assert str(ov.path) == "openvino-bf16" and "openvino-bf16" in repr(ov)
    a, b = ov.encode(texts), ref.encode(texts)
    assert a.dtype == np.float32 and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(1).min() >= MIN_COSINE["bf16"]
    for got, want in zip(ov.token_states(texts[:4]), ref.token_states(texts[:4]), strict=True):
        assert got.shape == want.shape and np.abs(got - want).max() < 0.05  # bf16 products, fp32 states
    one = ov.encode(QUERIES[:1])  # one text: a batch of one with no padding gives the same row
    assert (one[0] * ov.encode(QUERIES)[0]).sum() > 0.9999
    with ThreadPoolExecutor(4) as pool:  # concurrent calls share one compiled model safely
        rows = list(pool.map(lambda t: ov.encode([t])[0], texts[:16]))
    assert np.allclose(np.stack(rows), ov.encode(texts[:16]), atol=2e-3)
    again = pickle.loads(pickle.dumps(ov))  # pickles as its recipe, rebuilt on the same path
    assert str(again.path) == "openvino-bf16"
    assert np.allclose(again.encode(texts[:3]), ov.encode(texts[:3]), atol=1e-5)


def test_openvino_fp32_with_overrides_equals_torch_fp32(fast):
    pytest.importorskip("openvino")
    from latentrag.models.late_interaction import LateInteractionScore
    from latentrag.openvino_encoder import OpenVinoMiniLMEncoder

    _, texts, _, _ = fast
    tuned = LateInteractionScore.load().overrides  # the reranker's fine-tuned last layer
    with pytest.raises(InvalidInputError, match="needs a name of its own"):
        OpenVinoMiniLMEncoder(precision="fp32", overrides=tuned)
    ov = OpenVinoMiniLMEncoder(precision="fp32", overrides=tuned, name="tuned-minilm")
    ref = shipped_encoder("torch", "fp32", overrides=tuned, name="tuned-minilm")
    plain = shipped_encoder("torch", "fp32")
    assert str(ov.path) == "openvino-fp32" and ov.name == "tuned-minilm"
    a, b = ov.encode(texts[:12]), ref.encode(texts[:12])
    assert (a * b).sum(1).min() > 0.99999  # the same fp32 model under another runtime
    assert (a * plain.encode(texts[:12])).sum(1).min() < 0.999  # and the overrides did change it
    again = pickle.loads(pickle.dumps(ov))
    assert again.name == "tuned-minilm" and np.allclose(again.encode(texts[:3]), a[:3], atol=1e-5)


def test_openvino_int8_runs_int8_products_near_fp32_and_says_what_it_needs(fast, tmp_path):
    pytest.importorskip("openvino")
    from safetensors.numpy import save_file

    from latentrag import ModelLoadError
    from latentrag.models.late_interaction import LateInteractionScore
    from latentrag.openvino_encoder import OpenVinoMiniLMEncoder, read_int8_ranges

    _, texts, _, _ = fast
    score = LateInteractionScore.load()  # the shipped reranker: tuned last layer and its calibrated ranges
    assert score.int8_ranges is not None and len(read_int8_ranges(score.int8_ranges)) == 36
    with pytest.raises(InvalidInputError, match="needs int8_ranges"):
        OpenVinoMiniLMEncoder(precision="int8", overrides=score.overrides, name="tuned-minilm")
    q8 = shipped_encoder("openvino", "int8", overrides=score.overrides, name="tuned-minilm",
                         int8_ranges=score.int8_ranges)
    ref = shipped_encoder("torch", "fp32", overrides=score.overrides, name="tuned-minilm")
    if dev.cpu_features().int8_dot:
        assert str(q8.path) == "openvino-int8"  # the runtime really multiplies in int8
    a, b = q8.encode(texts[:12]), ref.encode(texts[:12])
    assert 0.97 < (a * b).sum(1).min() < 0.99999  # close to fp32, and not fp32
    again = pickle.loads(pickle.dumps(q8))
    assert str(again.path) == str(q8.path) and np.allclose(again.encode(texts[:3]), a[:3], atol=1e-5)
    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.layer.0.attention.self.query": np.array([1.0, -1.0], dtype=np.float32)}, str(bad))
    with pytest.raises(ModelLoadError, match="low < high"):
        read_int8_ranges(bad)
    part = tmp_path / "part.safetensors"
    save_file({"encoder.layer.0.attention.self.query": np.array([-1.0, 1.0], dtype=np.float32)}, str(part))
    with pytest.raises(ModelLoadError, match="no range for layer"):
        OpenVinoMiniLMEncoder(precision="int8", overrides=score.overrides, name="tuned-minilm", int8_ranges=part)


def test_openvino_build_sends_no_telemetry(monkeypatch):
    pytest.importorskip("openvino")
    telemetry = pytest.importorskip("openvino_telemetry")
    from latentrag.openvino_encoder import OpenVinoMiniLMEncoder

    def no_telemetry(*args, **kwargs):
        raise AssertionError("building the encoder sent OpenVINO usage telemetry")

    monkeypatch.setattr(telemetry.Telemetry, "send_event", no_telemetry)  # ov.convert_model sends 7 events
    assert OpenVinoMiniLMEncoder(precision="fp32").encode(["Who directed Jaws?"]).shape == (1, 384)


def test_openvino_backend_says_what_it_needs_and_auto_falls_back(monkeypatch, caplog):
    import latentrag.encoders as encoders_mod

    monkeypatch.setattr(dev, "cpu_features", lambda: features("avx2"))
    assert all(b != "openvino" for b, _ in shipped_paths())  # no native bf16: never taken automatically
    if encoders_mod._installed("openvino"):
        assert shipped_paths("openvino") == [("openvino", "fp32")]  # asked for by name: its fp32 path
    with pytest.raises(InvalidInputError, match="backend must be 'auto', 'openvino', 'onnx' or 'torch'"):
        default_encoder(backend="gpu")
    real = encoders_mod._installed
    monkeypatch.setattr(encoders_mod, "_installed", lambda *m: "openvino" not in m and real(*m))
    with pytest.raises(ImportError, match="backend='openvino' needs the openvino package"):
        shipped_paths("openvino")
    monkeypatch.undo()
    if ("openvino", "bf16") not in shipped_paths():
        return
    import latentrag.openvino_encoder as ov_mod

    def broken(**kwargs):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(ov_mod, "OpenVinoMiniLMEncoder", broken)
    with caplog.at_level(logging.WARNING, logger="latentrag.encoders"):
        enc = shipped_encoder()  # auto: the next path, with a warning
    assert str(enc.path) == "torch-bf16" and "OpenVINO bf16 path failed to build" in caplog.text
    with pytest.raises(RuntimeError, match="no such kernel"):
        shipped_encoder("openvino")  # asked for by name: the error itself


def test_default_encoder_follows_the_override(monkeypatch):
    monkeypatch.setenv(dev.ENV_PRECISION, "fp32")
    enc = default_encoder()
    assert enc.path is not None and enc.path.precision == "fp32" and default_encoder() is enc
    monkeypatch.delenv(dev.ENV_PRECISION)
    assert default_encoder().path is not None


@pytest.mark.skipif(not any(p == "int8" for _, p in shipped_paths()), reason="int8 ONNX (latentrag[onnx]) missing")
def test_stores_built_on_one_path_load_on_another(tmp_path, corpus, monkeypatch):
    texts = [f"{d['title']}: {d['text']}" for d in corpus[:10]]
    int8 = OnnxMiniLMEncoder(precision="int8")
    FaissStore.from_texts(texts, ids=[d["id"] for d in corpus[:10]], encoder=int8).save(tmp_path / "s")
    other = shipped_encoder("auto", "fp32")
    store = FaissStore.load(tmp_path / "s", encoder=other)
    assert store.encoder is other and store.search(other.encode(["Who directed Jaws?"]), 1)[0][0].id == "jaws"
    store.save(tmp_path / "t")  # and back: a store saved with the fp32 path loads with int8
    assert FaissStore.load(tmp_path / "t", encoder=int8).encoder is int8


def test_path_survives_pickling():
    path = dev.ExecutionPath("onnx", "fp32", 2, "test")
    assert pickle.loads(pickle.dumps(path)) == path


# ------------------------------------------------------------------ the cross-encoder's paths


RERANK_Q = "Who directed the film Jaws?"


def test_reranker_paths_agree(corpus, encoder, monkeypatch):
    from latentrag.compressors import CrossEncoderReranker

    texts = [f"{d['title']}: {d['text']}" for d in corpus[: 16 if dev.cpu_features().native_bf16 else 8]]
    monkeypatch.delenv(dev.ENV_PRECISION, raising=False)
    fast_rr = CrossEncoderReranker()  # the default scores with the shipped MiniLM on the encoder's path
    want = np.asarray(fast_rr.logits(RERANK_Q, texts))
    want_top = list(np.argsort(-np.asarray(fast_rr.score(RERANK_Q, texts)))[:3])
    assert str(fast_rr.path) in repr(fast_rr) and fast_rr.path == fast_rr.encoder.path
    forced = [CrossEncoderReranker(backend="torch", precision="fp32"),  # the plain torch path
              CrossEncoderReranker(backend="torch", precision="bf16")]
    monkeypatch.setenv(dev.ENV_PRECISION, "bf16")
    forced.append(CrossEncoderReranker())  # the first bf16 path offered (OpenVINO where it is installed)
    first_bf16 = next(f"{b}-{p}" for b, p in shipped_paths() if p == "bf16")
    assert [str(r.path) for r in forced] == ["torch-fp32", "torch-bf16", first_bf16]
    for rr in forced:
        got = np.asarray(rr.logits(RERANK_Q, texts))  # MaxSim in [-1, 1]
        # another runtime or precision; int8 products (the default where the CPU has int8 dot products) move
        # MaxSim by up to about 0.01 on these texts
        tolerance = 1e-3 if str(rr.path) == str(fast_rr.path) else 0.03 if "int8" in str(fast_rr.path) else 0.01
        assert np.abs(got - want).max() < tolerance, rr.path
        top = list(np.argsort(-np.asarray(rr.score(RERANK_Q, texts)))[:3])
        assert top[0] == want_top[0] and set(top) == set(want_top), rr.path
    with pytest.raises(InvalidInputError, match="backend must be"):
        CrossEncoderReranker(backend="gpu")
