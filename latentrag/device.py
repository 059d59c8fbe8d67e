"""The one place that knows the CPU: instruction-set features, thread counts, and which execution path
(backend and precision) each model takes.

A model offers the paths it can run, fastest first within each precision, and :func:`choose_path` picks
one: the first ``bf16`` or ``bf16-mixed`` path offered (OpenVINO, then torch, for the shipped encoder; the
LM offers ``bf16-mixed`` first) where the CPU has native bf16 matrix instructions (AMX or AVX-512 BF16;
elsewhere torch emulates bf16, many times slower than fp32), else the first ``fp32`` path offered (the fused
ONNX Runtime graph when ``onnxruntime`` is installed). ``int8`` is picked on its own only for a model that
says its int8 path was measured to hold its quality (``int8_auto=True``: the shipped reranker's calibrated
OpenVINO int8 encoder, whose nDCG@10 matches fp32), and only where the CPU has int8 dot products (VNNI or AMX);
elsewhere it is taken when asked for: the int8 retrieval encoder measured a minimum cosine of 0.9988 to fp32,
under the 0.999 bound.

Overrides, for tests and for users who know their machine better:

- ``LATENTRAG_PRECISION=fp32|bf16|bf16-mixed|int8`` forces that precision on every model that offers it (``auto`` or
  unset: the rule above). A precision a model does not offer falls back to the rule, with a warning.
- ``LATENTRAG_THREADS=N`` sets the threads of ONNX Runtime sessions, OpenVINO models and torch (default: the physical
  cores this process may run on).

Each model logs the path it took once (logger ``latentrag.device``, level INFO).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from latentrag.errors import InvalidInputError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "bf16-mixed", "int8")
#: the precisions that run bf16 products (emulated, so slow, on CPUs without native bf16)
BF16_PRECISIONS = ("bf16", "bf16-mixed")
ENV_PRECISION = "LATENTRAG_PRECISION"
ENV_THREADS = "LATENTRAG_THREADS"
_CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers for inference. ``flags`` are the kernel's (``/proc/cpuinfo``); the ``torch_*``
    fields are torch's own view (None where torch does not say)."""

    model_name: str
    flags: frozenset[str]
    logical_cpus: int
    physical_cores: int
    torch_capability: str | None = None
    torch_amx: bool | None = None
    torch_avx512_bf16: bool | None = None
    torch_vnni: bool | None = None
    torch_mkldnn_bf16: bool | None = None

    @property
    def amx_bf16(self) -> bool:
        return "amx_bf16" in self.flags or bool(self.torch_amx)

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags or bool(self.torch_avx512_bf16)

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags) or bool(self.torch_vnni)

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX int8)."""
        return self.vnni or "amx_int8" in self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix products run in hardware (AMX or AVX-512 BF16), and torch's oneDNN can use them."""
        return (self.amx_bf16 or self.avx512_bf16) and self.torch_mkldnn_bf16 is not False

    @property
    def isa(self) -> str:
        """The best matrix instruction set, in words: ``AMX-BF16``, ``AVX512-BF16``, ``AVX512``, ``AVX2``, ..."""
        if self.amx_bf16:
            return "AMX-BF16"
        if self.avx512_bf16:
            return "AVX512-BF16"
        if "avx512f" in self.flags or (self.torch_capability or "").startswith("AVX512"):
            return "AVX512-VNNI" if self.vnni else "AVX512"
        if "avx2" in self.flags or self.torch_capability == "AVX2":
            return "AVX2-VNNI" if self.vnni else "AVX2"
        return self.torch_capability or "baseline"

    def summary(self) -> dict[str, object]:
        return {"model": self.model_name, "isa": self.isa, "native_bf16": self.native_bf16, "vnni": self.vnni,
                "torch_capability": self.torch_capability, "logical_cpus": self.logical_cpus,
                "physical_cores": self.physical_cores, "threads": threads()}


def parse_cpuinfo(text: str, allowed: set[int] | None = None) -> tuple[str, frozenset[str], int, int]:
    """``(model name, flags, logical CPUs, physical cores)`` from ``/proc/cpuinfo`` text, counting only the
    processors in ``allowed`` (None: all). Flags are those of the first counted processor."""
    model, flags = "", frozenset[str]()
    logical = 0
    cores: set[tuple[str, str]] = set()
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        try:
            proc = int(fields["processor"])
        except ValueError:
            continue
        if allowed is not None and proc not in allowed:
            continue
        logical += 1
        if not flags:
            flags = frozenset(fields.get("flags", "").split())
            model = fields.get("model name", "")
        cores.add((fields.get("physical id", "0"), fields.get("core id", str(proc))))
    return model, flags, logical, len(cores) or logical


