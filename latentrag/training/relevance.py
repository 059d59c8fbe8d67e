"""Fit the shipped RelevanceFilter calibrations (reranker scores, MiniLM cosines, multi-hop provenance).

    latentrag train relevance --out DIR [--n-dirs 8] [--max-pairs 6000] [--only multihop|scores]

Labelled pairs: the TREC DL21 judged pool (relevant = grade >= 2), WikiQA train and TrecQA train
(binary), from ``rerank/pairs``. For each pair the shipped ``CrossEncoderReranker()`` logit and cosine
(from its own encoder pass, as ``compress`` records them) and the shipped MiniLM cosine are computed;
:func:`latentrag.compressors.relevance.fit_calibration` fits the query-conditioned Platt map and the
F1-best threshold on them (the reranker map on the logit and the cosine together: either alone is a weaker
cut). DL20 is kept for the benchmark.
Writes ``reranker.json`` and ``cosine.json``; seeded.

The multi-hop map (``multihop.json``, :class:`~latentrag.compressors.relevance.HopCalibration`) is fitted
on the hits ``MultiHopRetriever(store, k=10)`` returns for the multi-hop *training* questions
(``multihop/train.part*.jsonl``, their gold and pool passages as the corpus), once with titles and once
without (most corpora have none), gold passages as positives. Its threshold keeps ``--keep-gold`` (0.90,
the share the filter is meant to keep, fixed in advance, not tuned) of the gold passages on those training
hits. It is then measured on the three shared dev sets (never fitted on): share of the gold passages the
retriever found that the filter keeps, and share of the other hits it drops.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentrag.training.multihop import data_root

SOURCES = {"dl21_union_judged.tsv": 2, "wikiqa_train.tsv": 1, "trecqa_train.tsv": 1}


def labelled_pairs(root: Path, max_pairs: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """(query, passage, 0/1) from the fitting sources, whole queries sampled until ``max_pairs``."""
    csv.field_size_limit(1 << 30)
    by_query: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for name, min_grade in SOURCES.items():
        with (root / "rerank" / "pairs" / name).open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                label = int(float(row["label"]) >= min_grade)
                by_query.setdefault((name, row["qid"]), []).append((row["query"], row["passage"], label))
    groups = [g for g in by_query.values() if len({lab for _, _, lab in g}) == 2 or len(g) >= 5]
    random.Random(seed).shuffle(groups)
    out: list[tuple[str, str, int]] = []
    for g in groups:
        if len(out) >= max_pairs:
            break
        out += g
    return out


def multihop_rows(store: Any, dev: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~latentrag.compressors.relevance.hop_features` and gold labels of the hits
    ``MultiHopRetriever(store, k=k)`` returns for ``dev``'s questions (a ``training.multihop.DevSet``)."""
    from latentrag.compressors.relevance import HOP_FEATURES, hop_features, provenance
    from latentrag.retrievers import MultiHopRetriever

    xs, ys = [], []
    for hits, gold in zip(MultiHopRetriever(store, k=k)._retrieve_batch(dev.questions, k, dev.vectors), dev.gold,
                          strict=True):
        xs.append(hop_features([h.id for h in hits], [provenance(h) for h in hits]))  # type: ignore[misc]
        ys += [int(h.metadata["key"] in gold) for h in hits]
    return np.concatenate(xs) if xs else np.zeros((0, len(HOP_FEATURES))), np.asarray(ys)


