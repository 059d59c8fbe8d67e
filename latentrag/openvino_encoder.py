"""The shipped all-MiniLM-L6-v2 compiled by OpenVINO for this CPU: the bf16 path of :func:`default_encoder`
where the CPU has native bf16 and ``openvino`` is installed.

The Hugging Face model is traced once per process (about a second) and compiled with OpenVINO's bf16
inference precision, whose fused attention and layer kernels beat torch's bf16 path on the same weights
(``benchmarks/speed.py``: about 1.4x the passages/s of torch bf16 on 2 AVX512-BF16 cores, minimum cosine
to fp32 0.9999). Tokenisation and mean pooling are the same as the ONNX Runtime path
(:class:`~latentrag.encoders.HiddenStatesEncoder`).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.device import ExecutionPath, take_path
from latentrag.device import threads as device_threads
from latentrag.encoders import (
    DEFAULT_ENCODER_NAME,
    HiddenStatesEncoder,
    _shipped_minilm_path,
    read_overrides,
)
from latentrag.errors import InvalidInputError, ModelLoadError, check_positive_int

#: The runtime prepares its kernels once per input shape (about 3 ms on 2 cores, as much as encoding one query),
#: so loading runs one query of each width up to this many tokens (most questions are shorter; about 0.2 s):
#: query latency is then steady from the first call (on 300 dev questions, warming 64 widths gave p95 6.5 ms
#: against 7.4 ms cold; padding queries to a few widths instead cost more than it saved).
QUERY_WIDTHS = 32
#: OpenVINO's names for the precisions this encoder offers.
_HINTS = {"bf16": "bf16", "fp32": "f32"}


def openvino_available() -> bool:
    """``openvino`` is importable (a dependency of latentrag; absent only in trimmed installs)."""
    return importlib.util.find_spec("openvino") is not None


class OpenVinoMiniLMEncoder(HiddenStatesEncoder):
    """The shipped all-MiniLM-L6-v2 (or a sentence-transformers folder of the same BERT family) under
    OpenVINO, with mean pooling.

    ``precision``: ``"bf16"`` (OpenVINO's bf16 inference: matrix products in bf16, fast only on CPUs with
    native bf16) or ``"fp32"``. ``overrides``: a safetensors file of tensors that replace the model's
    (:func:`~latentrag.encoders.read_overrides`). Calls are serialised by a lock (one compiled model, one
    request); the runtime's own threads (``threads``, default :func:`latentrag.device.threads`) do the work.
    """

    default_batch_tokens = 8192

    def __init__(
        self,
        *,
        precision: str = "bf16",
        model_path: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        cache_size: int = 0,
        max_length: int = 256,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        overrides: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size, max_batch_tokens=max_batch_tokens)
        if precision not in _HINTS:
            msg = f"OpenVinoMiniLMEncoder precision must be 'bf16' or 'fp32', got {precision!r}."
            raise InvalidInputError(msg)
        if not openvino_available():
            msg = "OpenVinoMiniLMEncoder needs the openvino package: pip install openvino"
            raise ImportError(msg)
        folder = Path(model_path) if model_path is not None else Path(_shipped_minilm_path())
        if not (folder / "tokenizer.json").is_file():
            msg = f"{str(folder)!r} holds no tokenizer.json; pass a sentence-transformers model folder."
            raise ModelLoadError(msg)
        self._init_tokenizer(folder / "tokenizer.json", max_length)
        n_threads = check_positive_int("threads", threads) if threads else device_threads()
        model, self.dim = _traced_model(folder, overrides)
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": n_threads}
        self._compiled = ov.Core().compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self.name = DEFAULT_ENCODER_NAME if model_path is None else folder.name
        self.precision = precision
        self.path = take_path(self.name, ExecutionPath("openvino", precision, n_threads, "requested"))
        self._recipe = ("openvino", (), {
            "precision": precision, "model_path": None if model_path is None else str(model_path),
            "batch_size": batch_size, "cache_size": cache_size, "max_length": max_length, "threads": threads,
            "max_batch_tokens": max_batch_tokens, "overrides": None if overrides is None else str(overrides)})

        for width in range(1, min(QUERY_WIDTHS, self.max_length) + 1):  # one query's shapes, prepared now
            self._run(np.ones((1, width), dtype=np.int64), np.ones((1, width), dtype=np.int64))

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with self._lock:  # one request; its output buffer is reused by the next call, so copy it out
            out = self._request.infer({"input_ids": ids, "attention_mask": mask})
            return np.array(out[0], dtype=np.float32, copy=True)


def _traced_model(folder: Path, overrides: str | os.PathLike[str] | None) -> tuple[Any, int]:
    """The OpenVINO model of the BERT body in ``folder`` (fp32 weights, ``overrides`` applied), with dynamic
    batch and length; its output is the last layer's token states. Also returns the hidden size."""
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
    if overrides is not None:
        state = body.state_dict()
        with torch.no_grad():
            for key, value in read_overrides(overrides, state).items():
                state[key].copy_(torch.from_numpy(value))

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
