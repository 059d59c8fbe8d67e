"""Hybrid (dense + BM25) retrieval against dense and BM25 alone, and as the first stage of multi-hop.

    python benchmarks/hybrid.py [--plot] [--scifact-queries 300]

Sets: the shared multi-hop dev sets (HotpotQA, HotpotQA extra, 2Wiki; one FaissStore over the union of
their pools and gold passages, recall@10 of gold passages by title, as ``benchmarks/multihop.py``), the
same sets with the titles stripped from the passages (``untitled``: what most corpora look like), and
SciFact test (5,183 abstracts, nDCG@10 on its BEIR qrels).

Selection (the shipped ``fusion``/``weight``): every fusion rule of a small grid is scored by the mean
recall@10 over the titled multi-hop dev sets only; the choice made on two of the three sets is also
reported on the third (leave one set out), and SciFact is never selected on: its row is the out-of-domain
check of the choice. Every arm runs in the same process on the same stores; the ratio to dense is in
each row. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import data_root, plot_path, report, untitled

from latentrag import FaissStore
from latentrag.encoders import default_encoder
from latentrag.retrievers import DenseRetriever, HybridRetriever, MultiHopRetriever
from latentrag.retrievers.lexical import BM25Index
from latentrag.training.multihop import DevSet, DiskEmbeddingCache, load_dev, recall

K = 10
GRID: dict[str, dict[str, Any]] = {"rrf": {"fusion": "rrf"},
                                   **{f"convex_{w}": {"fusion": "convex", "weight": w}
                                      for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}}


class BM25Only:
    def __init__(self, store: Any, index: BM25Index) -> None:
        self.store, self.index = store, index

    def _retrieve_batch(self, queries: list[str], k: int, vectors: Any = None) -> list[list[Any]]:
        rows = self.index.search(queries, k)
        got = {h.id: h for h in self.store.get(sorted({i for r in rows for i, _ in r}), missing="skip")}
        return [[got[i] for i, _ in r if i in got] for r in rows]


def dev_recall(r: Any, sets: dict[str, DevSet]) -> dict[str, float]:
    return {n: round(100 * recall(r._retrieve_batch(ds.questions, K, ds.vectors), ds.gold, K), 2)
            for n, ds in sets.items()}


def scifact_test(limit: int | None) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """SciFact (benchmarks/rerank.py's loader): doc ids, docs, the test queries with qrels, their qrels."""
    from rerank import scifact

    qids, queries, doc_ids, docs, qrels = scifact()
    keep = [(q, text) for q, text in zip(qids, queries, strict=True) if q in qrels][: limit or None]
    return doc_ids, docs, [t for _, t in keep], {q: qrels[q] for q, _ in keep}


def ndcg10(hits: list[list[Any]], qrels: list[dict[str, int]]) -> float:
    out = []
    for hs, rel in zip(hits, qrels, strict=True):
        dcg = sum(rel.get(h.id, 0) / np.log2(i + 2) for i, h in enumerate(hs[:K]))
        ideal = sum(g / np.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:K]))
        out.append(dcg / ideal if ideal > 0 else 0.0)
    return round(100 * float(np.mean(out)), 2)


