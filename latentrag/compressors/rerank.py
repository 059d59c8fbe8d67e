"""``CrossEncoderReranker``: re-score (query, passage) pairs with a cross-encoder, fast on a CPU.

Speed comes from the execution path :mod:`latentrag.device` picks for this CPU (``precision="auto"``):
bf16 torch where the CPU has native bf16 (AMX, AVX-512 BF16), else one fused fp32 ONNX Runtime graph
built from the same weights (when ``onnxruntime`` is installed; the same logits), else fp32 torch; from
pairs sorted by token length and batched so padding stays small (length bucketing); and from each thread
tokenizing with its own copy of the Rust tokenizer, so concurrent calls never hit the "Already borrowed"
error of a shared one. ``quantize=True`` (or ``precision="int8"``) runs the Linear layers as int8 (PyTorch
dynamic quantization): it cost 0.017 nDCG@10 on DL20 for the shipped model (``benchmarks/rerank.py``), so
it is never picked on its own.

The shipped default (``model=None``) is a MiniLM-L6 cross-encoder trained in this project
(``latentrag train reranker``). On its own its logit ranks below the bi-encoder it started from, so its
ranking score is a per-query mix of three z-scored pieces of evidence, ``z(cosine) + b * z(logit) +
c * z(bm25)``: the shipped bi-encoder's cosine, the cross-encoder logit, and BM25 over the candidates with
document frequencies shipped beside the weights (:class:`~latentrag.models.term_stats.TermStats`; a
candidate list alone cannot tell a rare word from a common one). ``b`` and ``c`` were fitted on seven
labelled sources, leave-one-source-out (``latentrag train reranker-fusion``, ``fusion.json``; figures in
``benchmarks/rerank.py``). The cosines need the query and passage embeddings: a hit's own ``vector`` is
reused, else the passages without one are encoded with the shipped MiniLM together with the query, in
one batched call (cached). Fused scores rank one query's candidates; they are not comparable across
queries, so ``compress`` also records the raw logit as ``metadata["rerank_logit"]`` and the cosine as
``metadata["rerank_cosine"]``, which is what
:class:`~latentrag.compressors.RelevanceFilter` calibrates.
Any Hugging Face ``*ForSequenceClassification`` cross-encoder (``cross-encoder/ms-marco-MiniLM-L-6-v2``)
or an ONNX export loads too, and scores with its logit alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from latentrag.compressors.base import BaseCompressor
from latentrag.device import ExecutionPath, choose_path, take_path
from latentrag.device import threads as device_threads
from latentrag.encoders import Encoder, default_encoder, load_encoder, plan_batches
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
from latentrag.models.term_stats import TermStats
from latentrag.types import Hit
from latentrag.validate import check_str_list

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 256


class CrossEncoderReranker(BaseCompressor):
    """Re-score hits with a cross-encoder, best first, cut to ``top_n`` (``None``: keep all).

    ``compress`` keeps ids and metadata and records the incoming score as ``metadata["original_score"]``
    and the cross-encoder's own logit as ``metadata["rerank_logit"]``. ``score(query, texts)`` returns
    the ranking scores, ``logits(query, texts)`` the raw logits. Thread-safe.

    ``precision``: ``"auto"`` (the fastest path whose scores match fp32 on this CPU, see the module
    docstring; ``$LATENTRAG_PRECISION`` can force one), ``"fp32"``, ``"bf16"`` or ``"int8"``; ``backend``
    (``"auto"``, ``"torch"``, ``"onnx"``) restricts the runtime. A batch holds at most ``batch_size``
    pairs and ``max_batch_tokens`` padded tokens. ``path`` says which path was taken (also in ``repr``).
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
        self.loaded: LoadedCrossEncoder = load_cross_encoder(model, tokenizer=tokenizer)
        self.top_n = None if top_n is None else check_positive_int("top_n", top_n)
        self.batch_size = check_positive_int("batch_size", batch_size)
        limit = min(self.loaded.max_position, 512)
        wanted = max_length or self.loaded.max_length or DEFAULT_MAX_LENGTH
        self.max_length = min(check_positive_int("max_length", wanted), limit)
        self.model_name = self.loaded.name
        self._module = self.loaded.model
        if backend not in ("auto", "torch", "onnx"):
            msg = f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}."
            raise InvalidInputError(msg)
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
        """The cross-encoder's raw relevance logits (comparable across queries), in the given order."""
        check_query(query)
        texts = check_str_list("texts", texts, storable=False)
        return [float(x) for x in self._logits(query, texts)] if texts else []

    def _scores(self, query: str, texts: list[str], vectors: Sequence[np.ndarray | None] | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ranking scores, logits, bi-encoder cosines or None when the score does not use them)."""
        logits, cosines, bm25 = self._evidence(query, texts, vectors)
        if cosines is None:
            return logits, logits, None
        return fuse_scores(logits, cosines, self.fusion, bm25), logits, cosines

    def _evidence(self, query: str, texts: list[str], vectors: Sequence[np.ndarray | None] | None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """What the ranking score is made of: logits, and where the model has a fusion the bi-encoder
        cosines and (with term statistics) BM25 over the candidates."""
        logits = self._logits(query, texts)
        if not self.fusion:
            return logits, None, None
        bm25 = self.term_stats.bm25(query, texts) if self.term_stats is not None else None
        return logits, self._cosines(query, texts, vectors), bm25

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
        extra = [{} if cosines is None else {"rerank_cosine": float(cosines[j])} for j in range(len(hits))]
        return [hits[j].copy(score=float(scores[j]), metadata={**hits[j].meta, "original_score": hits[j].score,
                                                               "rerank_logit": float(logits[j]), **extra[j]})
                for j in order]
