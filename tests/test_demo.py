"""``latentrag demo``: section selection and its errors, the uniform section signature, the one cache folder,
and the GGUF -> fp32 conversion that the demo's first run pays for. The full demo runs in test_cli_ingest.py."""

from __future__ import annotations

import importlib
import inspect
import io
from pathlib import Path

import numpy as np
import pytest

from latentrag import demo
from latentrag.cli import main as cli
from latentrag.errors import InvalidInputError, LatentRagError
from latentrag.paths import cache_dir


def test_unknown_section_is_an_error_that_lists_the_valid_ones(capsys):
    assert cli(["demo", "--sections", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: not even the store header
    assert captured.err.startswith("latentrag: error: unknown demo section(s) ['bogus']")
    for name in demo.SECTIONS:
        assert name in captured.err
    assert cli(["demo", "--sections", "dense", "nope"]) == 2
    assert "['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("sections", [[], ["bogus"], ["dense", "xrag,bogus"], [","]])
def test_check_sections_rejects_unknown_or_empty(sections):
    with pytest.raises(InvalidInputError, match="valid sections are: dense, multihop, rerank, tools, xrag") as err:
        demo.check_sections(sections)
    assert isinstance(err.value, LatentRagError) and isinstance(err.value, ValueError)
    with pytest.raises(InvalidInputError):
        demo.main(out=io.StringIO(), sections=sections)


def test_check_sections_keeps_the_order_given():
    assert demo.check_sections(None) == demo.SECTIONS == ["dense", "multihop", "rerank", "tools", "xrag"]
    assert demo.check_sections(["tools", "dense"]) == ["tools", "dense"]
    assert demo.check_sections(["xrag,dense", "dense"]) == ["xrag", "dense"]
    assert demo.check_sections("multihop") == ["multihop"]


@pytest.mark.parametrize("name", ["dense", "multihop", "rerank", "tools", "xrag"])
def test_every_section_is_run_store_out(name):
    run = importlib.import_module(f"latentrag.demos.{name}").run
    assert list(inspect.signature(run).parameters) == ["store", "out"]


def test_main_with_one_cheap_section_writes_its_header(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTRAG_CACHE", str(tmp_path))
    out = io.StringIO()
    assert demo.main(out=out, sections=["dense"]) == 0
    text = out.getvalue()
    assert text.startswith("latentrag demo: 57 passages")
    assert f"(cache: {tmp_path})" in text
    assert "\n== Dense retrieval (DenseRetriever, k=3) ==\n" in text
    assert "  jaws " in text and "== Multi-hop" not in text and "skipped" not in text
    assert "\ndemo finished in " in text and "dense " in text.rsplit("demo finished", 1)[1]
    assert (tmp_path / "demo-store" / "CURRENT").is_file()


def test_one_cache_folder(tmp_path, monkeypatch):
    from latentrag.readers import lm
    from latentrag.training.multihop import cache_root

    monkeypatch.setenv("LATENTRAG_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == lm.cache_dir() == demo.cache_dir() == cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("LATENTRAG_CACHE")
    assert cache_dir() == cache_root() == tmp_path / "xdg" / "latentrag"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == cache_root() == tmp_path / "home" / ".cache" / "latentrag"
    assert lm.cache_dir is cache_dir  # the old import path stays


# ------------------------------------------------------------------ the shipped LM's GGUF -> fp32 conversion
@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from latentrag.errors import ModelLoadError
    from latentrag.readers.lm import _gguf_path

    pytest.importorskip("gguf")
    try:
        return _gguf_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))


def test_gguf_reader_and_dequantisation_match_the_gguf_package(gguf_path):
    """Our block decoding gives bit-identical values to ``gguf.quants.dequantize`` (what transformers' GGUF
    loader uses) on the same bytes; the slow test below checks every tensor against that whole loader."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    from latentrag.readers.lm import GGUFFile

    ours = GGUFFile(gguf_path)
    meta = ours.metadata
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == len(meta["tokenizer.ggml.token_type"]) == 49152
    assert len(ours.tensor_info) == 2 + 9 * int(meta["llama.block_count"])  # embeddings, final norm, 9 per block
    assert ours.tensor_info["token_embd.weight"][0] == (49152, 576)
    kinds = {}
    for name, (_, kind, _) in ours.tensor_info.items():
        kinds.setdefault(kind, name)
    assert {GGMLQuantizationType(k).name for k in kinds} >= {"F32", "Q4_1", "Q8_0"}
    for kind, name in kinds.items():  # one tensor of each block type
        shape, _, offset = ours.tensor_info[name]
        qtype = GGMLQuantizationType(kind)
        block, size = GGML_QUANT_SIZES[qtype]
        rows, row_bytes = int(np.prod(shape[:-1])), shape[-1] // block * size
        raw = np.frombuffer(gguf_path.read_bytes(), dtype=np.uint8, count=rows * row_bytes, offset=offset)
        expected = np.asarray(dequantize(raw.reshape(rows, row_bytes), qtype), dtype=np.float32)
        got = ours.tensor(name)
        assert got.shape == shape and got.dtype == np.float32 and got.flags.writeable
        assert got.tobytes() == expected.tobytes(), name
        assert np.isfinite(got).all() and got.std() > 0


@pytest.mark.slow
def test_converted_cache_equals_transformers_gguf_loader(gguf_path, tmp_path):
    """The fp32 folder written by the converter holds the very weights, config and tokenizer that
    transformers' own GGUF loader builds (about 30 s: that loader is the slow path the converter replaces)."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentrag.readers.lm import GGUFFile, _load_folder, _write_cache, _write_converted

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    _write_converted(GGUFFile(gguf_path).to_fp32_tensors(), ours)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    _write_cache(model, tok, theirs)
    a, b = load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((ours / "tokenizer.json").read_text()) == json.loads((theirs / "tokenizer.json").read_text())
    ca, cb = (json.loads((f / "config.json").read_text()) for f in (ours, theirs))
    skip = {"_name_or_path", "_model_name_or_path"}
    assert {k: v for k, v in ca.items() if k not in skip} == {k: v for k, v in cb.items() if k not in skip}
    lm = _load_folder(ours)
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Where was Kurt Cobain born?"}],
                                           add_generation_prompt=True)
    assert ids == tok.apply_chat_template([{"role": "user", "content": "Where was Kurt Cobain born?"}],
                                          add_generation_prompt=True)


def test_rerank_section_shows_the_reranker_and_the_filter_being_right(tmp_path, monkeypatch):
    """What a newcomer sees: the reranker lifts the passage that answers (Freddie Mercury, born in Stone
    Town, which dense search ranked second) to the top, the filter keeps it, and for a question no passage
    answers the filter keeps nothing."""
    monkeypatch.setenv("LATENTRAG_CACHE", str(tmp_path))
    out = io.StringIO()
    assert demo.main(out=out, sections=["rerank"]) == 0
    text = out.getvalue()
    stone = text.split("Q: Which singer was born in Stone Town?")[1].split("\nQ: ")[0]
    assert "dense top-5 of 20: ['bowie', 'mercury'" in stone and "reranked top-5   : ['mercury'" in stone
    assert "kept by the filter: [('mercury'" in stone
    assert "kept by the filter: nothing" in text.split("liquid nitrogen on Mars?")[1]
