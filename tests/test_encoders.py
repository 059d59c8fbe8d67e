import re

import numpy as np
import pytest
from conftest import run_in_threads

from latentrag import InvalidInputError, default_encoder
from latentrag.encoders import DEFAULT_ENCODER_NAME, EmbeddingCache, Encoder, OnnxMiniLMEncoder, load_encoder


def test_default_encoder_contract(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.name == DEFAULT_ENCODER_NAME and encoder.dim == 384
    out = encoder.encode(["a cat sat on the mat", "quantum chromodynamics"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert default_encoder() is encoder  # loaded once per process
    assert load_encoder("all-MiniLM-L6-v2") is encoder


def test_semantics_real_model(encoder):
    q, pos, neg = encoder.encode(["Where is the Eiffel Tower?", "The Eiffel Tower is in Paris.", "Bees make honey."])
    assert q @ pos > q @ neg + 0.2


def test_order_preserved_with_length_bucketing(encoder):
    texts = ["short", "a much longer sentence " * 20, "mid length sentence here"]
    batch = encoder.encode(texts)
    single = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-4)


def test_onnx_matches_torch_reference():
    torch_enc = default_encoder("torch", cache_size=0)
    onnx_enc = OnnxMiniLMEncoder()
    texts = ["Paris is the capital of France.", "The mitochondria is the powerhouse of the cell.", "x " * 300]
    cos = (torch_enc.encode(texts) * onnx_enc.encode(texts)).sum(axis=1)
    assert cos.min() > 0.998


def test_encode_chunks_whole_then_token_runs(encoder):
    from latentrag.encoders import pool_chunks

    texts = ["Jaws is a 1975 American thriller film directed by Steven Spielberg.", "hi", "x " * 400]
    out = encoder.encode_chunks(texts, 4)
    assert out.shape == (3, 5, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], encoder.encode(texts), atol=1e-5)  # row 0 is the passage embedding
    np.testing.assert_allclose(np.linalg.norm(out, axis=2), 1.0, atol=1e-5)
    # the runs differ from each other (they are different tokens), and "hi" (3 tokens) repeats its last run
    assert (out[0, 1] @ out[0, 4]) < 0.95
    np.testing.assert_array_equal(out[1, 4], out[1, 3])
    # the torch backend gives the same chunks as the ONNX one
    torch_out = default_encoder("torch", cache_size=0).encode_chunks(texts, 4)
    assert (torch_out * out).sum(-1).min() > 0.99
    pooled = pool_chunks(np.arange(12, dtype=np.float32).reshape(6, 2), 3)
    np.testing.assert_allclose(pooled[1] * np.linalg.norm([1, 2]), [1, 2], rtol=1e-5)  # mean of tokens 0 and 1


def test_cache_hits_and_eviction():
    cache = EmbeddingCache(2)
    keys = [EmbeddingCache.key(t) for t in "abc"]
    cache.put_many(keys, np.eye(3, dtype=np.float32))
    assert len(cache) == 2
    got = cache.get_many(keys)
    assert got[0] is None and got[2] is not None
    cache.clear()
    assert len(cache) == 0 and cache.get_many(keys[2:]) == [None]


def test_encode_rejects_bad_input(encoder):
    with pytest.raises(InvalidInputError, match="takes a list of texts, got a single str"):
        encoder.encode("hello")
    with pytest.raises(InvalidInputError, match=re.escape("texts[1] must be a str, got int")):
        encoder.encode(["ok", 3])
    assert encoder.encode([]).shape == (0, 384)


def test_thread_safe_concurrent_encode(encoder):
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]
    ref = encoder.encode(texts)
    results = run_in_threads(lambda: encoder.encode(texts))
    assert len(results) == 4
    for r in results:
        np.testing.assert_allclose(r, ref, atol=1e-5)


def test_load_encoder_bad_type():
    with pytest.raises(InvalidInputError, match="encoder must be None, a model name or path, or an Encoder, got int"):
        load_encoder(3)  # type: ignore[arg-type]


def test_load_encoder_default_with_other_options():
    enc = load_encoder(None, batch_size=4)
    assert enc.name == DEFAULT_ENCODER_NAME and enc.batch_size == 4
    assert enc.encode(["hello"]).shape == (1, 384)


def test_encoders_pickle_as_their_recipe(encoder):
    import pickle

    from latentrag.encoders import SentenceTransformerEncoder, _shipped_minilm_path, shipped_encoder

    assert pickle.loads(pickle.dumps(encoder)) is encoder  # the shipped default: the loaded object, no reload
    texts = ["Paris is in France.", "A much longer sentence about the rivers and bridges of Paris."]
    for enc in (shipped_encoder(batch_size=3), SentenceTransformerEncoder(_shipped_minilm_path(), batch_size=5)):
        again = pickle.loads(pickle.dumps(enc))
        assert type(again) is type(enc) and again.batch_size == enc.batch_size and again.name == enc.name
        assert str(again.path) == str(enc.path)
        np.testing.assert_allclose(again.encode(texts), enc.encode(texts), atol=1e-6)
