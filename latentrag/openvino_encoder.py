"""The shipped all-MiniLM-L6-v2 compiled by OpenVINO for this CPU: the bf16 path of :func:`default_encoder`
where the CPU has native bf16 and ``openvino`` is installed.

The Hugging Face model is traced once per encoder (about a second) and compiled with OpenVINO's bf16
inference precision, whose fused attention and layer kernels beat torch's bf16 path on the same weights
(``benchmarks/speed.py``: about 1.4x the passages/s of torch bf16 on 2 AVX512-BF16 cores, minimum cosine
to fp32 0.9999). Tokenisation and mean pooling are the same as the ONNX Runtime path
(:class:`~latentrag.encoders.HiddenStatesEncoder`).

``precision="int8"`` runs the encoder layers' 36 matrix products on int8 (static quantization): each
product's weights are rounded per output channel (symmetric, 127 levels), and its input is quantized per
tensor to 256 levels over a range measured once on calibration text and shipped beside the weights
(``int8_ranges``, :func:`read_int8_ranges`; ``latentrag train int8-ranges`` writes them). The runtime then
multiplies in int8 with int32 sums (VNNI dot products), and the rest (attention, normalisation, GELU) runs
as for bf16. The shipped reranker takes it: 1.5x its bf16 speed here, with nDCG@10 on TREC DL within noise
of fp32 (see its model card); its pooled embeddings move further from fp32 (cosine about 0.99), which is
why the retrieval encoder does not.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.device import ExecutionPath, take_path
from latentrag.device import threads as device_threads
from latentrag.encoders import (
    HiddenStatesEncoder,
    _installed,
    _name_from,
    _shipped_minilm_path,
    check_override_name,
    override_module,
)
from latentrag.errors import InvalidInputError, ModelLoadError, check_positive_int

#: The runtime prepares its kernels once per input shape (about 3 ms on 2 cores, as much as encoding one query),
#: so loading runs one query of each width up to this many tokens (most questions are shorter; about 0.2 s):
#: query latency is then steady from the first call (on 300 dev questions, warming 64 widths gave p95 6.5 ms
#: against 7.4 ms cold; padding queries to a few widths instead cost more than it saved).
QUERY_WIDTHS = 32
#: OpenVINO's names for the precisions this encoder offers (int8: what runs outside the int8 products).
_HINTS = {"bf16": "bf16", "fp32": "f32", "int8": "bf16"}


class OpenVinoMiniLMEncoder(HiddenStatesEncoder):
    """The shipped all-MiniLM-L6-v2 (or a sentence-transformers folder of a BERT model with plain mean pooling)
    under OpenVINO.

    ``precision``: ``"bf16"`` (OpenVINO's bf16 inference: matrix products in bf16, fast only on CPUs with
    native bf16; where the CPU has none the runtime keeps fp32, and :attr:`path` says so), ``"fp32"``, or
    ``"int8"`` (static int8 products over the calibrated input ranges in ``int8_ranges``, see the module
    docstring; the other operations as for bf16).
    ``overrides``: a safetensors file of tensors that replace the model's
    (:func:`~latentrag.encoders.read_overrides`); such an encoder is another model, so it needs a ``name`` of
    its own. Calls are serialised by a lock (one compiled model, one request); the runtime's own threads
    (``threads``, default :func:`latentrag.device.threads`) do the work. Each instance traces the model once.
    """

    default_batch_tokens = 8192
    #: A call costs the runtime little, so batches stay tight: on 100 DL20 candidates (mean 80 tokens) padding
    #: fell from 16% to 6% of the tokens and the pass took 0.95x the time of the default slack's (0.25).
    padding_slack = 0.05

    def __init__(
        self,
        *,
        precision: str = "bf16",
        model_path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        batch_size: int = 64,
        cache_size: int = 0,
        max_length: int = 256,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        overrides: str | os.PathLike[str] | None = None,
        int8_ranges: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size, max_batch_tokens=max_batch_tokens)
        if precision not in _HINTS:
            msg = f"OpenVinoMiniLMEncoder precision must be 'bf16', 'fp32' or 'int8', got {precision!r}."
            raise InvalidInputError(msg)
        if (precision == "int8") != (int8_ranges is not None):
            msg = (f"OpenVinoMiniLMEncoder: precision='int8' needs int8_ranges (the calibrated input ranges, "
                   f"latentrag train int8-ranges) and only it takes them; got precision={precision!r}, "
                   f"int8_ranges={int8_ranges!r}.")
            raise InvalidInputError(msg)
        check_override_name(overrides, name)
        if not _installed("openvino"):
            msg = "OpenVinoMiniLMEncoder needs the openvino package: pip install openvino"
            raise ImportError(msg)
        folder = Path(model_path) if model_path is not None else Path(_shipped_minilm_path())
        limit = _check_folder(folder)
        self._init_tokenizer(folder / "tokenizer.json", min(check_positive_int("max_length", max_length), limit))
        n_threads = check_positive_int("threads", threads) if threads else device_threads()
        model, self.dim = _traced_model(folder, overrides)
        if int8_ranges is not None:
            quantize_products(model, read_int8_ranges(int8_ranges))
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": n_threads}
        self._compiled = ov.Core().compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.name = name or _name_from(folder)
        # what the runtime really does: it keeps fp32 where the CPU has no bf16 instructions
        ran = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = "bf16" if "bf16" in ran or "bfloat16" in ran else "fp32"
        if precision == "int8" and _int8_products(self._compiled):
            self.precision = "int8"
        why = "requested" if self.precision == precision else f"{precision} requested; this CPU runs {self.precision}"
        self.path = take_path(self.name, ExecutionPath("openvino", self.precision, n_threads, why))
        self._recipe = ("openvino", (), {
            "precision": precision, "model_path": None if model_path is None else str(model_path), "name": name,
            "batch_size": batch_size, "cache_size": cache_size, "max_length": max_length, "threads": threads,
            "max_batch_tokens": max_batch_tokens, "overrides": None if overrides is None else str(overrides),
            "int8_ranges": None if int8_ranges is None else str(int8_ranges)})
        for width in range(1, min(QUERY_WIDTHS, self.max_length) + 1):  # one query's shapes, prepared now
            self._run(np.ones((1, width), dtype=np.int64), np.ones((1, width), dtype=np.int64))

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._lock:  # one request at a time; the outputs come back as a copy of its buffer
            out = self._request.infer({"input_ids": ids, "attention_mask": mask}, share_inputs=True)
            return np.asarray(out[0], dtype=np.float32)


def read_int8_ranges(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """The calibrated input range ``(low, high)`` of each linear layer, by its ``BertModel`` module name
    (``encoder.layer.0.attention.self.query``), from a safetensors file of 2-element tensors."""
    from latentrag.encoders import _read_safetensors

    try:
        tensors = _read_safetensors(path)
    except (OSError, ValueError) as exc:
        msg = f"could not read int8 ranges from {str(path)!r}: {exc}."
        raise ModelLoadError(msg) from exc
    out = {}
    for key, value in tensors.items():
        flat = np.asarray(value, dtype=np.float64).ravel()
        lo, hi = (float(flat[0]), float(flat[1])) if flat.size == 2 else (np.nan, np.nan)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            msg = (f"{str(path)!r}: the int8 range of {key!r} is {value.tolist()}; each must be a finite (low, high) "
                   "with low < high. Write the file again with latentrag train int8-ranges.")
            raise ModelLoadError(msg)
        out[key] = (lo, hi)
    return out


def quantize_products(model: Any, ranges: dict[str, tuple[float, float]]) -> int:
    """Rewrite the traced encoder's linear layers in place for static int8: weights as int8 constants with a
    per-output-channel fp32 scale, inputs through a 256-level FakeQuantize over ``ranges[module]`` (widened
    to include 0, so zero stays exact). The runtime fuses both into int8 products. Returns how many layers it
    rewrote; raises :class:`ModelLoadError` where a layer has no range or none is found (a runtime that names
    the traced nodes otherwise)."""
    import re

    from openvino import opset13 as ops

    def const(value: float) -> Any:
        return ops.constant(np.array(value, dtype=np.float32))

    done: list[str] = []
    for node in model.get_ordered_ops():
        found = re.search(r"__module\.inner\.(encoder\.layer\.\d+\.[\w.]+)/aten::linear/MatMul$",
                          node.get_friendly_name())
        weight = node.input_value(1).get_node() if node.get_type_name() == "MatMul" else None
        if found is None or weight is None or weight.get_type_name() != "Constant":
            continue
        name = found.group(1)
        if name not in ranges:
            msg = (f"the int8 ranges hold no range for layer {name!r}; write them for this model "
                   "(latentrag train int8-ranges).")
            raise ModelLoadError(msg)
        lo, hi = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        w = np.asarray(weight.get_data(), dtype=np.float32)
        axis = 1 if node.get_attributes()["transpose_b"] else 0  # the input-feature axis
        scale = np.maximum(np.abs(w).max(axis=axis, keepdims=True), 1e-8) / 127.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        node.input(1).replace_source_output(
            ops.multiply(ops.convert(ops.constant(q), "f32"), ops.constant(scale.astype(np.float32))).output(0))
        fq = ops.fake_quantize(node.input_value(0), const(lo), const(hi), const(lo), const(hi), 256)
        node.input(0).replace_source_output(fq.output(0))
        done.append(name)
    if not done:
        msg = "found no linear layer to quantize in the traced encoder; use precision='bf16'."
        raise ModelLoadError(msg)
    model.validate_nodes_and_infer_types()
    return len(done)


def _int8_products(compiled: Any) -> bool:
    """Whether the compiled model really multiplies in int8 (a runtime without int8 kernels keeps the layers
    in floating point, the fake quantization included)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "FullyConnected" and \
                info["runtimePrecision"].astype(str) in ("u8", "i8"):
            return True
    return False