def keep_drop(cal: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Share of the gold hits a multi-hop map keeps and of the other hits it drops, at its threshold."""
    keep = cal.probabilities(x) >= cal.threshold
    return {"gold_kept": round(float(keep[y == 1].mean()), 4),
            "others_dropped": round(float(1 - keep[y == 0].mean()), 4), "hits": len(y), "gold_hits": int(y.sum())}


def fit_multihop(root: Path, keep_gold: float = 0.90, k: int = 10) -> Any:
    """The multi-hop map fitted on the training questions and measured on the dev sets (see the module docs)."""
    from latentrag.compressors.relevance import HopCalibration
    from latentrag.encoders import default_encoder
    from latentrag.training.multihop import DiskEmbeddingCache, load_dev, untitled_store

    cache = DiskEmbeddingCache(default_encoder())
    train_store, train_sets = load_dev(root, cache, [str(root / "multihop" / "train.part*.jsonl")])
    dev_store, dev_sets = load_dev(root, cache)
    stores = {"train": {"titled": train_store, "untitled": untitled_store(train_store, cache)},
              "dev": {"titled": dev_store, "untitled": untitled_store(dev_store, cache)}}
    xs, ys = zip(*(multihop_rows(s, ds, k) for s in stores["train"].values() for ds in train_sets.values()),
                 strict=True)
    cal = HopCalibration.fit(np.concatenate(xs), np.concatenate(ys), keep_gold=keep_gold)
    dev = {f"{corpus}/{name}": keep_drop(cal, *multihop_rows(s, ds, k))
           for corpus, s in stores["dev"].items() for name, ds in dev_sets.items()}
    cal.report = {"fit_on": f"multihop/train.part*.jsonl (titled and untitled), MultiHopRetriever(store, k={k})",
                  "keep_gold": keep_gold, "train": keep_drop(cal, np.concatenate(xs), np.concatenate(ys)),
                  "dev_never_fitted": dev,
                  "command": f"latentrag train relevance --only multihop --keep-gold {keep_gold}"}
    return cal


def main(argv: list[str] | None = None) -> int:
    from latentrag.compressors.relevance import SHIPPED_DIR, RelevanceFilter, fit_calibration, precision_recall
    from latentrag.compressors.rerank import CrossEncoderReranker
    from latentrag.encoders import default_encoder

    ap = argparse.ArgumentParser(prog="latentrag train relevance", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR))
    ap.add_argument("--n-dirs", type=int, default=8)
    ap.add_argument("--max-pairs", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--only", choices=("scores", "multihop"), default=None)
    ap.add_argument("--keep-gold", type=float, default=0.90)
    args = ap.parse_args(argv)
    out = Path(args.out)
    summary: dict[str, Any] = {}
    if args.only != "scores":
        cal = fit_multihop(data_root(args.data), args.keep_gold)
        cal.save(out / "multihop.json")
        summary["multihop"] = {"threshold": cal.threshold, **cal.report}
    if args.only == "multihop":
        print(json.dumps(summary))
        return 0
    pairs = labelled_pairs(data_root(args.data), args.max_pairs, args.seed)
    rr, enc = CrossEncoderReranker(), default_encoder()
    queries = [q for q, _, _ in pairs]
    labels = [lab for _, _, lab in pairs]
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q, []).append(i)
    rr_arr, rr_cos, cos_arr = np.zeros(len(pairs)), np.zeros(len(pairs)), np.zeros(len(pairs))
    for q, idx in tqdm(groups.items(), desc="score pairs", unit="query"):
        texts = [pairs[i][1] for i in idx]
        _, rr_arr[idx], rr_cos[idx] = rr._scores(q, texts, None)  # what compress() records on each hit
        vecs = enc.encode([q, *texts])
        cos_arr[idx] = vecs[1:] @ vecs[0]
    rr_scores, cosines = rr_arr.tolist(), cos_arr.tolist()
    for kind, scores in (("reranker", rr_scores), ("cosine", cosines)):
        # the reranker map weighs the logit and the reranker's own cosine (metadata["rerank_cosine"])
        cos = rr_cos.tolist() if kind == "reranker" else None
        cal = fit_calibration(queries, scores, labels, score=kind, n_dirs=args.n_dirs, cosines=cos)
        fitted = precision_recall(RelevanceFilter(calibration=cal, score=kind), queries, scores, labels, cos)
        cal.report = {"pairs": len(pairs), "queries": len(groups), "sources": SOURCES, "n_dirs": args.n_dirs,
                      "scorer": rr.model_name if kind == "reranker" else enc.name, "fit_data": fitted,
                      "command": f"latentrag train relevance --n-dirs {args.n_dirs} --max-pairs {args.max_pairs}"}
        cal.save(out / f"{kind}.json")
        summary[kind] = {"threshold": cal.threshold, **fitted}
    print(json.dumps(summary))
    return 0
