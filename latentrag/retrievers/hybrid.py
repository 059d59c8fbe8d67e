"""``HybridRetriever``: dense and lexical (BM25) retrieval fused into one ranking.

Dense retrieval finds paraphrases; BM25 finds the rare names, numbers and terms a 384-d sentence vector
keeps only faintly. Each query runs both searches (``candidates`` hits each), and the union is ranked by
``fusion``:

- ``"rrf"``: reciprocal rank fusion, ``sum(1 / (rrf_k + rank))`` over the two lists (a passage missing
  from one list gets nothing from it). Needs no score scale; the classic default.
- ``"convex"``: ``weight * dense + (1 - weight) * lexical``, the dense cosine of every candidate (exact,
  from its stored vector) min-max scaled over the candidates, and the BM25 score divided by the query's
  best (0 where a candidate shares no term with the query).

The defaults were chosen on the shared multi-hop dev sets (``benchmarks/hybrid.py --select``) and are
reported on SciFact, which was not selected on. Needs ``latentrag[hybrid]`` (``bm25s``) and a store that
can list its documents. The BM25 index (:class:`~latentrag.retrievers.lexical.BM25Index`) follows the
store's writes; share one between retrievers with ``index=``, save it with ``retriever.index.save(path)``.

Hits carry ``metadata["dense_score"]`` (the cosine), ``metadata["lexical_score"]`` (BM25, 0 if not found
lexically) and ``metadata["via"]`` (``"dense"``, ``"lexical"`` or ``"both"``); ``score`` is the fused score.

>>> from latentrag import FaissStore
>>> store = FaissStore.from_texts(["The X-17 valve is rated to 40 bar.", "Pumps move fluids."], ids=["v", "p"])
>>> HybridRetriever(store, k=1).retrieve("X-17 rating")[0].id
'v'
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from latentrag.errors import InvalidInputError, check_positive_int
from latentrag.retrievers.base import BaseRetriever, query_vectors
from latentrag.retrievers.lexical import BM25Index
from latentrag.stores.base import Filter, Store, get_existing
from latentrag.types import Hit
from latentrag.validate import check_filter

Fusion = Literal["rrf", "convex"]
FUSIONS = ("rrf", "convex")
#: Defaults selected on dev (see the module docstring).
DEFAULT_FUSION: Fusion = "convex"
DEFAULT_WEIGHT = 0.6
DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 50


class HybridRetriever(BaseRetriever):
    """Dense + BM25 retrieval over ``store``, fused (see the module docstring).

    Args:
        store: the passages; it must list its documents (FaissStore, PgVectorStore, MilvusStore).
        k: passages returned.
        fusion: ``"rrf"`` or ``"convex"``.
        weight: the dense share of the convex fusion, in [0, 1] (1: dense alone, 0: BM25 alone).
        rrf_k: the rank offset of reciprocal rank fusion.
        candidates: hits taken from each search before fusion (at least ``k``).
        index: a :class:`~latentrag.retrievers.lexical.BM25Index` of ``store`` to share, else one is built.
        filter: metadata filter applied to both searches.
    """

    technique = "hybrid"
    retrieval_keys = frozenset({"dense_score", "lexical_score", "via"})

    def __init__(self, store: Store, k: int = 4, *, fusion: Fusion = DEFAULT_FUSION, weight: float = DEFAULT_WEIGHT,
                 rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES, index: BM25Index | None = None,
                 filter: Filter | None = None) -> None:
        super().__init__(k)
        if fusion not in FUSIONS:
            msg = f"fusion must be one of {', '.join(map(repr, FUSIONS))}, got {fusion!r}."
            raise InvalidInputError(msg)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            msg = f"weight must be a number in [0, 1] (the dense share of the fused score), got {weight!r}."
            raise InvalidInputError(msg)
        if index is not None and not isinstance(index, BM25Index):
            msg = f"index must be a BM25Index of the store, got {type(index).__name__} ({index!r:.80})."
            raise InvalidInputError(msg)
        if index is not None and index.store is not store:
            msg = "index was built for another store; build it with BM25Index(store) for this retriever's store."
            raise InvalidInputError(msg)
        self.store = store
        self.fusion: Fusion = fusion
        self.weight = float(weight)
        self.rrf_k = check_positive_int("rrf_k", rrf_k)
        self.candidates = check_positive_int("candidates", candidates)
        self.filter = check_filter(filter)
        self.index = index if index is not None else BM25Index(store)

    def __repr__(self) -> str:
        how = f"weight={self.weight}" if self.fusion == "convex" else f"rrf_k={self.rrf_k}"
        flt = "" if self.filter is None else f", filter={self.filter!r}"
        return (f"HybridRetriever(k={self.k}, fusion={self.fusion!r}, {how}, candidates={self.candidates}{flt}, "
                f"store={self.store!r})")

    def _retrieve_batch(self, queries: list[str], k: int, vectors: np.ndarray | None, *,
                        filter: Filter | None = None) -> list[list[Hit]]:
        flt = self.filter if filter is None else filter
        q = query_vectors(self.store, queries, vectors)
        return self.fused(queries, q, k, flt)

    def fused(self, queries: list[str], q: np.ndarray, k: int, filter: Filter | None) -> list[list[Hit]]:
        """The fused top ``k`` per query, given the query vectors ``q``; every hit carries its ``vector``
        (the first stage of :class:`~latentrag.retrievers.multihop.MultiHopRetriever` reads it)."""
        n = max(self.candidates, k)
        dense = self.store.search(q, n, filter=filter, with_vectors=True)
        lexical = self.index.search(queries, n, filter=filter)
        missing = sorted({i for qi, row in enumerate(lexical) for i, _ in row} - {h.id for hs in dense for h in hs})
        fetched = {h.id: h for h in get_existing(self.store, missing, with_vectors=True)} if missing else {}
        return [self._fuse(q[qi], dense[qi], lexical[qi], fetched, k) for qi in range(len(queries))]

    def _fuse(self, qv: np.ndarray, dense: list[Hit], lexical: list[tuple[str, float]], fetched: dict[str, Hit],
              k: int) -> list[Hit]:
        by_id = {h.id: h for h in dense}
        for i, _ in lexical:
            if i not in by_id and i in fetched:
                by_id[i] = fetched[i]
        ids = list(by_id)
        if not ids:
            return []
        lex = dict(lexical)
        cos = np.array([_cosine(qv, by_id[i]) for i in ids], dtype=np.float64)
        bm = np.array([lex.get(i, 0.0) for i in ids], dtype=np.float64)
        if self.fusion == "rrf":
            d_rank = {h.id: r for r, h in enumerate(dense)}
            l_rank = {i: r for r, (i, _) in enumerate(lexical)}
            fused = np.array([(1.0 / (self.rrf_k + d_rank[i] + 1) if i in d_rank else 0.0)
                              + (1.0 / (self.rrf_k + l_rank[i] + 1) if i in l_rank else 0.0) for i in ids])
        else:
            span = cos.max() - cos.min()
            d = (cos - cos.min()) / span if span > 0 else np.ones_like(cos)
            top = bm.max()
            lx = bm / top if top > 0 else np.zeros_like(bm)
            fused = self.weight * d + (1.0 - self.weight) * lx
        in_dense = {h.id for h in dense}
        order = sorted(range(len(ids)), key=lambda j: (-fused[j], -cos[j], ids[j]))[:k]
        out = []
        for j in order:
            i = ids[j]
            via = "both" if i in in_dense and i in lex else ("dense" if i in in_dense else "lexical")
            meta = dict(by_id[i].meta)
            meta.update(dense_score=float(cos[j]), lexical_score=float(bm[j]), via=via)
            out.append(by_id[i].copy(score=float(fused[j]), metadata=meta))
        return out


def _cosine(q: np.ndarray, hit: Hit) -> float:
    return float(np.dot(q, hit.vector)) if hit.vector is not None else float(hit.score)