def _check_folder(folder: Path) -> int:
    """Check that ``folder`` is a sentence-transformers BERT folder this encoder reproduces (a tokenizer.json,
    mean pooling and nothing after it); returns the model's longest input (its position limit)."""
    if not (folder / "tokenizer.json").is_file():
        msg = f"{str(folder)!r} holds no tokenizer.json; pass a sentence-transformers model folder."
        raise ModelLoadError(msg)
    modules = folder / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "") for m in json.loads(modules.read_text(encoding="utf-8"))]
        extra = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
        pooling = folder / "1_Pooling" / "config.json"
        modes = json.loads(pooling.read_text(encoding="utf-8")) if pooling.is_file() else {}
        other = [k for k, v in modes.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        if extra or other:
            msg = (f"{str(folder)!r} is not a mean-pooled encoder (modules {kinds}, pooling {other}); "
                   "OpenVinoMiniLMEncoder only reproduces mean pooling. Load it with SentenceTransformerEncoder.")
            raise ModelLoadError(msg)
    config = folder / "config.json"
    cfg = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    return int(cfg.get("max_position_embeddings", 512))


_trace_lock = threading.Lock()  # tracing changes process-wide logging and warning settings for its duration


def _traced_model(folder: Path, overrides: str | os.PathLike[str] | None) -> tuple[Any, int]:
    """The OpenVINO model of the BERT body in ``folder`` (fp32 weights, ``overrides`` applied), with dynamic
    batch and length; its output is the last layer's token states. Also returns the hidden size."""
    with _trace_lock:
        return _trace(folder, overrides)


def _trace(folder: Path, overrides: str | os.PathLike[str] | None) -> tuple[Any, int]:
    import openvino as ov
    import torch
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    try:
        body = AutoModel.from_pretrained(str(folder), attn_implementation="sdpa").eval()
    except (OSError, ValueError) as exc:
        msg = f"could not load a BERT model from {str(folder)!r}: {exc}."
        raise ModelLoadError(msg) from exc
    override_module(body, overrides)

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so the traced graph keeps the attention mask
    example = {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": mask}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # tracing reads every attribute, and the loss one logs a training note
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks (constant for BERT)
            # the PyTorch frontend directly, not ov.convert_model: that tool sends usage telemetry by default
            decoder = TorchScriptPythonDecoder(LastHidden(body), example_input=example)
            frontend = FrontEndManager().load_by_framework("pytorch")
            model = frontend.convert(frontend.load(decoder))
    finally:
        hf_logging.set_verbosity(verbosity)
    names = [p.get_any_name() for p in model.inputs]
    if sorted(names) != ["attention_mask", "input_ids"]:
        msg = f"the traced model's inputs are {names}, not input_ids and attention_mask; use backend='torch'."
        raise ModelLoadError(msg)
    model.reshape({name: ov.PartialShape([-1, -1]) for name in names})  # any batch, any length
    return model, int(body.config.hidden_size)