def ms_per_query(r: Any, queries: list[str]) -> float:
    t0 = time.perf_counter()
    for q in queries:
        r.retrieve(q)
    return round((time.perf_counter() - t0) * 1000 / len(queries), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scifact-queries", type=int, default=0, help="0: all 300")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    enc = default_encoder()
    cache = DiskEmbeddingCache(enc)
    titled, sets = load_dev(data_root(), cache)
    stores = {"titled": titled, "untitled": untitled(titled, cache)}
    res: dict[str, Any] = {"k": K, "metric": "recall@10 of gold passages (multi-hop dev), nDCG@10 (SciFact test)",
                           "n_passages": len(titled), "n_questions": {n: len(d.questions) for n, d in sets.items()},
                           "baseline": "DenseRetriever", "grid": {}}
    indexes = {name: BM25Index(s) for name, s in stores.items()}
    for name, idx in indexes.items():
        t0 = time.perf_counter()
        len(idx)
        res[f"bm25_build_s_{name}"] = round(time.perf_counter() - t0, 2)
    # ---- selection grid on the titled dev sets (and the untitled copy, reported, not selected on)
    for corpus, store in stores.items():
        row: dict[str, Any] = {"dense": dev_recall(DenseRetriever(store, k=K), sets),
                               "bm25": dev_recall(BM25Only(store, indexes[corpus]), sets)}
        for label, kw in GRID.items():
            row[label] = dev_recall(HybridRetriever(store, k=K, index=indexes[corpus], **kw), sets)
        res["grid"][corpus] = row
    names = list(sets)
    titled_grid = res["grid"]["titled"]

    def best(on: list[str]) -> str:
        return max(GRID, key=lambda lab: (np.mean([titled_grid[lab][n] for n in on]), lab))

    chosen = best(names)
    res["chosen_on_titled_dev"] = {"label": chosen, **GRID[chosen]}
    res["leave_one_set_out"] = {}
    for held in names:
        lab = best([n for n in names if n != held])
        res["leave_one_set_out"][held] = {"chosen_on_others": lab, "R@10": titled_grid[lab][held],
                                          "dense_R@10": titled_grid["dense"][held],
                                          "gain_points": round(titled_grid[lab][held] - titled_grid["dense"][held], 2)}
    # ---- the shipped default (whatever HybridRetriever() does) and multi-hop with it as the first stage
    for corpus, store in stores.items():
        row = {}
        dense = DenseRetriever(store, k=K)
        hybrid = HybridRetriever(store, k=K, index=indexes[corpus])
        mh = MultiHopRetriever(store, k=K)
        mh_h = MultiHopRetriever(store, k=K, first_stage=hybrid)
        for label, r in (("dense", dense), ("hybrid_default", hybrid), ("multihop", mh), ("multihop_hybrid", mh_h)):
            row[label] = dev_recall(r, sets)
        row["hybrid_gain_points"] = {n: round(row["hybrid_default"][n] - row["dense"][n], 2) for n in names}
        row["multihop_hybrid_gain_points_vs_multihop"] = {
            n: round(row["multihop_hybrid"][n] - row["multihop"][n], 2) for n in names}
        qs = [q for ds in sets.values() for q in ds.questions[: args.latency_queries // len(sets) + 1]]
        store.encoder = default_encoder(cache_size=0)  # latency on new questions: no embedding cache
        for label, r in (("dense", dense), ("hybrid_default", hybrid), ("multihop", mh), ("multihop_hybrid", mh_h)):
            row[label]["ms_per_query"] = ms_per_query(r, qs)
        row["latency_ratio_hybrid_vs_dense"] = round(row["hybrid_default"]["ms_per_query"]
                                                     / row["dense"]["ms_per_query"], 2)
        store.encoder = enc
        res[f"default_{corpus}"] = row
    # ---- SciFact test: out of domain, never selected on
    doc_ids, docs, queries, qrels = scifact_test(args.scifact_queries or None)
    t0 = time.perf_counter()
    sci = FaissStore.from_texts(docs, ids=doc_ids, encoder=enc, vectors=cache.embed(docs))
    sci_idx = BM25Index(sci)
    len(sci_idx)
    rels = list(qrels.values())
    qv = cache.embed(queries)
    sc: dict[str, Any] = {"n_docs": len(docs), "n_queries": len(queries), "build_s": round(time.perf_counter() - t0, 1)}
    arms: dict[str, Any] = {"dense": DenseRetriever(sci, k=K), "bm25": BM25Only(sci, sci_idx),
                            "hybrid_default": HybridRetriever(sci, k=K, index=sci_idx),
                            "hybrid_rrf": HybridRetriever(sci, k=K, index=sci_idx, fusion="rrf")}
    for label, r in arms.items():
        sc[label] = ndcg10(r._retrieve_batch(queries, K, qv), rels)
    sc["hybrid_gain_points"] = round(sc["hybrid_default"] - sc["dense"], 2)
    sc["ratio_hybrid_vs_dense"] = round(sc["hybrid_default"] / sc["dense"], 3)
    res["scifact_test"] = sc
    report("hybrid", res)
    if args.plot:
        plot(res)


def plot(res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, corpus in zip(axes, ("titled", "untitled"), strict=True):
        row = res["grid"][corpus]
        labels = list(row)
        sets = list(row["dense"])
        x = np.arange(len(labels))
        for j, n in enumerate(sets):
            ax.bar(x + j * 0.25, [row[lab][n] for lab in labels], 0.25, label=n)
        ax.set_xticks(x + 0.25, labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"R@10, {corpus} multi-hop dev")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot_path("hybrid"), dpi=120)


if __name__ == "__main__":
    main()
