"""The reranker's last-layer tuning (``latentrag train late-interaction``), on a few real texts."""

from __future__ import annotations

import numpy as np
import pytest

from latentrag.models.late_interaction import maxsim

Q = "Which singer was born in Stone Town?"
TEXTS = ["Freddie Mercury was a British singer born Farrokh Bulsara in Stone Town, Zanzibar.",
         "David Bowie was an English singer born in Brixton, London.",
         "Stone Town is the old part of Zanzibar City, the main city of Zanzibar in Tanzania.",
         "John Lennon was an English singer born in Liverpool."]
LABELS = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def inputs():
    from latentrag.training.late_interaction import last_layer_inputs

    return last_layer_inputs([Q, *TEXTS], None)


def _overridden(tmp_path, tensors):
    from safetensors.numpy import save_file

    from latentrag.encoders import shipped_encoder

    path = tmp_path / "last_layer.safetensors"
    save_file(tensors, str(path))
    return shipped_encoder(backend="torch", precision="fp32", overrides=path, name="test/tuned")


def test_untrained_layer_reproduces_the_shipped_encoder(inputs, tmp_path):
    from latentrag.encoders import shipped_encoder
    from latentrag.training.late_interaction import tune_last_layer

    model, rows = inputs
    assert set(rows) == {Q, *TEXTS} and rows[Q].shape[1] == 384
    tensors = tune_last_layer(model, rows, [(Q, TEXTS, LABELS)], epochs=0, lr=1e-5)
    assert tensors and all(k.startswith("encoder.layer.5.") for k in tensors)
    tuned = _overridden(tmp_path, tensors).token_states([Q, TEXTS[0]])
    shipped = shipped_encoder(backend="torch", precision="fp32").token_states([Q, TEXTS[0]])
    for a, b in zip(tuned, shipped, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_tuning_moves_maxsim_towards_the_labels(inputs, tmp_path):
    from latentrag.encoders import shipped_encoder
    from latentrag.training.late_interaction import tune_last_layer

    model, rows = inputs
    before_states = shipped_encoder(backend="torch", precision="fp32").token_states([Q, *TEXTS])
    before = maxsim(before_states[0], before_states[1:])
    tensors = tune_last_layer(model, rows, [(Q, TEXTS, LABELS)], epochs=20, lr=1e-4)
    after_states = _overridden(tmp_path, tensors).token_states([Q, *TEXTS])
    after = maxsim(after_states[0], after_states[1:])
    margin = lambda s: s[0] - max(s[1:])  # noqa: E731
    assert margin(after) > margin(before) + 0.01 and int(np.argmax(after)) == 0


def test_two_top_layers_tune_from_the_input_of_the_lower_one(tmp_path):
    from latentrag.encoders import shipped_encoder
    from latentrag.training.late_interaction import last_layer_inputs, tune_last_layer

    model, rows = last_layer_inputs([Q, *TEXTS], None, layers=2)
    tensors = tune_last_layer(model, rows, [(Q, TEXTS, LABELS)], epochs=0, lr=1e-5, layers=2)
    assert {k.split(".")[2] for k in tensors} == {"4", "5"}
    tuned = _overridden(tmp_path, tensors).token_states([Q, TEXTS[0]])
    shipped = shipped_encoder(backend="torch", precision="fp32").token_states([Q, TEXTS[0]])
    for a, b in zip(tuned, shipped, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_scaled_layers_and_their_quick_states(inputs):
    from latentrag.encoders import shipped_encoder
    from latentrag.training.late_interaction import extrapolate, top_layer_states, tune_last_layer

    model, rows = inputs
    tuned = tune_last_layer(model, rows, [(Q, TEXTS, LABELS)], epochs=3, lr=1e-4)
    shipped = extrapolate(model, tuned, 0.0)
    key = "encoder.layer.5.output.dense.weight"
    assert not np.allclose(shipped[key], tuned[key])
    np.testing.assert_allclose(extrapolate(model, tuned, 1.0)[key], tuned[key], atol=1e-7)
    np.testing.assert_allclose(extrapolate(model, tuned, 2.0)[key] - tuned[key], tuned[key] - shipped[key], atol=1e-6)
    quick = top_layer_states(model, rows, shipped)  # the cached inputs through the shipped layer, bf16
    full = shipped_encoder(backend="torch", precision="fp32").token_states([Q, TEXTS[0]])
    for text, ref in zip([Q, TEXTS[0]], full, strict=True):
        cos = (quick[text] * ref).sum(1) / np.linalg.norm(quick[text], axis=1) / np.linalg.norm(ref, axis=1)
        assert quick[text].shape == ref.shape and cos.min() > 0.99
