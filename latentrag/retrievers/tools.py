"""``ToolRetriever``: pick the few right tools for a request, in milliseconds, with no LLM call.

Two stages (three with the query adapter). A learned low-rank adapter
(:class:`~latentrag.models.tool_adapter.QueryAdapter`, fitted on the usage examples) can first move the
request vector toward the tools such requests need. The first stage scores each tool from its
description embedding and, when usage examples are given, from its Tool2Vec vector (running mean of
the example embeddings) and a nearest-example vote (see :mod:`latentrag.retrievers.tool_index`), and
keeps the best candidates. The second, learned from the
catalogue's own examples when there are enough of them
(:class:`~latentrag.models.tool_refiner.LearnedStage`, fitted by :mod:`latentrag.retrievers.tool_fit`),
re-scores those candidates: learned feature weights and a small MLP over the first stage's features,
plus a multi-label head over the request embedding (Tool2Vec's MLC) fused into one score. Without
examples everything degrades to description retrieval. The retriever never calls a tool.

Updates (``add_tools``, ``add_examples``, ``remove_tools``) take effect at once; the learned stage is
then marked stale and refitted in a background thread while queries keep using the previous fit (its
head rows follow the tools: a removed tool's row goes, a new tool gets a zero row).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentrag import versioned
from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import InvalidInputError, LatentRagError, StoreCorruptError, StoreError, check_query
from latentrag.models.tool_count import WIDTH as COUNT_WIDTH
from latentrag.models.tool_count import shipped_count
from latentrag.retrievers.base import BaseRetriever
from latentrag.retrievers.tool_fit import FitConfig
from latentrag.retrievers.tool_index import FEATURES, BlendWeights, ToolIndex
from latentrag.retrievers.tool_intents import MODES, fuse_cover, fuse_max, split_intents
from latentrag.retrievers.tool_schema import ToolSpec, normalize_tool, normalize_tools
from latentrag.stores.base import check_encoder
from latentrag.types import Hit
from latentrag.validate import check_str_list

if TYPE_CHECKING:
    from latentrag.models.tool_refiner import LearnedStage

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "latentrag.ToolRetriever"
Example = tuple[str, list[str]]


class ToolRetriever(BaseRetriever):
    """Tool retrieval for function calling: ``Hit.id`` is the tool name, ``Hit.metadata["schema"]`` its
    OpenAI function schema; :meth:`select` returns the original tool objects.

    ``k`` larger than the number of tools is clamped to the number of tools (every tool is returned).

    >>> tools = [
    ...     {"name": "get_weather", "description": "Current weather for a city.", "parameters": {}},
    ...     {"name": "send_email", "description": "Send an e-mail to a recipient.", "parameters": {}},
    ... ]
    >>> r = ToolRetriever.from_tools(tools, examples=[("Is it raining in Oslo?", ["get_weather"])], k=1)
    >>> [h.id for h in r.retrieve("Will I need an umbrella in Paris today?")]
    ['get_weather']
    """

    def __init__(
        self,
        encoder: Encoder | str | None = None,
        k: int = 5,
        *,
        weights: BlendWeights | None = None,
        keep_turns: int = 0,
        multi_intent: bool | str = True,
        refiner: bool | str = "auto",
        fit_config: FitConfig | None = None,
        adaptive_count: bool = True,
    ) -> None:
        super().__init__(k)
        self.encoder = load_encoder(encoder)
        if weights is not None and not isinstance(weights, BlendWeights):
            msg = (
                f"weights must be a BlendWeights, got {type(weights).__name__} ({weights!r:.80}); "
                f"build one with BlendWeights(**your_dict)."
            )
            raise InvalidInputError(msg)
        self.weights = weights or BlendWeights()
        if isinstance(keep_turns, bool) or not isinstance(keep_turns, int) or keep_turns < 0:
            msg = f"keep_turns must be an integer >= 0, got {keep_turns!r}."
            raise InvalidInputError(msg)
        self.keep_turns = keep_turns
        self.multi_intent = _intent_mode(multi_intent)
        if refiner is not False and refiner not in ("auto", True):
            msg = f"refiner must be 'auto', True or False, got {refiner!r}."
            raise InvalidInputError(msg)
        if fit_config is not None and not isinstance(fit_config, FitConfig):
            msg = f"fit_config must be a FitConfig, got {type(fit_config).__name__} ({fit_config!r:.80})."
            raise InvalidInputError(msg)
        if not isinstance(adaptive_count, bool):
            msg = f"adaptive_count must be True or False, got {adaptive_count!r}."
            raise InvalidInputError(msg)
        #: :meth:`select` offers a calibrated number of tools (at most ``k``) instead of exactly ``k``
        self.adaptive_count = adaptive_count
        self.refit_policy: bool | str = refiner
        self.fit_config = fit_config or FitConfig()
        #: the fitted learned stage (:class:`~latentrag.models.tool_refiner.LearnedStage`) or None
        self.refiner: LearnedStage | None = None
        self._index = ToolIndex(int(self.encoder.dim))
        self._specs: list[ToolSpec] = []
        self._row: dict[str, int] = {}
        self._examples: list[Example] = []
        self._lock = threading.RLock()
        self._generation = 0  # bumped by every update; a fit installs as current only if none came since
        self._stale = False  # the learned stage lags the tools or examples (a refit is due)
        self._worker: threading.Thread | None = None
        self._fit_error: BaseException | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tools(
        cls,
        tools: Sequence[Any],
        *,
        examples: Iterable[Any] | None = None,
        encoder: Encoder | str | None = None,
        k: int = 5,
        weights: BlendWeights | None = None,
        refiner: bool | str = "auto",
        keep_turns: int = 0,
        multi_intent: bool | str = True,
        fit_config: FitConfig | None = None,
        adaptive_count: bool = True,
    ) -> ToolRetriever:
        """Index ``tools`` (any mix of OpenAI/MCP schema dicts, LangChain and LlamaIndex tools) and optional
        usage ``examples`` (``(query, [tool names])`` pairs), and fit the learned stage on the examples
        before returning.

        ``refiner="auto"`` (the default) fits the learned stage (:class:`~latentrag.models.tool_refiner.
        LearnedStage`) when there are at least ``fit_config.min_examples`` (20) examples, ``True`` whenever
        there is one, ``False`` never. The same rule refits it in the background after later updates.
        ``fit_config`` (:class:`~latentrag.retrievers.tool_fit.FitConfig`) says which parts it has and how
        it is fitted; the defaults are the cross-validated best of ``benchmarks/tools.py``.

        ``multi_intent=True`` (the default, same as ``"cover"``) also scores each part of a request that
        asks for several things ("find X. Also compute Y") and makes sure every part's best tool is in the
        top ``k``, after the whole request's best (:mod:`latentrag.retrievers.tool_intents`); ``"max"`` is
        plain max fusion, ``False`` scores the request whole. A one-part request is scored as before.

        ``adaptive_count=True`` (the default): :meth:`select` offers as many tools as the request needs, at
        most ``k``: every hit carries ``metadata["p_needed"]``, a calibrated probability that the tool is
        needed (:mod:`latentrag.models.tool_count`), and the tools at or above the threshold are offered, at
        least one per detected part of the request. ``False`` offers exactly ``k``. :meth:`retrieve` always
        returns the ranked top ``k``.
        """
        r = cls(encoder, k, weights=weights, keep_turns=keep_turns, multi_intent=multi_intent, refiner=refiner,
                fit_config=fit_config, adaptive_count=adaptive_count)
        r._add_tools(tools)
        if examples is not None:
            r._add_examples(examples)
        if r._wants_fit():
            r.fit()
        return r

    def _wants_fit(self) -> bool:
        """Whether the refit policy asks for a learned stage on the current examples."""
        if self.refit_policy is True:
            return bool(self._examples)
        return self.refit_policy == "auto" and len(self._examples) >= self.fit_config.min_examples

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._row

    def __repr__(self) -> str:
        stage = "+".join(self.refiner.parts) if self.refiner is not None else "no"
        if self.refiner is not None and self.refiner.adapter is not None:
            stage += f" (adapter rank {self.refiner.adapter.rank})"
        return (
            f"ToolRetriever(tools={len(self._specs)}, examples={len(self._examples)}, k={self.k}, "
            f"learned={stage}{' (stale)' if self._stale else ''}, "
            f"count={'adaptive' if self.adaptive_count else 'fixed'}, encoder={self.encoder.name!r})"
        )

    @property
    def tool_names(self) -> list[str]:
        return [s.name for s in self._specs]

    @property
    def examples(self) -> list[Example]:
        """The usage examples, as ``(query, [tool names])`` pairs (a copy)."""
        return [(q, list(n)) for q, n in self._examples]

    @property
    def fit_pending(self) -> bool:
        """True while a refit of the learned stage is due or running (it lags the latest update)."""
        return self._worker is not None or (self._stale and self._wants_fit())

    def specs(self) -> list[ToolSpec]:
        return list(self._specs)

    def get_tool(self, name: str) -> Any:
        """The original tool object for ``name`` (the OpenAI schema dict for tools restored by :meth:`load`)."""
        spec = self._spec(name)
        return spec.tool if spec.tool is not None else spec.openai_schema

    def _spec(self, name: str) -> ToolSpec:
        row = self._row.get(name)
        if row is None:
            msg = f"unknown tool {name!r}; known tools are {_preview(self.tool_names)}."
            raise InvalidInputError(msg)
        return self._specs[row]

    # ------------------------------------------------------------------ updates
    def add_tools(self, tools: Sequence[Any]) -> None:
        """Add tools (any accepted form). Names must be new; their description vectors are appended, nothing
        else is recomputed. A fitted learned stage keeps serving (the new tools rank by their features
        until the background refit, which this schedules, has learned them)."""
        self._add_tools(tools)
        self._changed()

    def _add_tools(self, tools: Sequence[Any]) -> None:
        specs = normalize_tools(tools)
        with self._lock:
            for s in specs:
                if s.name in self._row:
                    msg = (
                        f"tool {s.name!r} is already indexed; tool names are ids. Call remove_tools([{s.name!r}]) "
                        "first to replace it."
                    )
                    raise InvalidInputError(msg)
        vecs = self.encoder.encode([s.embed_text() for s in specs])  # outside the lock: queries keep running
        with self._lock:
            for s in specs:
                if s.name in self._row:  # another thread added it while we encoded
                    msg = f"tool {s.name!r} was added concurrently; tool names are ids."
                    raise InvalidInputError(msg)
            for s in specs:
                self._row[s.name] = len(self._specs)
                self._specs.append(s)
            self._index.add_tools(vecs)
            self._realign()
        logger.debug("indexed %d tools (%d in all)", len(specs), len(self._specs))

    def add_examples(self, examples: Iterable[Any]) -> None:
        """Add usage examples ``(query, [tool names])``; each updates the running mean of the tools it names
        at once. The learned stage is refitted in a background thread (queries meanwhile use the previous
        fit); :meth:`wait_for_fit` waits for it, :meth:`fit` refits in the calling thread."""
        if self._add_examples(examples):
            self._changed()

    def _add_examples(self, examples: Iterable[Any]) -> int:
        with self._lock:
            parsed = [self._parse_example(e, i) for i, e in enumerate(examples)]
        if not parsed:
            return 0
        vecs = self.encoder.encode([q for q, _ in parsed])
        with self._lock:
            for i, (q, names) in enumerate(parsed):  # a tool may have been removed while we encoded
                if any(n not in self._row for n in names):
                    msg = f"examples[{i}] ({q!r:.60}) names a tool that was removed concurrently."
                    raise InvalidInputError(msg)
            self._index.add_examples(vecs, [[self._row[n] for n in names] for _, names in parsed])
            self._examples.extend(parsed)
        return len(parsed)

    def remove_tools(self, names: Sequence[str]) -> None:
        """Remove tools by name; their examples lose that label (examples left with no tool are dropped).
        The learned stage drops their rows at once and is refitted in the background."""
        if isinstance(names, str):
            names = [names]
        with self._lock:
            for n in names:
                self._spec(n)  # raises on an unknown name before anything changes
            rows_i = sorted({self._row[n] for n in names})
            keep_ex = self._index.remove_tools(rows_i)
            gone = {self._specs[r].name for r in rows_i}
            dropped = set(rows_i)
            self._specs = [s for i, s in enumerate(self._specs) if i not in dropped]
            self._row = {s.name: i for i, s in enumerate(self._specs)}
            kept: list[Example] = []
            for (q, ns), keep in zip(self._examples, keep_ex.tolist(), strict=True):
                if keep:
                    kept.append((q, [n for n in ns if n not in gone]))
            self._examples = kept
            self._realign()
        self._changed()

    def _realign(self) -> None:
        """Keep the learned stage's head rows aligned with the tools (lock held)."""
        if self.refiner is not None:
            self.refiner = self.refiner.aligned(self.tool_names)

    def _changed(self) -> None:
        """After an update: the learned stage is stale; refit it in the background if the policy asks."""
        with self._lock:
            self._generation += 1
            self._stale = self.refiner is not None or self._wants_fit()
        self._schedule_refit()

    def _parse_example(self, example: Any, i: int) -> Example:
        if isinstance(example, dict):
            query, names = example.get("query"), example.get("tools", example.get("tool_names"))
        elif isinstance(example, (tuple, list)) and len(example) == 2:
            query, names = example
        else:
            msg = f"examples[{i}] must be a (query, [tool names]) pair, got {example!r:.120}."
            raise InvalidInputError(msg)
        if not isinstance(query, str) or not query.strip():
            msg = f"examples[{i}] has query {query!r:.80}; it must be a non-empty string."
            raise InvalidInputError(msg)
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple)) or not names:
            msg = f"examples[{i}] names tools {names!r:.80}; pass a non-empty list of tool names."
            raise InvalidInputError(msg)
        out: list[str] = []
        for n in names:
            if n not in self._row:
                msg = (
                    f"examples[{i}] ({query!r:.60}) names unknown tool {n!r}; known tools are "
                    f"{_preview(self.tool_names)}. Add the tool first or fix the name."
                )
                raise InvalidInputError(msg)
            if n not in out:
                out.append(n)
        return query, out

    # ------------------------------------------------------------------ learned stage
    def fit(self, config: FitConfig | None = None, *, validate: bool = False, **overrides: Any) -> ToolRetriever:
        """Fit the learned stage on the indexed examples now, in the calling thread (queries from other
        threads keep running on the previous fit). ``config`` replaces :attr:`fit_config`; keyword
        ``overrides`` change single fields of it (``epochs=100``, ``mlc=False``, ...). With
        ``validate=True`` the stage is kept only if it beats the first stage on a held-out fifth of the
        examples (else :attr:`refiner` becomes ``None``). About a second per thousand examples on a CPU."""
        cfg = self.fit_config if config is None else config
        if not isinstance(cfg, FitConfig):
            msg = f"config must be a FitConfig, got {type(cfg).__name__} ({cfg!r:.80})."
            raise InvalidInputError(msg)
        known = {f.name for f in fields(FitConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            msg = f"fit() got unknown options {unknown}; FitConfig fields are {sorted(known)}."
            raise InvalidInputError(msg)
        cfg = replace(cfg, **overrides)
        with self._lock:
            if not self._examples:
                msg = "fit() needs usage examples; call add_examples([(query, [tool names]), ...]) first."
                raise InvalidInputError(msg)
            self.fit_config = cfg
            gen, snap, names, weights = self._generation, self._index.copy(), self.tool_names, self.weights
        stage = _fit(snap, weights, names, cfg, validate)
        with self._lock:
            self._install(stage, gen)
        return self

    def _install(self, stage: LearnedStage | None, generation: int) -> None:
        """Swap in a stage fitted on the snapshot of ``generation`` (lock held), aligned to the tools now."""
        self.refiner = None if stage is None else stage.aligned(self.tool_names)
        if generation == self._generation:
            self._stale = False

    def _schedule_refit(self) -> None:
        with self._lock:
            if not self._stale or self._worker is not None or not self._wants_fit():
                return
            self._worker = threading.Thread(target=self._refit_loop, name="latentrag-tool-refit", daemon=True)
            self._worker.start()

    def _refit_loop(self) -> None:
        """Background refits until the learned stage has caught up with the latest update."""
        try:
            while True:
                with self._lock:
                    if not self._stale or not self._wants_fit():
                        self._worker = None
                        return
                    gen, snap, names = self._generation, self._index.copy(), self.tool_names
                    weights, cfg = self.weights, self.fit_config
                stage = _fit(snap, weights, names, cfg, False)
                with self._lock:
                    self._install(stage, gen)
                    if gen == self._generation:
                        self._worker = None
                        return
        except Exception as exc:  # noqa: BLE001 - reported by wait_for_fit and the log; queries go on
            logger.exception("background refit of the tool retriever's learned stage failed")
            with self._lock:
                self._fit_error = exc
                self._worker = None

    def wait_for_fit(self, timeout: float | None = None) -> bool:
        """Wait until no background refit is due or running; True when the learned stage is current.
        A failed background refit raises its error here (once)."""
        self._schedule_refit()
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        with self._lock:
            err, self._fit_error = self._fit_error, None
            if err is not None:
                msg = f"the background refit of the learned stage failed: {type(err).__name__}: {err}"
                raise LatentRagError(msg) from err
            return self._worker is None and not (self._stale and self._wants_fit())

    # ------------------------------------------------------------------ retrieval
    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None) -> list[list[Hit]]:
        if self._stale and self._worker is None:
            self._schedule_refit()  # lazily, e.g. after load() or unpickling a retriever that was stale
        # with caller-given request vectors (maybe another model's) the parts are not encoded: one space only
        split = bool(self.multi_intent) and vectors is None
        parts = [split_intents(q) for q in queries] if split else [[] for _ in queries]
        flat = [p for ps in parts for p in ps]
        if vectors is None:
            rows_in = self.encoder.encode(queries + flat)  # one encoder batch for requests and their parts
        else:
            rows_in = np.asarray(vectors, dtype=np.float32).reshape(len(queries), -1)
            if rows_in.shape[1] != self._index.dim:
                msg = f"query embedding has dimension {rows_in.shape[1]}, the tool index {self._index.dim}."
                raise InvalidInputError(msg)
        fuse = fuse_cover if self.multi_intent == "cover" else fuse_max
        with self._lock:
            if not self._specs:
                msg = "the tool retriever holds no tools; call add_tools([...]) before retrieving."
                raise StoreError(msg)
            width = max(k, COUNT_WIDTH)  # the count model reads the first COUNT_WIDTH scores, whatever k is
            n_rank = max(width, min(len(self._specs), self.weights.candidates)) if flat else width
            ranked = self._score_rows(rows_in, n_rank)  # requests, then their parts, in one candidate search
            start = len(queries)
            for i, ps in enumerate(parts):
                if ps:
                    ranked[i] = fuse([ranked[i], *ranked[start : start + len(ps)]], width)
                    start += len(ps)
            counter = shipped_count()
            out = []
            for (rows, scores), ps in zip(ranked[: len(queries)], parts, strict=True):
                p_needed = counter.probabilities(scores, len(ps))
                hits = []
                for r, s, p in zip(rows[:k], scores[:k], p_needed[:k], strict=True):
                    hits.append(self._hit(int(r), float(s), p_needed=round(float(p), 4), intents=len(ps)))
                out.append(hits)
            return out

    def offer(self, hits: Sequence[Hit], k: int | None = None) -> list[Hit]:
        """The hits :meth:`select` offers out of one request's ranked ``hits``: with ``adaptive_count``, those
        whose ``metadata["p_needed"]`` reaches the count model's threshold, at least one per detected part
        of the request, at most ``k``; otherwise the first ``k``."""
        metas = [h.meta for h in hits]
        return list(hits[: self.offer_count(metas, k)])

    def offer_count(self, metadatas: Sequence[dict[str, Any]], k: int | None = None) -> int:
        """How many of one request's ranked hits to offer, from their metadata (``p_needed``, ``intents``);
        see :meth:`offer`. Framework adapters call it on their nodes' metadata."""
        k_ = min(self._k(k), len(metadatas))
        if not self.adaptive_count or not metadatas or "p_needed" not in metadatas[0]:
            return k_
        p_needed = np.array([m.get("p_needed", 0.0) for m in metadatas])
        return shipped_count().count(p_needed, int(metadatas[0].get("intents", 0)), k_)

    def score_rows(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ranked ``(rows, scores)`` for each query vector in ``q`` (shape (b, dim)): the top ``k``
        (clamped to the number of tools), best first, by the first stage and the learned stage.
        Lower-level than :meth:`retrieve` (no multi-intent splitting); safe to call while other threads
        add or remove tools."""
        with self._lock:
            return self._score_rows(q, k)

    def _score_rows(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        w = self.weights
        n = len(self._index)
        k = min(k, n)
        n_cand = min(n, max(w.candidates, k))
        stage, counts = self.refiner, self._index.counts
        if stage is not None:
            q = stage.query(q)  # the query adapter, when the stage has one: candidates and features use q'
        cands = self._index.candidates(q, w, n_cand)
        wvec = np.array([w.desc, w.mean, w.max, w.top], dtype=np.float32)
        out = []
        for qi in range(len(q)):
            rows = cands[qi]
            feats = self._index.features(q[qi], rows, w.top_m)
            scores = feats @ wvec if stage is None else stage.score(q[qi], rows, feats, counts[rows], wvec)
            order = np.argsort(-scores, kind="stable")[:k]
            out.append((rows[order], scores[order]))
        return out

    def _hit(self, row: int, score: float, **extra: Any) -> Hit:
        s = self._specs[row]
        meta = {"schema": s.openai_schema, "tool_kind": s.kind, "n_examples": int(self._index.counts[row]), **extra}
        return Hit(s.name, s.description, score, meta)

    def select(self, query: str, k: int | None = None, *, history: Sequence[str] | None = None) -> list[Any]:
        """The original tool objects for ``query`` (ready for ``bind_tools`` or an agent), best first: as many
        as the request needs, at most ``k`` (see :meth:`offer`; exactly ``k`` with ``adaptive_count=False``).

        With ``history`` (earlier user turns, oldest first) and ``keep_turns > 0``, tools selected for the
        last ``keep_turns`` turns are kept after the current ones (each turn's top ``k``), so a follow-up such
        as "and tomorrow?" still gets the tool of the previous turn.
        """
        return [self.get_tool(n) for n in self.select_names(query, k, history=history)]

    def select_names(self, query: str, k: int | None = None, *, history: Sequence[str] | None = None) -> list[str]:
        """Tool names chosen by :meth:`select`."""
        return [h.id for h in self.select_hits(query, k, history=history)]

    def select_hits(self, query: str, k: int | None = None, *, history: Sequence[str] | None = None,
                    keep_turns: int | None = None) -> list[Hit]:
        """The hits behind :meth:`select`: those :meth:`offer` keeps for ``query``, then, for each of the last
        ``keep_turns`` turns of ``history`` (``None``: the retriever's ``keep_turns``), newest first, the ones it
        keeps for that turn that are not chosen yet."""
        k_ = self._k(k)
        keep = self.keep_turns if keep_turns is None else keep_turns
        turns = [] if history is None else check_str_list("history", history, storable=False)
        chosen = self.offer(self.retrieve(query, k_), k_)
        if turns and keep:
            seen = {h.id for h in chosen}
            recent = [check_query(h) for h in turns[-keep:]]
            for hits in reversed(self.retrieve_batch(recent, k_)):
                for h in self.offer(hits, k_):
                    if h.id not in seen:
                        seen.add(h.id)
                        chosen.append(h)
        return chosen

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Attributes without the lock and the background worker (both re-created by __setstate__; a
        refit that was due or running is redone lazily on the copy's first query)."""
        with self._lock:
            state = super().__getstate__()
        state.pop("_lock", None)
        state["_worker"] = None
        state["_fit_error"] = None
        return state

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("adaptive_count", True)  # pickles of versions before the count model
        self._lock = threading.RLock()
        self._worker = None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save tools, examples, vectors and the learned stage atomically into the folder ``path``: a new
        version folder is written and fsynced, then the ``CURRENT`` pointer is replaced; concurrent saves
        to one path serialise (see :mod:`latentrag.versioned`). A stage that was stale (a refit due) is
        saved as such and refitted lazily after :meth:`load`."""
        root = Path(path)
        with versioned.writing(root) as (version, tmp), self._lock:
            with open(tmp / "tools.jsonl", "w", encoding="utf-8") as fh:
                for s in self._specs:
                    rec = {"name": s.name, "description": s.description, "parameters": s.parameters, "kind": s.kind}
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            with open(tmp / "examples.jsonl", "w", encoding="utf-8") as fh:
                for q, names in self._examples:
                    fh.write(json.dumps({"query": q, "tools": names}, ensure_ascii=False) + "\n")
            np.save(tmp / "desc.npy", self._index.desc)
            np.save(tmp / "examples.npy", self._index.examples)
            files = ["tools.jsonl", "examples.jsonl", "desc.npy", "examples.npy"]
            learned_cfg = None
            if self.refiner is not None:
                learned_cfg = self.refiner.save(tmp / "learned.safetensors")
                files.append("learned.safetensors")
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "encoder": {"name": self.encoder.name, "dim": int(self.encoder.dim)},
                "k": self.k,
                "keep_turns": self.keep_turns,
                "multi_intent": self.multi_intent,
                "weights": self.weights.as_dict(),
                "refiner": None,  # the format-1 refiner of earlier versions; its successor is "learned"
                "learned": learned_cfg,
                "learned_stale": self._stale,
                "refit_policy": self.refit_policy,
                "fit_config": self.fit_config.as_dict(),
                "adaptive_count": self.adaptive_count,
                "count": len(self._specs),
            }
            return versioned.commit(root, version, tmp, manifest, files)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | str | None = None,
        tools: Sequence[Any] | None = None,
    ) -> ToolRetriever:
        """Load a saved retriever. ``tools`` re-attaches the original tool objects by name (so :meth:`select`
        returns them again); without it :meth:`select` returns OpenAI schema dicts. A save of an earlier
        version with its old refiner loads with the learned stage due, refitted on its first query."""
        root = Path(path)
        with versioned.reading(root, kind=KIND, format_version=FORMAT_VERSION, what="ToolRetriever",
                               hint="save one with retriever.save(path)") as (folder, manifest):
            try:
                return cls._from_folder(root, folder, manifest, encoder, tools)
            except LatentRagError:
                raise
            except (KeyError, TypeError, ValueError, OSError) as exc:
                msg = f"tool index at {str(root)!r} could not be read ({type(exc).__name__}: {exc}); save it again."
                raise StoreCorruptError(msg) from exc

    @classmethod
    def _from_folder(
        cls, root: Path, folder: Path, manifest: dict[str, Any], encoder: Encoder | str | None,
        tools: Sequence[Any] | None,
    ) -> ToolRetriever:
        enc = load_encoder(manifest["encoder"]["name"] if encoder is None else encoder)
        check_encoder(manifest["encoder"]["name"], manifest["encoder"]["dim"], enc, f"the tool index at {str(root)!r}")
        cfg = FitConfig(**manifest["fit_config"]) if manifest.get("fit_config") else None
        r = cls(enc, manifest["k"], weights=BlendWeights(**manifest["weights"]), keep_turns=manifest["keep_turns"],
                multi_intent=manifest.get("multi_intent", False), refiner=manifest.get("refit_policy", "auto"),
                fit_config=cfg, adaptive_count=bool(manifest.get("adaptive_count", True)))
        originals = {s.name: s.tool for s in normalize_tools(tools)} if tools else {}
        with open(folder / "tools.jsonl", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                rec = json.loads(line)
                spec = normalize_tool(
                    {"name": rec["name"], "description": rec["description"], "parameters": rec["parameters"]}, i
                )
                spec.kind = rec.get("kind", "openai")
                spec.tool = originals.get(spec.name)
                r._row[spec.name] = len(r._specs)
                r._specs.append(spec)
        r._index.add_tools(np.load(folder / "desc.npy"))
        with open(folder / "examples.jsonl", encoding="utf-8") as fh:
            exs = [json.loads(line) for line in fh]
        r._examples = [(e["query"], list(e["tools"])) for e in exs]
        r._index.add_examples(np.load(folder / "examples.npy"), [[r._row[n] for n in e["tools"]] for e in exs])
        if len(r._specs) != manifest["count"]:
            msg = (f"tool index at {str(folder)!r} holds {len(r._specs)} tools but its manifest says "
                   f"{manifest['count']}.")
            raise StoreCorruptError(msg)
        if manifest.get("learned"):
            from latentrag.models.tool_refiner import LearnedStage

            r.refiner = LearnedStage.load(folder / "learned.safetensors", manifest["learned"], r.tool_names)
            r._stale = bool(manifest.get("learned_stale", False))
        elif manifest.get("refiner"):  # an earlier version's refiner: refit the learned stage lazily
            r._stale = r._wants_fit()
        return r


def _fit(index: ToolIndex, weights: BlendWeights, names: list[str], cfg: FitConfig,
         validate: bool) -> LearnedStage | None:
    from latentrag.retrievers.tool_fit import fit_stage

    return fit_stage(index, weights, names, cfg, validate=validate)


def _intent_mode(value: bool | str) -> str | bool:
    """``multi_intent`` as stored: ``"cover"`` (``True``), ``"max"``, or ``False``."""
    if value is True:
        return "cover"
    if value is False or value in MODES:
        return value
    msg = f"multi_intent must be True, False or one of {list(MODES)}, got {value!r}."
    raise InvalidInputError(msg)


def _preview(names: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)} in all)"


__all__ = ["FEATURES", "BlendWeights", "ToolRetriever"]
