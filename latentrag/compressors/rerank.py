"""``CrossEncoderReranker``: re-score (query, passage) pairs, fast on a CPU.

The shipped default (``model=None``, :data:`LATE_INTERACTION_NAME`) scores with one MiniLM pass over the
query and the candidates: the shipped all-MiniLM-L6-v2 whose last layer (of six) was fine-tuned for late
interaction on the labelled lists of seven sources (``last_layer.safetensors`` beside the score). From the
token states come the pooled cosine (mean pooling) and MaxSim (``mean_i max_j cos(q_i, d_j)``, ColBERT's late
interaction), and BM25 over the candidates comes from document frequencies shipped beside it. The ranking
score is a per-query mix of z-scores, ``a z(cosine) + b z(maxsim) + c z(bm25)``
(:mod:`latentrag.models.late_interaction`, ``latentrag train late-interaction``: the layer is trained and
the weights fitted there, with fold models that leave DL20 or DL21 out for the benchmark). It replaced the
cross-encoder trained in this project, which ranked below the bi-encoder on its own, needed the bi-encoder
pass besides its own and cost twice as much for no better mix (``benchmarks/rerank.py``); that model still
loads as ``CrossEncoderReranker(CROSS_ENCODER_NAME)``, and a score folder written by ``latentrag train
late-interaction --out DIR`` loads as ``CrossEncoderReranker(DIR)``. Hits' stored ``vector`` is not needed by
the default (the cosine comes from its own pass); the cross-encoder's mix reuses it.

Speed comes from the execution path :mod:`latentrag.device` picks for this CPU (``precision="auto"``). The
default's encoder runs on OpenVINO int8 where the CPU has int8 dot products (VNNI, AMX) and ``openvino`` is
installed: static int8 matrix products over input ranges calibrated once and shipped beside the score
(``int8_ranges.safetensors``, ``latentrag train int8-ranges``), about 1.5x its bf16 speed, with nDCG@10 on
TREC DL20 and DL21 within noise of fp32 (``benchmarks/speed.py``, ``benchmarks/rerank.py``). Elsewhere, and
for a cross-encoder: bf16 where the CPU has native bf16 (AMX, AVX-512 BF16: the default's encoder compiled by
OpenVINO, or under torch without ``openvino``; a cross-encoder under torch), else one fused fp32 ONNX Runtime
graph built from the same weights (when ``onnxruntime`` is installed), else fp32 torch. Texts are sorted by
token length and batched so padding stays small (length bucketing). For a cross-encoder, each thread
tokenizes with its own copy of the Rust tokenizer, so concurrent calls never hit the "Already borrowed"
error of a shared one. ``quantize=True`` (or ``precision="int8"``) asks for int8: the default's OpenVINO int8
path, or PyTorch dynamic quantization for a cross-encoder (never picked on its own).

Mixed scores rank one query's candidates; they are not comparable across queries, so ``compress`` also
records the raw score (the MaxSim, or a cross-encoder's logit) as ``metadata["rerank_logit"]`` and the
cosine as ``metadata["rerank_cosine"]``, which is what :class:`~latentrag.compressors.RelevanceFilter`
calibrates. Any Hugging Face ``*ForSequenceClassification`` cross-encoder
(``cross-encoder/ms-marco-MiniLM-L-6-v2``) or an ONNX export loads too, and scores with its logit alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from latentrag.compressors.base import BaseCompressor
from latentrag.device import ExecutionPath, choose_path, requested_precision, take_path
from latentrag.device import threads as device_threads
from latentrag.encoders import (
    DEFAULT_ENCODER_NAME,
    BaseEncoder,
    Encoder,
    check_backend,
    default_encoder,
    load_encoder,
    plan_batches,
    shipped_encoder,
)
from latentrag.errors import InvalidInputError, check_positive_int, check_query
from latentrag.models.cross_encoder import (
    LoadedCrossEncoder,
    bf16_copy,
    fuse_scores,
    fused_offer,
    fused_session,
    load_cross_encoder,
    logits_to_scores,
)
from latentrag.models.late_interaction import ENCODER_NAME as LATE_INTERACTION_ENCODER_NAME
from latentrag.models.late_interaction import NAME as LATE_INTERACTION_NAME
from latentrag.models.late_interaction import LateInteractionScore, maxsim, pooled_cosines
from latentrag.models.term_stats import TermStats
from latentrag.types import Hit
from latentrag.validate import check_str_list

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256


def is_late_interaction_folder(model: Any) -> bool:
    """``model`` is a folder holding a late-interaction score (``latentrag train late-interaction --out``)."""
    import json
    import os

    cfg = os.path.join(str(model), "config.json")
    if not os.path.isfile(cfg):
        return False
    try:
        with open(cfg, encoding="utf-8") as f:
            return json.load(f).get("kind") == "late-interaction"
    except (OSError, ValueError, AttributeError):
        return False


@lru_cache(maxsize=8)
def late_interaction_encoder(backend: str, precision: str, resolved: str, overrides: str,
                             int8_ranges: str | None = None) -> BaseEncoder:
    """The shipped MiniLM with the late-interaction score's fine-tuned last layer (and its calibrated int8
    ranges, which offer the OpenVINO int8 path), built once per process per path (``resolved``: the precision
    in force, so ``$LATENTRAG_PRECISION`` changes take effect); every default reranker shares it."""
    return shipped_encoder(backend, precision, overrides=overrides, name=LATE_INTERACTION_ENCODER_NAME,
                           int8_ranges=int8_ranges)


#: The cross-encoder trained in this project (the default until the late-interaction score replaced it).
CROSS_ENCODER_NAME = "latentrag/minilm-l6-cross-encoder"


class CrossEncoderReranker(BaseCompressor):
    """Re-score hits, best first, cut to ``top_n`` (``None``: keep all).

    ``model``: None (the shipped late-interaction score over the shipped MiniLM, see the module docstring),
    :data:`CROSS_ENCODER_NAME` (the cross-encoder trained here, with its mix), or any cross-encoder by hub
    name, folder or ONNX export. ``encoder``: the shipped MiniLM on another path (the default needs its token
    states). ``compress`` keeps ids and metadata and records the incoming score as
    ``metadata["original_score"]`` and the model's raw score as ``metadata["rerank_logit"]``.
    ``score(query, texts)`` returns the ranking scores, ``logits(query, texts)`` the raw ones. Thread-safe.

    ``precision``: ``"auto"`` (the fastest path whose scores match fp32 on this CPU, see the module
    docstring; ``$LATENTRAG_PRECISION`` can force one), ``"fp32"``, ``"bf16"`` or ``"int8"``; ``backend``
    (``"auto"``, ``"torch"``, ``"onnx"``; ``"openvino"`` for the shipped score's encoder) restricts the
    runtime. A batch holds at most ``batch_size`` pairs and ``max_batch_tokens`` padded tokens. ``path`` says
    which path was taken (also in ``repr``).
    """

    def __init__(
        self,
        model: str | None = None,
        top_n: int | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        *,
        quantize: bool = False,
        tokenizer: str | None = None,
        encoder: Encoder | str | None = None,
        precision: str = "auto",
        max_batch_tokens: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.top_n = None if top_n is None else check_positive_int("top_n", top_n)
        self.batch_size = check_positive_int("batch_size", batch_size)
        check_backend(backend)
        self.late: LateInteractionScore | None = None
        if model is None or str(model) == LATE_INTERACTION_NAME or is_late_interaction_folder(model):
            folder = None if model is None or str(model) == LATE_INTERACTION_NAME else model
            self._init_late_interaction(encoder, "int8" if quantize else precision, backend, folder)
            return
        if backend == "openvino":
            msg = (f"backend='openvino' runs the shipped late-interaction score's encoder only; the cross-encoder "
                   f"{model!r} runs on backend='torch' or 'onnx' (or 'auto').")
            raise InvalidInputError(msg)
        if str(model) == CROSS_ENCODER_NAME:
            model = None
        self.loaded: LoadedCrossEncoder = load_cross_encoder(model, tokenizer=tokenizer)
        limit = min(self.loaded.max_position, 512)
        wanted = max_length or self.loaded.max_length or DEFAULT_MAX_LENGTH
        self.max_length = min(check_positive_int("max_length", wanted), limit)
        self.model_name = CROSS_ENCODER_NAME if model is None else self.loaded.name
        self._module = self.loaded.model
        self.path = self._choose_path("int8" if quantize else precision, backend)
        self._runtime = self.path.backend
        if self.loaded.kind == "torch":
            self._module.eval()
            if self.path.precision == "int8":
                self._module = torch.ao.quantization.quantize_dynamic(self._module, {torch.nn.Linear},
                                                                      dtype=torch.qint8)
            elif self.path.precision == "bf16":
                self._module = bf16_copy(self._module)
            elif self.path.backend == "onnx":
                self._module = fused_session(self.loaded, self.path.threads)
        # the fused graph always takes token types; an ONNX export or a torch module as its config says
        self._uses_types = self.loaded.uses_token_types or (self.loaded.kind == "torch" and self._runtime == "onnx")
        default_tokens = 1024 if self.path.backend == "onnx" else 8192  # ORT's kernels like small batches
        self.max_batch_tokens = check_positive_int("max_batch_tokens", max_batch_tokens or default_tokens)
        self.fusion = self.loaded.fusion
        self.encoder: Encoder | None = None
        self.term_stats: TermStats | None = None
        if self.fusion:
            self.encoder = default_encoder() if encoder is None else load_encoder(encoder)
            if self.fusion.get("term_stats"):
                self.term_stats = TermStats.load(self.fusion["term_stats"])
        self._tok_json = self.loaded.tokenizer.to_str()
        self._local = threading.local()

    def _init_late_interaction(self, encoder: Encoder | str | None, precision: str, backend: str,
                               folder: str | None = None) -> None:
        """The shipped default (or a score ``latentrag train late-interaction`` wrote to ``folder``): the
        late-interaction score over the token states of the shipped MiniLM with its fine-tuned last layer."""
        self.late = LateInteractionScore.load() if folder is None else LateInteractionScore.load(folder)
        self.model_name = LATE_INTERACTION_NAME if folder is None else str(folder)
        wanted = DEFAULT_ENCODER_NAME if self.late.overrides is None else LATE_INTERACTION_ENCODER_NAME
        if encoder is None and self.late.overrides is not None:
            self.encoder = late_interaction_encoder(backend, precision, requested_precision(precision) or "auto",
                                                    self.late.overrides, self.late.int8_ranges)
        elif encoder is None:
            auto = precision == "auto" and backend == "auto"
            self.encoder = default_encoder() if auto else shipped_encoder(backend, precision)
        else:
            self.encoder = load_encoder(encoder)
        if getattr(self.encoder, "name", None) != wanted or not hasattr(self.encoder, "token_states"):
            msg = (f"the shipped reranker scores with the token states of its own MiniLM ({wanted}); got encoder "
                   f"{getattr(self.encoder, 'name', self.encoder)!r}. Leave encoder=None (precision= and backend= "
                   f"pick its path), or pass model={CROSS_ENCODER_NAME!r} (or any cross-encoder) to score "
                   "without it.")
            raise InvalidInputError(msg)
        path = getattr(self.encoder, "path", None)
        self.path = path if path is not None else ExecutionPath("torch", "fp32", device_threads(), "custom encoder")
        self.max_length = int(getattr(self.encoder, "max_length", DEFAULT_MAX_LENGTH))
        self.fusion = None
        self.term_stats = TermStats.load(self.late.term_stats) if self.late.term_stats else None

    def __repr__(self) -> str:
        return (f"CrossEncoderReranker(model={self.model_name!r}, top_n={self.top_n}, max_length={self.max_length}, "
                f"path={str(self.path)!r}, threads={self.path.threads})")

    def _choose_path(self, precision: str, backend: str) -> ExecutionPath:
        if self.loaded.kind == "onnx":  # an ONNX export runs as it was exported
            return take_path(self.model_name, ExecutionPath("onnx", "export", device_threads(), "ONNX model given"))
        reason = fused_offer(self.loaded) if backend != "torch" else "backend='torch'"
        if reason is not None:
            if backend == "onnx":
                msg = f"{self.model_name!r} cannot run on the ONNX backend: {reason}."
                raise InvalidInputError(msg)
            logger.debug("%s: no fused ONNX path (%s)", self.model_name, reason)
        offered = [("onnx", "fp32")] if reason is None else []
        if backend != "onnx":
            offered = [("torch", "bf16"), *offered, ("torch", "fp32"), ("torch", "int8")]
        return choose_path(self.model_name, offered, precision)

    def _tokenizer(self) -> Any:
        tok = getattr(self._local, "tok", None)
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tok_json)
            tok.no_padding()
            tok.enable_truncation(self.max_length, strategy="only_second")
            self._local.tok = tok
        return tok

    # ----------------------------------------------------------------- scoring
    def score(self, query: str, texts: Sequence[str], *, vectors: Sequence[np.ndarray | None] | None = None) -> list[
            float]:
        """Relevance scores of ``texts`` for ``query`` (higher is more relevant), in the given order.

        ``vectors`` optionally gives each passage's bi-encoder embedding, reused by the shipped model.
        """
        check_query(query)
        texts = check_str_list("texts", texts, storable=False)
        if vectors is not None and (isinstance(vectors, (str, bytes)) or len(vectors) != len(texts)):
            n = "a str" if isinstance(vectors, (str, bytes)) else f"{len(vectors)} entries"
            msg = f"vectors has {n} but texts has {len(texts)}; give one vector (or None) per text."
            raise InvalidInputError(msg)
        if not texts:
            return []
        return [float(x) for x in self._scores(query, texts, vectors)[0]]

    def logits(self, query: str, texts: Sequence[str]) -> list[float]:
        """The model's raw relevance scores, comparable across queries, in the given order: a cross-encoder's
        logits, or the MaxSim of the shipped late-interaction score."""
        check_query(query)
        texts = check_str_list("texts", texts, storable=False)
        if not texts:
            return []
        if self.late is not None:
            states = self._token_states(query, texts)
            return [float(x) for x in maxsim(states[0], states[1:])]
        return [float(x) for x in self._logits(query, texts)]

    def _scores(self, query: str, texts: list[str], vectors: Sequence[np.ndarray | None] | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ranking scores, logits, bi-encoder cosines or None when the score does not use them)."""
        logits, cosines, bm25 = self._evidence(query, texts, vectors)
        if self.late is not None:
            return self.late.fuse({"cosine": cosines, "maxsim": logits, "bm25": bm25}), logits, cosines
        if cosines is None:
            return logits, logits, None
        return fuse_scores(logits, cosines, self.fusion, bm25), logits, cosines

    def _evidence(self, query: str, texts: list[str], vectors: Sequence[np.ndarray | None] | None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """What the ranking score is made of: logits, and where the model has a fusion the bi-encoder
        cosines and (with term statistics) BM25 over the candidates. The late-interaction default gives its
        MaxSim in the logits' place, and its cosines come from the same encoder pass (``vectors`` unused)."""
        if self.late is not None:
            states = self._token_states(query, texts)
            bm25 = self.term_stats.bm25(query, texts) if self.term_stats is not None else None
            return maxsim(states[0], states[1:]), pooled_cosines(states[0], states[1:]), bm25
        logits = self._logits(query, texts)
        if not self.fusion:
            return logits, None, None
        bm25 = self.term_stats.bm25(query, texts) if self.term_stats is not None else None
        return logits, self._cosines(query, texts, vectors), bm25

    def _token_states(self, query: str, texts: list[str]) -> list[np.ndarray]:
        """The late-interaction default's one encoder pass: the query's token states, then each passage's."""
        states: list[np.ndarray] = self.encoder.token_states([query, *texts])  # type: ignore[union-attr]
        truncated = sum(1 for st in states[1:] if len(st) >= self.max_length)
        if truncated:
            logger.info("%d of %d passages were longer than max_length=%d tokens and were truncated",
                        truncated, len(texts), self.max_length)
        return states

    def _cosines(self, query: str, texts: list[str], vectors: Sequence[np.ndarray | None] | None) -> np.ndarray:
        assert self.encoder is not None
        dim = int(self.encoder.dim)
        known = list(vectors) if vectors is not None else [None] * len(texts)
        todo = [j for j, v in enumerate(known) if v is None or np.shape(v) != (dim,)]
        enc = self.encoder.encode([query, *[texts[j] for j in todo]])
        mat = np.empty((len(texts), dim), dtype=np.float32)
        for row, j in enumerate(todo):
            mat[j] = enc[row + 1]
        pending = set(todo)
        for j, v in enumerate(known):
            if j not in pending:
                mat[j] = np.asarray(v, dtype=np.float32)
        return mat @ enc[0]

    def _logits(self, query: str, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer().encode_batch([(query, t) for t in texts])
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            logger.info("%d of %d passages were longer than max_length=%d tokens and were truncated",
                        truncated, len(texts), self.max_length)
        out = np.empty(len(texts), dtype=np.float32)
        for idx in plan_batches([len(e.ids) for e in encodings], self.batch_size, self.max_batch_tokens):
            batch = [encodings[i] for i in idx]
            width = max(len(e.ids) for e in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for row, e in enumerate(batch):
                n = len(e.ids)
                ids[row, :n], types[row, :n], mask[row, :n] = e.ids, e.type_ids, 1
            out[idx] = logits_to_scores(self._run(ids, types, mask), self.loaded.num_labels)
        return out

    def _run(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._runtime == "onnx":
            feeds = {"input_ids": ids, "attention_mask": mask}
            if self._uses_types:
                feeds["token_type_ids"] = types
            return np.asarray(self._module.run(None, feeds)[0])
        with torch.inference_mode():
            kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if self.loaded.uses_token_types:
                kwargs["token_type_ids"] = torch.from_numpy(types)
            return self._module(**kwargs).logits.float().numpy()

    # ----------------------------------------------------------------- compressor
    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        scores, logits, cosines = self._scores(query, [h.text for h in hits], [h.vector for h in hits])
        order = np.argsort(-scores, kind="stable")
        if self.top_n is not None:
            order = order[: self.top_n]
        out = []
        for j in order:
            meta = {**hits[j].meta, "original_score": hits[j].score, "rerank_logit": float(logits[j])}
            if cosines is not None:
                meta["rerank_cosine"] = float(cosines[j])
            meta["rerank_model"] = self.model_name
            out.append(hits[j].copy(score=float(scores[j]), metadata=meta))
        return out
