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
