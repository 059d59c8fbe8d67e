"""``MultiHopRetriever``: multi-hop retrieval in embedding space (TreeHop, METHODS.md §1).

Per batch of questions, each hop is one batched hop-network forward and one ``store.search``:

1. Hop 1 searches the question embeddings; the best ``top_n`` hits of each question are the first
   layer of its tree.
2. For every kept node the hop network turns (parent query, passage vector) into a next query; all
   next queries of all questions are searched in one call, ``top_n`` children each.
3. Pruning, per question: a child already in the tree (or twice in the layer) is dropped
   (redundancy); a branch whose best child scores below ``stop_score`` ends there (score stop);
   of the rest, only the true layer-wise top-``layer_k`` by score survive (``argpartition`` over the
   whole layer, not the public code's argsort-as-ranks bug).
4. The final ``k`` are chosen across hops by a fused score (``fusion``; see :func:`fuse`). The
   default, ``path``, scores a passage found at hop ``t`` by its path score
   ``alpha * parent_path + (1 - alpha) * sim(q_t, p) - hop_penalty`` and lets it compete with the
   dense list on ``max(sim(q, p), path score)``; ``alpha`` and ``hop_penalty`` are calibrated on the
   dev sets and stored with the model.

5. Title links (:mod:`latentrag.retrievers.links`): the passages whose titles the question or one
   of its best ``link_from`` hop-1 hits mention join the tree too (hop 1 from the question, hop 2
   from a passage), scored ``sim(q, p) + link_bonus``. A pooled sentence embedding keeps a bridge
   entity's name only faintly, and on the dev sets this entity hop adds more recall than the hop
   network (see ``benchmarks/multihop.py``). They need passage titles (metadata ``title`` or a
   ``"Title: body"`` prefix) and are skipped on stores without them.

6. Whether the hop network runs at all (``hop_network="auto"``) depends on the first stage: after a
   dense hop 1 its children add recall on the dev sets; after the hybrid (dense + BM25) hop 1 they only
   displaced better first-stage hits, so the default then follows title and entity links alone.

Passage vectors come from the search itself (``with_vectors=True``), so any
:class:`~latentrag.stores.base.Store` works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from latentrag.errors import InvalidInputError, check_positive_int, check_query
from latentrag.models.hop import HopModel, check_model_encoder, shipped_model
from latentrag.retrievers.base import BaseRetriever, query_vectors
from latentrag.retrievers.links import TitleLinks
from latentrag.stores.base import Filter, Store, can_list, matches
from latentrag.types import Hit

if TYPE_CHECKING:
    from latentrag.retrievers.hybrid import HybridRetriever

Fusion = Literal["path", "rrf", "dense_fill"]
FUSIONS: tuple[str, ...] = ("path", "rrf", "dense_fill")
#: Used when a model's config carries no calibrated values.
DEFAULT_ALPHA = 0.3
DEFAULT_HOP_PENALTY = 0.1
#: RRF's rank offset (the usual 60).
RRF_K = 60
#: Title links: added to a linked passage's similarity to the question, and how many of the best hop-1
#: hits have their mentions followed. Chosen on the dev sets (``python benchmarks/multihop.py --sweep``).
LINK_BONUS = 0.3
LINK_FROM = 3


# ------------------------------------------------------------------------------------------------ the hop tree
@dataclass
class HopNode:
    """One retrieved passage in a question's hop tree.

    ``score`` is the similarity of the passage to the query that found it; ``path_score`` is
    ``score`` at hop 1 and ``alpha * parent.path_score + (1 - alpha) * score - hop_penalty`` later;
    ``question_sim`` is the passage's similarity to the question itself; ``status`` is ``kept`` or
    why it was pruned (``duplicate``, ``layer_top_k``, ``stop``); ``via`` is how it was found:
    ``dense`` (hop-1 search), ``hop`` (the hop network's next query) or ``link`` (its title is
    mentioned by the question or by the parent passage; ``score`` is then its question similarity and
    ``path_score`` that plus the link bonus), ``entity`` (the same for an untitled passage, by the
    subject its opening names: :func:`~latentrag.retrievers.links.subject_of`); a hop-1 hit that is also
    linked is ``dense+link`` and gets the same path score.
    """

    id: str
    text: str
    hop: int
    score: float
    path_score: float
    parent_id: str | None = None
    question_sim: float = float("-inf")
    status: str = "kept"
    via: str = "dense"
    children: list[HopNode] = field(default_factory=list)


@dataclass
class HopTrace:
    """The hop tree of one question plus the final hits; ``render()`` (and ``str()``) draws it."""

    query: str
    roots: list[HopNode]
    hits: list[Hit]
    hops_run: int
    stop_reason: str

    def render(self, width: int = 70, show_pruned: bool = False) -> str:
        final = {h.id: i + 1 for i, h in enumerate(self.hits)}
        lines = [f"Q: {self.query}", f"   ({self.hops_run} hop(s) run; {self.stop_reason})"]

        def walk(nodes: list[HopNode], prefix: str) -> None:
            shown = [n for n in nodes if show_pruned or n.status == "kept"]
            for i, node in enumerate(shown):
                last = i == len(shown) - 1
                mark = f"#{final[node.id]}" if node.id in final else "  "
                text = " ".join(node.text.split())
                text = text if len(text) <= width else text[: width - 3] + "..."
                tag = "" if node.status == "kept" else f" [pruned: {node.status}]"
                how = {"link": " link", "entity": " entity", "dense+link": " link", "hop": ""}.get(node.via, "")
                lines.append(f"{prefix}{'└─ ' if last else '├─ '}{mark:>3} hop {node.hop}{how} "
                             f"sim={node.score:.3f} path={node.path_score:.3f} [{node.id}] {text}{tag}")
                walk(node.children, prefix + ("   " if last else "│  "))

        walk(self.roots, "")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


# ------------------------------------------------------------------------------------------------ pure functions
def layer_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` of a whole layer, best first (ties: lower index first).

    The layer is the concatenation of every branch's children, so it is *not* sorted; a plain
    ``argpartition`` over it selects the true top-k (the public TreeHop code mistook an argsort for
    ranks here). ``-inf`` entries are never selected.

    >>> layer_top_k(np.array([0.9, 0.5, 0.8, 0.7]), 2).tolist()
    [0, 2]
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    valid = np.flatnonzero(np.isfinite(s))
    if k <= 0 or valid.size == 0:
        return np.zeros(0, dtype=np.int64)
    if valid.size > k:
        part = np.argpartition(-s[valid], k - 1)[:k]
        valid = valid[part]
    order = np.lexsort((valid, -s[valid]))
    return valid[order].astype(np.int64)


def fuse(layers: list[list[HopNode]], k: int, fusion: str, dense_keep: float = 0.0) -> list[tuple[HopNode, float]]:
    """Choose the final ``k`` nodes across hop layers (each layer best first, ids unique overall).

    - ``path``: ``max(question_sim, path_score)``: a later-hop passage displaces a dense hit only when
      its path through a strong parent scores higher than the dense hit's own similarity.
    - ``rrf``: reciprocal-rank fusion of the per-hop rankings, ``1 / (60 + rank)``.
    - ``dense_fill``: the first ``dense_keep * k`` hop-1 passages, then later-hop passages by path score,
      then the remaining hop-1 passages (fused score: ``1 / position``).
    """
    m = min(k, int(dense_keep * k))
    if fusion == "path":
        every = [(n, max(n.question_sim, n.path_score)) for layer in layers for n in layer]
        kept = {n.id for n in layers[0][:m]} if layers else set()
        # the reserved dense prefix first, then everything else by fused score
        every.sort(key=lambda t: (t[0].id not in kept, -t[1], t[0].hop))
        return every[:k]
    if fusion == "rrf":
        scored = [(n, 1.0 / (RRF_K + r + 1)) for layer in layers for r, n in enumerate(layer)]
        scored.sort(key=lambda t: (-t[1], t[0].hop))
        return scored[:k]
    if fusion == "dense_fill":
        first = layers[0] if layers else []
        later = sorted((n for layer in layers[1:] for n in layer), key=lambda n: -n.path_score)
        order = first[: max(m, 1)] + later + first[max(m, 1) :]
        return [(n, 1.0 / (i + 1)) for i, n in enumerate(order[:k])]
    msg = f"fusion must be one of {list(FUSIONS)}, got {fusion!r}."
    raise InvalidInputError(msg)


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class HopSettings:
    """The scoring and pruning settings of a :class:`MultiHopRetriever`, as data. ``"auto"`` values are
    resolved from the dev-calibrated values a :class:`~latentrag.models.hop.HopModel` stores
    (:meth:`from_model`), as :class:`~latentrag.retrievers.tool_index.BlendWeights` is for tools."""

    fusion: str = "path"
    alpha: float = DEFAULT_ALPHA
    hop_penalty: float = DEFAULT_HOP_PENALTY
    dense_keep: float = 0.3
    stop_score: float | None = None
    link_bonus: float = LINK_BONUS
    link_from: int = LINK_FROM

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            msg = f"fusion must be one of {list(FUSIONS)}, got {self.fusion!r}."
            raise InvalidInputError(msg)
        keep = self.dense_keep
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep <= 1:
            msg = f"dense_keep must be a fraction in [0, 1], got {keep!r}."
            raise InvalidInputError(msg)
        if not 0.0 <= self.alpha <= 1.0:
            msg = f"alpha must be in [0, 1], got {self.alpha!r}."
            raise InvalidInputError(msg)
        check_positive_int("link_from", self.link_from)

    @classmethod
    def from_model(cls, model: HopModel, **values: object) -> HopSettings:
        """Settings with every ``"auto"`` value taken from ``model`` (its calibration, else the default)."""
        extra = model.extra

        def pick(name: str, value: object, default: float) -> float:
            if value == "auto":
                return float(extra.get(name, default))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                msg = f"{name} must be a float or 'auto', got {value!r}."
                raise InvalidInputError(msg)
            return float(value)

        stop = values.get("stop_score", "auto")
        if stop == "auto":
            stop = extra.get("stop_score")
        if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, float))):
            msg = f"stop_score must be a float, 'auto' or None, got {stop!r}."
            raise InvalidInputError(msg)
        return cls(
            fusion=str(values.get("fusion", "path")),
            alpha=pick("alpha", values.get("alpha", "auto"), DEFAULT_ALPHA),
            hop_penalty=pick("hop_penalty", values.get("hop_penalty", "auto"), DEFAULT_HOP_PENALTY),
            dense_keep=values.get("dense_keep", 0.3),  # type: ignore[arg-type]  # checked in __post_init__
            stop_score=None if stop is None else float(stop),
            link_bonus=pick("link_bonus", values.get("link_bonus", LINK_BONUS), LINK_BONUS),
            link_from=values.get("link_from", LINK_FROM),  # type: ignore[arg-type]  # checked in __post_init__
        )


@dataclass
class Frontier:
    """The branches to expand at the next hop, as parallel rows: the question each belongs to, its node,
    the query vector that found it and its passage vector (the hop network's two inputs)."""

    question: list[int] = field(default_factory=list)
    nodes: list[HopNode] = field(default_factory=list)
    queries: list[np.ndarray] = field(default_factory=list)
    passages: list[np.ndarray] = field(default_factory=list)

    def add(self, qi: int, node: HopNode, query: np.ndarray, passage: np.ndarray) -> None:
        self.question.append(qi)
        self.nodes.append(node)
        self.queries.append(query)
        self.passages.append(passage)

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass
class _Tree:
    """One question's search state: the ids in its tree, the roots, the kept nodes of each hop, the hits."""

    seen: set[str] = field(default_factory=set)
    roots: list[HopNode] = field(default_factory=list)
    layers: list[list[HopNode]] = field(default_factory=lambda: [[]])
    hits: dict[str, Hit] = field(default_factory=dict)
    hops_run: int = 1
    stop_reason: str = "no branch left"


# ------------------------------------------------------------------------------------------------ retriever
class MultiHopRetriever(BaseRetriever):
    """TreeHop multi-hop retrieval over any :class:`~latentrag.stores.base.Store`.

    Args:
        store: the passages (any Store; vectors are read back through ``search(with_vectors=True)``).
        k: passages returned (deduplicated, chosen across hops by ``fusion``).
        n_hops: maximum hops (1 = plain dense retrieval).
        top_n: hits searched per query at every hop; also the hop-1 nodes that are expanded.
        layer_k: layer-wise top-K, the nodes a later hop keeps and expands (default ``top_n``).
        model: a :class:`~latentrag.models.hop.HopModel`, a folder saved by it, or ``None`` for the
            shipped weights. It must have been trained for the store's encoder.
        fusion: ``"path"``, ``"rrf"`` or ``"dense_fill"`` (see :func:`fuse`).
        alpha: weight of the parent's path score in a child's path score; ``"auto"`` takes the
            dev-calibrated value stored with the model.
        hop_penalty: subtracted from a child's path score per hop; ``"auto"`` as for ``alpha``.
        dense_keep: fraction of ``k`` reserved for the best dense (hop-1) passages, placed first; the
            remaining slots go to every passage by fused score.
        stop_score: a branch ends when its best child's similarity is below this; ``"auto"`` takes the
            value calibrated on dev data and stored with the model; ``None`` disables the stop.
        links: title links (see the module docstring; with ``n_hops >= 2``): ``"auto"`` uses them when
            the store can list its documents (``ids()`` and ``get()``), ``True`` requires that, ``False``
            turns them off; a :class:`~latentrag.retrievers.links.TitleLinks` may be passed to share one index.
        link_bonus: added to a linked passage's similarity to the question.
        link_from: how many of the best hop-1 hits have their title mentions followed.
        filter: metadata filter passed to every search (and applied to linked passages).
        first_stage: how hop 1 is found: ``"auto"`` (the default: hybrid where the store can list its
            documents, else dense), ``"dense"`` (the store's search), ``"hybrid"`` or a
            :class:`~latentrag.retrievers.hybrid.HybridRetriever` over the same store (dense + BM25 fused).
            Later hops are the hop network's dense searches. On the shared multi-hop dev sets the
            hybrid first stage adds 0.7-4.4 recall@10 points to multi-hop (``benchmarks/hybrid.py``).
        hop_network: whether later hops run the hop network (``n_hops - 1`` rounds of next queries and
            searches). ``"auto"`` (the default) runs it after a dense first stage and not after the hybrid
            one: on the dev sets its children added recall after dense hop-1 lists but only displaced
            better first-stage hits after hybrid ones (``benchmarks/multihop.py``, the ``hop_network``
            rows). Title and entity links run either way.

    The resolved scoring settings are ``self.settings`` (a frozen :class:`HopSettings`); ``self.alpha``,
    ``self.stop_score`` and the other setting names read from it.

    >>> from latentrag import FaissStore
    >>> store = FaissStore.from_texts(["Paris is in France.", "Rome is in Italy."], ids=["p", "r"])
    >>> [h.id for h in MultiHopRetriever(store, k=2).retrieve("Which country is Rome in?")][0]
    'r'
    """

    #: Per-query provenance in each hit's metadata; the framework adapters group it with the score.
    retrieval_keys = frozenset({"hop", "via", "parent_id", "path_score", "similarity", "question_similarity",
                                "dense_score", "lexical_score"})

    def __init__(
        self,
        store: Store,
        k: int = 10,
        n_hops: int = 2,
        top_n: int = 5,
        *,
        layer_k: int | None = None,
        model: HopModel | str | os.PathLike[str] | None = None,
        fusion: Fusion = "path",
        alpha: float | Literal["auto"] = "auto",
        hop_penalty: float | Literal["auto"] = "auto",
        dense_keep: float = 0.3,
        stop_score: float | Literal["auto"] | None = "auto",
        links: bool | Literal["auto"] | TitleLinks = "auto",
        link_bonus: float = LINK_BONUS,
        link_from: int = LINK_FROM,
        filter: Filter | None = None,
        first_stage: Literal["auto", "dense", "hybrid"] | HybridRetriever = "auto",
        hop_network: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(k)
        self.n_hops = check_positive_int("n_hops", n_hops)
        self.top_n = check_positive_int("top_n", top_n)
        self.layer_k = self.top_n if layer_k is None else check_positive_int("layer_k", layer_k)
        self.store = store
        self.filter = filter
        self.model = _hop_model(model, store)
        self.settings = HopSettings.from_model(
            self.model, fusion=fusion, alpha=alpha, hop_penalty=hop_penalty, dense_keep=dense_keep,
            stop_score=stop_score, link_bonus=link_bonus, link_from=link_from,
        )
        self.links = _title_links(links, store)
        self.first_stage = _first_stage(first_stage, store)
        if hop_network == "auto":
            # measured on the dev sets (benchmarks/multihop.py): after a dense first stage the network's
            # children add recall; after the hybrid one they only displace its better hits
            hop_network = self.first_stage is None
        if not isinstance(hop_network, bool):
            msg = f"hop_network must be True, False or 'auto', got {hop_network!r}."
            raise InvalidInputError(msg)
        #: Whether later hops run the hop network (title and entity links run either way).
        self.hop_network = hop_network

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        # a retriever pickled before ``hop_network`` existed always ran the network: it still does
        super().__setstate__({"hop_network": True, **state})

    def __getattr__(self, name: str) -> object:
        # the settings' names (alpha, stop_score, ...) read from the frozen settings
        settings = self.__dict__.get("settings")
        if settings is not None and name in HopSettings.__dataclass_fields__:
            return getattr(settings, name)
        msg = f"{type(self).__name__!r} object has no attribute {name!r}"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        s = self.settings
        return (f"MultiHopRetriever(k={self.k}, n_hops={self.n_hops}, top_n={self.top_n}, layer_k={self.layer_k}, "
                f"fusion={s.fusion!r}, alpha={s.alpha}, hop_penalty={s.hop_penalty}, "
                f"stop_score={s.stop_score}, links={self.links is not None}, "
                f"first_stage={'dense' if self.first_stage is None else 'hybrid'!r}, hop_network={self.hop_network})")

    # -------------------------------------------------------------------------------------------- public
    def trace(self, query: str, k: int | None = None, *, filter: Filter | None = None) -> HopTrace:
        """Run one query and return its hop tree (kept and pruned nodes) with the final hits."""
        return self._run([check_query(query)], self._k(k), None, self.effective_filter(filter))[0]

    def trace_batch(self, queries: Sequence[str], k: int | None = None,
                    vectors: np.ndarray | None = None, *, filter: Filter | None = None) -> list[HopTrace]:
        """:meth:`trace` for many queries (optionally with precomputed query embeddings)."""
        return self._run([check_query(q) for q in queries], self._k(k), vectors, self.effective_filter(filter))

    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None, *,
                        filter: Filter | None = None) -> list[list[Hit]]:
        return [t.hits for t in self._run(queries, k, vectors, filter)]

    # -------------------------------------------------------------------------------------------- core
    def _run(self, queries: list[str], k: int, vectors: np.ndarray | None,
             filter: Filter | None = None) -> list[HopTrace]:
        flt = self.filter if filter is None else filter  # the call's effective filter (constructor AND call)
        q0 = self._question_vectors(queries, vectors)
        trees, frontier = self._first_hop(queries, q0, k, flt)
        linked = (self._link(queries, q0, [t.roots for t in trees], [t.seen for t in trees],
                             [t.hits for t in trees], k, flt)
                  if self.links is not None and self.n_hops > 1 else [[] for _ in queries])
        if self.n_hops == 1 or not self.hop_network:
            for tree, found in zip(trees, linked, strict=True):
                tree.hops_run = max([1, *(node.hop for node in found)])
                tree.stop_reason = "n_hops reached" if self.n_hops == 1 else "hop network off"
        for hop in range(2, self.n_hops + 1):
            if not frontier:  # also when the hop network is off: _first_hop then leaves it empty
                break
            frontier = self._expand(hop, frontier, trees, q0, flt)
        return [HopTrace(query, tree.roots, self._fuse(tree, linked[qi], k), tree.hops_run, tree.stop_reason)
                for qi, (query, tree) in enumerate(zip(queries, trees, strict=True))]

    def _question_vectors(self, queries: list[str], vectors: np.ndarray | None) -> np.ndarray:
        return query_vectors(self.store, queries, vectors)

    def _first_hop(self, queries: list[str], q0: np.ndarray, k: int,
                   filter: Filter | None) -> tuple[list[_Tree], Frontier]:
        """The first stage's search for every question (dense, or hybrid): the roots of each tree, and the
        best ``top_n`` as the frontier."""
        n = max(k, self.top_n)
        if self.first_stage is None:
            first = self.store.search(q0, n, filter=filter, with_vectors=True)
        else:
            first = self.first_stage.fused(queries, q0, n, filter)
        trees = [_Tree() for _ in first]
        frontier = Frontier()
        for qi, hits in enumerate(first):
            tree = trees[qi]
            # hybrid: the fused order, on the cosine scale the later hops' path scores use (the r-th best
            # cosine among the candidates goes to the r-th fused hit), so fusion across hops stays fair
            scale = (sorted((float(h.meta["dense_score"]) for h in hits), reverse=True)
                     if self.first_stage is not None else [h.score for h in hits])
            for rank, h in enumerate(hits):
                if h.id in tree.seen:
                    continue
                tree.seen.add(h.id)
                tree.hits[h.id] = h
                node = HopNode(h.id, h.text, 1, scale[rank], scale[rank], question_sim=scale[rank])
                tree.roots.append(node)
                tree.layers[0].append(node)
                if rank < self.top_n and self.n_hops > 1 and self.hop_network:
                    frontier.add(qi, node, q0[qi], _vector_of(h, self.store))
        return trees, frontier

    def _expand(self, hop: int, frontier: Frontier, trees: list[_Tree], q0: np.ndarray,
                filter: Filter | None) -> Frontier:
        """One hop for every branch of every question: one hop-network forward, one batched search, then
        :meth:`_prune` per question. Returns the next frontier."""
        qnext = self.model.next_queries(np.stack(frontier.queries), np.stack(frontier.passages))
        # A next query often finds its own parent (or other passages already in the tree) again:
        # fetch a margin so each branch still gets ``top_n`` new children after redundancy pruning.
        found = self.store.search(qnext, 2 * self.top_n, filter=filter, with_vectors=True)
        cand: dict[int, list[tuple[int, Hit]]] = {}
        for row, hits in enumerate(found):
            seen_q = trees[frontier.question[row]].seen
            fresh = [h for h in hits if h.id not in seen_q][: self.top_n]
            dupes = [h for h in hits[: self.top_n] if h.id in seen_q]
            cand.setdefault(frontier.question[row], []).extend((row, h) for h in fresh + dupes)
        nxt = Frontier()
        for qi, items in cand.items():
            self._prune(hop, qi, items, frontier, qnext, trees[qi], q0[qi], nxt)
        return nxt

    def _prune(self, hop: int, qi: int, items: list[tuple[int, Hit]], frontier: Frontier, qnext: np.ndarray,
               tree: _Tree, q: np.ndarray, nxt: Frontier) -> None:
        """Score one question's candidate children, prune them (duplicate, score stop, layer-wise top-K),
        attach them to their parents, and put the kept ones on ``nxt`` when another hop follows."""
        s = self.settings
        tree.hops_run = hop
        layer: list[HopNode] = []
        layer_vecs: list[np.ndarray] = []
        scores: list[float] = []
        best_child: dict[int, float] = {}
        for row, h in items:  # the best *new* child: a re-found parent must not keep a branch alive
            if h.id not in tree.seen:
                best_child[row] = max(best_child.get(row, -np.inf), h.score)
        layer_seen: dict[str, int] = {}
        for row, h in items:
            parent = frontier.nodes[row]
            vec = _vector_of(h, self.store)
            node = HopNode(h.id, h.text, hop, h.score,
                           s.alpha * parent.path_score + (1 - s.alpha) * h.score - s.hop_penalty,
                           parent_id=parent.id, question_sim=float(vec @ q), via="hop")
            parent.children.append(node)
            if h.id in tree.seen:
                node.status = "duplicate"
            elif s.stop_score is not None and best_child.get(row, -np.inf) < s.stop_score:
                node.status = "stop"
            elif h.id in layer_seen:
                other = layer[layer_seen[h.id]]
                if node.path_score > other.path_score:
                    other.status, scores[layer_seen[h.id]] = "duplicate", -np.inf
                    layer_seen[h.id] = len(layer)
                else:
                    node.status = "duplicate"
            else:
                layer_seen[h.id] = len(layer)
            layer.append(node)
            layer_vecs.append(vec)
            scores.append(node.path_score if node.status == "kept" else -np.inf)
            tree.hits.setdefault(h.id, h)
        keep = set(layer_top_k(np.array(scores), self.layer_k).tolist())
        kept_layer = []
        for j, node in enumerate(layer):
            if node.status != "kept":
                continue
            if j not in keep:
                node.status = "layer_top_k"
                continue
            tree.seen.add(node.id)
            kept_layer.append(node)
            if hop < self.n_hops:
                nxt.add(qi, node, qnext[items[j][0]], layer_vecs[j])
        kept_layer.sort(key=lambda nd: -nd.path_score)
        tree.layers.append(kept_layer)
        if not kept_layer:
            stopped = any(nd.status == "stop" for nd in layer)
            tree.stop_reason = f"score stop at hop {hop}" if stopped else f"no new passage at hop {hop}"
        elif hop == self.n_hops:
            tree.stop_reason = "n_hops reached"

    def _fuse(self, tree: _Tree, linked: list[HopNode], k: int) -> list[Hit]:
        """The final ``k`` hits of one question across hops and links, with their hop provenance in metadata."""
        s = self.settings
        for node in tree.layers[0]:
            if node.via == "dense+link":
                node.path_score = max(node.path_score, node.question_sim + s.link_bonus)
        hits = []
        for node, fused in fuse(tree.layers + [linked], k, s.fusion, s.dense_keep):
            base = tree.hits[node.id]
            meta = dict(base.meta)
            meta.update(hop=node.hop, via=node.via, parent_id=node.parent_id, path_score=float(node.path_score),
                        similarity=float(node.score), question_similarity=float(node.question_sim))
            hits.append(base.copy(score=float(fused), metadata=meta))
        return hits

    def _link(self, queries: list[str], q0: np.ndarray, roots: list[list[HopNode]], seen: list[set[str]],
              hits_by_id: list[dict[str, Hit]], k: int, filter: Filter | None) -> list[list[HopNode]]:
        """The passages linked by title from each question and its best ``link_from`` hop-1 hits that
        are not in the tree yet, as nodes (at most ``k`` per question, best first); one ``get`` and one
        ``vectors`` call for the whole batch."""
        links = self.links
        assert links is not None
        wanted: list[dict[str, HopNode | None]] = []
        for qi, query in enumerate(queries):
            found: dict[str, HopNode | None] = {}
            for target in links.mentioned(query):
                found.setdefault(target, None)
            for node in roots[qi][: self.settings.link_from]:
                for target in links.mentioned(node.text, exclude_title=links.title(node.id)):
                    found.setdefault(target, node)
            # A hop-1 hit that the question or another hit mentions is marked now and boosted like a linked
            # passage after the last hop, so the boost does not flow into its hop-network children's scores.
            for dense_node in roots[qi]:
                if dense_node.id in found:
                    dense_node.via = "dense+link"
            wanted.append({t: p for t, p in found.items() if t not in seen[qi]})
        ids = sorted({t for w in wanted for t in w})
        if not ids:
            return [[] for _ in queries]
        docs = {h.id: h for h in links.fetch(ids)}  # texts and vectors read together
        out: list[list[HopNode]] = []
        for qi, targets in enumerate(wanted):
            nodes: list[tuple[HopNode, HopNode | None]] = []
            for target, parent in targets.items():
                doc = docs.get(target)
                if doc is None or not matches(doc.meta, filter):
                    continue
                sim = float(np.asarray(doc.vector, dtype=np.float32) @ q0[qi])
                nodes.append((HopNode(target, doc.text, 1 if parent is None else 2, sim, sim + self.settings.link_bonus,
                                      parent_id=None if parent is None else parent.id, question_sim=sim,
                                      via="entity" if links.inferred(target) else "link"),
                              parent))
            nodes.sort(key=lambda pair: -pair[0].path_score)
            for node, parent in nodes[:k]:
                seen[qi].add(node.id)
                hits_by_id[qi][node.id] = docs[node.id].copy()
                (roots[qi] if parent is None else parent.children).append(node)
            out.append([node for node, _ in nodes[:k]])
        return out


def _hop_model(model: object, store: Store) -> HopModel:
    enc_name, enc_dim = str(store.encoder.name), int(store.dim)
    if model is None:
        return shipped_model(enc_name, enc_dim)
    if isinstance(model, HopModel):
        check_model_encoder(model.config(), enc_name, enc_dim, where="the given HopModel")
        return model
    if isinstance(model, (str, os.PathLike)):
        return HopModel.load(model, encoder_name=enc_name, encoder_dim=enc_dim)
    msg = f"model must be a HopModel, a folder path or None, got {type(model).__name__}."
    raise InvalidInputError(msg)


def _title_links(links: object, store: Store) -> TitleLinks | None:
    if isinstance(links, TitleLinks):
        return links
    if links is False:
        return None
    if links is True:
        return TitleLinks(store)
    if links == "auto":
        return TitleLinks(store) if can_list(store) else None
    msg = f"links must be True, False, 'auto' or a TitleLinks, got {links!r}."
    raise InvalidInputError(msg)


def _first_stage(first_stage: object, store: Store) -> HybridRetriever | None:
    from latentrag.retrievers.hybrid import HybridRetriever

    if first_stage == "dense":
        return None
    if first_stage == "auto":
        import importlib.util

        return HybridRetriever(store) if can_list(store) and importlib.util.find_spec("bm25s") else None
    if first_stage == "hybrid":
        return HybridRetriever(store)
    if isinstance(first_stage, HybridRetriever):
        if first_stage.store is not store:
            msg = "first_stage is a HybridRetriever over another store; build it over this retriever's store."
            raise InvalidInputError(msg)
        return first_stage
    msg = f"first_stage must be 'auto', 'dense', 'hybrid' or a HybridRetriever, got {first_stage!r:.80}."
    raise InvalidInputError(msg)


def _vector_of(hit: Hit, store: Store) -> np.ndarray:
    if hit.vector is not None:
        return np.asarray(hit.vector, dtype=np.float32)
    return np.asarray(store.vectors([hit.id])[0], dtype=np.float32)

