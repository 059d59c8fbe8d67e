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


def test_int8_calibration_writes_ranges_the_score_loads(tmp_path, data_dir):
    """``latentrag train int8-ranges`` on a copy of the shipped score: one range per linear layer (36), each
    around zero, named in config.json with the command that wrote it; a missing file is a clear error."""
    import json
    import shutil

    from latentrag import ModelLoadError
    from latentrag.models.late_interaction import SHIPPED_DIR, LateInteractionScore
    from latentrag.openvino_encoder import read_int8_ranges
    from latentrag.training.int8_ranges import main

    folder = tmp_path / "score"
    shutil.copytree(SHIPPED_DIR, folder)
    assert main(["--score", str(folder), "--data", str(data_dir), "--rows", "60"]) == 0
    score = LateInteractionScore.load(folder)
    ranges = read_int8_ranges(score.int8_ranges)
    assert len(ranges) == 36 and all(lo < 0 < hi for lo, hi in ranges.values())
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["encoder_int8_ranges"] == "int8_ranges.safetensors"
    assert cfg["int8_calibration"]["command"] == f"latentrag train int8-ranges --score {folder} --rows 60"
    shipped = read_int8_ranges(LateInteractionScore.load().int8_ranges)
    assert set(shipped) == set(ranges) and shipped != ranges  # fewer calibration rows: other ranges
    (folder / "int8_ranges.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="names int8 ranges 'int8_ranges.safetensors', which is not in that"):
        LateInteractionScore.load(folder)