def _torch_view() -> dict[str, object]:
    try:
        import torch
    except ImportError:
        return {}

    def ask(fn: str) -> bool | None:
        f = getattr(torch.cpu, fn, None)
        try:
            return bool(f()) if callable(f) else None
        except Exception:  # noqa: BLE001 - a private probe that may change between torch versions
            return None

    try:
        capability: str | None = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001
        capability = None
    try:
        mkldnn_bf16: bool | None = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        mkldnn_bf16 = None
    return {"torch_capability": capability, "torch_amx": ask("_is_amx_tile_supported"),
            "torch_avx512_bf16": ask("_is_avx512_bf16_supported"), "torch_vnni": ask("_is_vnni_supported"),
            "torch_mkldnn_bf16": mkldnn_bf16}


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once per process)."""
    try:
        allowed: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    try:
        with open(_CPUINFO, encoding="utf-8", errors="replace") as fh:
            model, flags, logical, physical = parse_cpuinfo(fh.read(), allowed)
    except OSError:  # not Linux: torch's view alone
        model, flags = "", frozenset()
        logical = len(allowed) if allowed else (os.cpu_count() or 1)
        physical = logical
    return CpuFeatures(model, flags, max(logical, 1), max(physical, 1), **_torch_view())  # type: ignore[arg-type]


def threads() -> int:
    """Threads for one inference call: ``$LATENTRAG_THREADS``, else the physical cores this process may use."""
    raw = os.environ.get(ENV_THREADS, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            msg = f"{ENV_THREADS} must be a positive integer, got {raw!r}; unset it to use the physical cores."
            raise InvalidInputError(msg)
        return n
    return cpu_features().physical_cores


def requested_precision(precision: str | None = None) -> str | None:
    """The precision asked for: ``precision`` unless it is None/"auto", else ``$LATENTRAG_PRECISION``
    (None: nothing asked, the automatic rule decides)."""
    for source, value in (("precision", precision), (ENV_PRECISION, os.environ.get(ENV_PRECISION))):
        if value is None:
            continue
        v = str(value).strip().lower()
        if v in ("", "auto"):
            continue
        if v not in PRECISIONS:
            msg = f"{source} must be one of auto, {', '.join(PRECISIONS)}; got {value!r}."
            raise InvalidInputError(msg)
        return v
    return None


@dataclass(frozen=True)
class ExecutionPath:
    """How one model runs: ``backend`` ("torch", "onnx" or "openvino"), ``precision``, ``threads`` and why it
    was chosen."""

    backend: str
    precision: str
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.backend}-{self.precision}"


_logged: set[tuple[str, str]] = set()
_log_lock = threading.Lock()
_torch_threads_set = False


def choose_path(model: str, offered: Sequence[tuple[str, str]], precision: str | None = None, *,
                int8_auto: bool = False) -> ExecutionPath:
    """Pick one of ``offered`` ``(backend, precision)`` paths for ``model`` (see the module docstring).

    ``offered`` is in order of preference within a precision (e.g. the fused ONNX fp32 graph before torch
    fp32). ``precision`` (or ``$LATENTRAG_PRECISION``) forces a precision when the model offers it.
    ``int8_auto``: the model's int8 path holds its quality, so the automatic rule takes it first where the CPU
    has int8 dot products.
    """
    if not offered:
        msg = f"{model} offers no execution path."
        raise InvalidInputError(msg)
    cpu = cpu_features()
    n = threads()
    want = requested_precision(precision)
    if want is not None:
        for backend, prec in offered:
            if prec == want:
                source = "requested" if precision not in (None, "auto") else f"{ENV_PRECISION}={want}"
                if prec in BF16_PRECISIONS and backend == "torch" and not cpu.native_bf16:
                    source += f"; no native bf16 on this CPU ({cpu.isa}): emulated, several times slower than fp32"
                return take_path(model, ExecutionPath(backend, prec, n, source))
        logger.warning("%s has no %s path (it offers %s); choosing automatically", model, want,
                       ", ".join(f"{b}-{p}" for b, p in offered))
    if int8_auto and cpu.int8_dot:
        for backend, prec in offered:
            if prec == "int8":
                why = f"int8 dot products ({cpu.isa}); its int8 path was measured to hold its quality"
                return take_path(model, ExecutionPath(backend, prec, n, why))
    if cpu.native_bf16:
        for backend, prec in offered:
            if prec in BF16_PRECISIONS:
                return take_path(model, ExecutionPath(backend, prec, n, f"native bf16 ({cpu.isa})"))
    for backend, prec in offered:
        if prec == "fp32":
            why = "no native bf16" if not cpu.native_bf16 else "no bf16 path"
            return take_path(model, ExecutionPath(backend, prec, n, f"{why} ({cpu.isa})"))
    backend, prec = offered[0]
    return take_path(model, ExecutionPath(backend, prec, n, "only path offered"))


def take_path(model: str, path: ExecutionPath) -> ExecutionPath:
    """Record that ``model`` runs on ``path``: logs it once per process (and applies ``$LATENTRAG_THREADS`` to
    torch), then returns ``path``."""
    global _torch_threads_set
    if path.backend == "torch" and os.environ.get(ENV_THREADS) and not _torch_threads_set:
        import torch

        torch.set_num_threads(path.threads)
        _torch_threads_set = True
    key = (model, str(path))
    with _log_lock:
        first = key not in _logged
        _logged.add(key)
    if first:
        level = logging.WARNING if "emulated" in path.reason else logging.INFO
        logger.log(level, "%s runs %s on %d threads (%s)", model, path, path.threads, path.reason)
    return path
