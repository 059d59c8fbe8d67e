"""``ToolRetriever``: pick the few right tools for a request, in milliseconds, with no LLM call.

Each tool is scored from its description embedding and, when usage examples are given, from its Tool2Vec
vector (running mean of the example embeddings) and a nearest-example vote (see
:mod:`latentrag.retrievers.tool_index`). An optional :class:`~latentrag.models.tool_refiner.ToolRefiner`,
trained in seconds on the user's own examples, re-scores the top candidates. Without examples everything
degrades to description retrieval. The retriever never calls a tool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentrag import versioned
from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import InvalidInputError, LatentRagError, StoreCorruptError, StoreError, check_query
from latentrag.retrievers.base import BaseRetriever
from latentrag.retrievers.tool_index import FEATURES, BlendWeights, ToolIndex
from latentrag.retrievers.tool_intents import fuse_max, split_intents
from latentrag.retrievers.tool_schema import ToolSpec, normalize_tool, normalize_tools
from latentrag.stores.base import check_encoder
from latentrag.types import Hit
from latentrag.validate import check_str_list

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
        multi_intent: bool = True,
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
        self.multi_intent = bool(multi_intent)
        self.refiner: Any = None
        self._index = ToolIndex(int(self.encoder.dim))
        self._specs: list[ToolSpec] = []
        self._row: dict[str, int] = {}
        self._examples: list[Example] = []
        self._lock = threading.RLock()

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
        multi_intent: bool = True,
    ) -> ToolRetriever:
        """Index ``tools`` (any mix of OpenAI/MCP schema dicts, LangChain and LlamaIndex tools) and optional
        usage ``examples`` (``(query, [tool names])`` pairs).

        ``refiner=True`` trains the small re-scorer on the examples, ``False`` never does. ``"auto"`` (the
        default) trains it when there are at least 100 examples and 3 per tool on average, and keeps it only
        if it beats the first stage on a held-out fifth of them. Measured in ``benchmarks/tools.py``: with
        ~5 examples per tool (APIBench TensorFlow) it lifts R@1 by several points; with under one example
        per tool (ToolBench, APIBench HuggingFace) it does not help, and "auto" leaves it off.

        ``multi_intent=True`` (the default) also scores each part of a request that asks for several things
        ("find X. Also compute Y") and lets every tool keep its best score
        (:mod:`latentrag.retrievers.tool_intents`); a one-part request is scored as before.
        """
        r = cls(encoder, k, weights=weights, keep_turns=keep_turns, multi_intent=multi_intent)
        r.add_tools(tools)
        if examples is not None:
            r.add_examples(examples)
        if refiner is not False and refiner not in ("auto", True):
            msg = f"refiner must be 'auto', True or False, got {refiner!r}."
            raise InvalidInputError(msg)
        if refiner is True:
            r.fit()
        elif refiner == "auto" and r._enough_for_refiner():
            r.fit(validate=True)
        return r

    def _enough_for_refiner(self) -> bool:
        """At least 100 examples (the held-out fifth that decides has 20+) and 3 per tool on average."""
        return len(self._examples) >= 100 and len(self._examples) >= 3 * len(self._specs)

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._row

    def __repr__(self) -> str:
        return (
            f"ToolRetriever(tools={len(self._specs)}, examples={len(self._examples)}, k={self.k}, "
            f"refiner={'yes' if self.refiner is not None else 'no'}, encoder={self.encoder.name!r})"
        )

    @property
    def tool_names(self) -> list[str]:
        return [s.name for s in self._specs]

    @property
    def examples(self) -> list[Example]:
        """The usage examples, as ``(query, [tool names])`` pairs (a copy)."""
        return [(q, list(n)) for q, n in self._examples]

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
        else is recomputed."""
        specs = normalize_tools(tools)
        with self._lock:
            for s in specs:
                if s.name in self._row:
                    msg = (
                        f"tool {s.name!r} is already indexed; tool names are ids. Call remove_tools([{s.name!r}]) "
                        "first to replace it."
                    )
                    raise InvalidInputError(msg)
            vecs = self.encoder.encode([s.embed_text() for s in specs])
            for s in specs:
                self._row[s.name] = len(self._specs)
                self._specs.append(s)
            self._index.add_tools(vecs)
        logger.debug("indexed %d tools (%d in all)", len(specs), len(self._specs))

    def add_examples(self, examples: Iterable[Any]) -> None:
        """Add usage examples ``(query, [tool names])``; each updates the running mean of the tools it names.
        A trained refiner is kept (call :meth:`fit` again to retrain it on the new examples)."""
        parsed = [self._parse_example(e, i) for i, e in enumerate(examples)]
        if not parsed:
            return
        with self._lock:
            vecs = self.encoder.encode([q for q, _ in parsed])
            self._index.add_examples(vecs, [[self._row[n] for n in names] for _, names in parsed])
            self._examples.extend(parsed)

    def remove_tools(self, names: Sequence[str]) -> None:
        """Remove tools by name; their examples lose that label (examples left with no tool are dropped)."""
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
            if self.refiner is not None:
                self.refiner = None
                logger.info("removed tools %s; the refiner was dropped, call fit() to retrain it", sorted(gone))

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

    # ------------------------------------------------------------------ learned parts
    def fit(
        self, *, epochs: int | None = None, seed: int = 0, validate: bool = False, **kwargs: Any
    ) -> ToolRetriever:
        """Train the :class:`~latentrag.models.tool_refiner.ToolRefiner` on the indexed examples (leave-one-out
        features, so it learns from the situation it will meet at query time). Seconds on a CPU. With
        ``validate=True`` the refiner is kept only if it beats the first stage on held-out examples (else
        ``self.refiner`` stays ``None``)."""
        from latentrag.retrievers.tool_fit import train_refiner

        with self._lock:
            if not self._examples:
                msg = "fit() needs usage examples; call add_examples([(query, [tool names]), ...]) first."
                raise InvalidInputError(msg)
            opts: dict[str, Any] = {"seed": seed, "validate": validate, **kwargs}
            if epochs is not None:
                opts["epochs"] = epochs
            self.refiner = train_refiner(self._index, self.weights, **opts)
        return self

    # ------------------------------------------------------------------ retrieval
    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None) -> list[list[Hit]]:
        # with caller-given request vectors (maybe another model's) the parts are not encoded: one space only
        split = self.multi_intent and vectors is None
        parts = [split_intents(q) for q in queries] if split else [[] for _ in queries]
        flat = [p for ps in parts for p in ps]
        if vectors is None:
            rows_in = self.encoder.encode(queries + flat)  # one encoder batch for requests and their parts
        else:
            rows_in = np.asarray(vectors, dtype=np.float32).reshape(len(queries), -1)
            if rows_in.shape[1] != self._index.dim:
                msg = f"query embedding has dimension {rows_in.shape[1]}, the tool index {self._index.dim}."
                raise InvalidInputError(msg)
        with self._lock:
            if not self._specs:
                msg = "the tool retriever holds no tools; call add_tools([...]) before retrieving."
                raise StoreError(msg)
            ranked = self._score_rows(rows_in, k)  # requests, then their parts, in one candidate search
            start = len(queries)
            for i, ps in enumerate(parts):
                if ps:
                    ranked[i] = fuse_max([ranked[i], *ranked[start : start + len(ps)]], k)
                    start += len(ps)
            ranked = ranked[: len(queries)]
            out = []
            for rows, scores in ranked:
                out.append([self._hit(int(r), float(s)) for r, s in zip(rows, scores, strict=True)])
            return out

    def score_rows(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ranked ``(rows, scores)`` for each query vector in ``q`` (shape (b, dim)): the top ``k``
        (clamped to the number of tools), best first. Lower-level than :meth:`retrieve`; safe to call while
        other threads add or remove tools."""
        with self._lock:
            return self._score_rows(q, k)

    def _score_rows(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        w = self.weights
        n = len(self._index)
        k = min(k, n)
        n_cand = min(n, max(w.candidates, k))
        cands = self._index.candidates(q, w, n_cand)
        wvec = np.array([w.desc, w.mean, w.max, w.top], dtype=np.float32)
        out = []
        for qi in range(len(q)):
            rows = cands[qi]
            feats = self._index.features(q[qi], rows, w.top_m)
            scores = feats @ wvec
            if self.refiner is not None:
                scores = self.refiner.rescore(q[qi], rows, feats, scores, self._index)
            order = np.argsort(-scores, kind="stable")[:k]
            out.append((rows[order], scores[order]))
        return out

    def _hit(self, row: int, score: float) -> Hit:
        s = self._specs[row]
        meta = {"schema": s.openai_schema, "tool_kind": s.kind, "n_examples": int(self._index.counts[row])}
        return Hit(s.name, s.description, score, meta)

    def select(self, query: str, k: int | None = None, *, history: Sequence[str] | None = None) -> list[Any]:
        """The original tool objects for ``query`` (ready for ``bind_tools`` or an agent), best first.

        With ``history`` (earlier user turns, oldest first) and ``keep_turns > 0``, tools selected for the
        last ``keep_turns`` turns are kept after the current ones (each turn's top ``k``), so a follow-up such
        as "and tomorrow?" still gets the tool of the previous turn.
        """
        return [self.get_tool(n) for n in self.select_names(query, k, history=history)]

    def select_names(self, query: str, k: int | None = None, *, history: Sequence[str] | None = None) -> list[str]:
        """Tool names chosen by :meth:`select`."""
        k_ = self._k(k)
        turns = [] if history is None else check_str_list("history", history, storable=False)
        names = [h.id for h in self.retrieve(query, k_)]
        if turns and self.keep_turns:
            recent = [check_query(h) for h in turns[-self.keep_turns :]]
            for hits in reversed(self.retrieve_batch(recent, k_)):
                names.extend(h.id for h in hits if h.id not in names)
        return names

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save tools, examples, vectors and any trained refiner atomically into the folder ``path``: a new
        version folder is written and fsynced, then the ``CURRENT`` pointer is replaced; concurrent saves
        to one path serialise (see :mod:`latentrag.versioned`)."""
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
            refiner_cfg = None
            if self.refiner is not None:
                refiner_cfg = self.refiner.save(tmp / "refiner.safetensors")
                files.append("refiner.safetensors")
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "encoder": {"name": self.encoder.name, "dim": int(self.encoder.dim)},
                "k": self.k,
                "keep_turns": self.keep_turns,
                "multi_intent": self.multi_intent,
                "weights": self.weights.as_dict(),
                "refiner": refiner_cfg,
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
        returns them again); without it :meth:`select` returns OpenAI schema dicts."""
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
        r = cls(enc, manifest["k"], weights=BlendWeights(**manifest["weights"]), keep_turns=manifest["keep_turns"],
                multi_intent=manifest.get("multi_intent", False))
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
        if manifest.get("refiner"):
            from latentrag.models.tool_refiner import ToolRefiner

            r.refiner = ToolRefiner.load(folder / "refiner.safetensors", manifest["refiner"])
        if len(r._specs) != manifest["count"]:
            msg = (f"tool index at {str(folder)!r} holds {len(r._specs)} tools but its manifest says "
                   f"{manifest['count']}.")
            raise StoreCorruptError(msg)
        return r


def _preview(names: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)} in all)"


__all__ = ["FEATURES", "BlendWeights", "ToolRetriever"]
