"""Fit the shipped RelevanceFilter calibrations (reranker scores and MiniLM cosines).

    latentrag train relevance --out DIR [--n-dirs 8] [--max-pairs 6000]

Labelled pairs: the TREC DL21 judged pool (relevant = grade >= 2), WikiQA train and TrecQA train
(binary), from ``rerank/pairs``. For each pair the shipped ``CrossEncoderReranker()`` logit and the
shipped MiniLM cosine are computed; :func:`latentrag.compressors.relevance.fit_calibration` fits the
query-conditioned Platt map and the F1-best threshold on them. DL20 is kept for the benchmark.
Writes ``reranker.json`` and ``cosine.json``; seeded.
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
    args = ap.parse_args(argv)
    pairs = labelled_pairs(data_root(args.data), args.max_pairs, args.seed)
    rr, enc = CrossEncoderReranker(), default_encoder()
    queries = [q for q, _, _ in pairs]
    labels = [lab for _, _, lab in pairs]
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q, []).append(i)
    rr_arr = np.zeros(len(pairs))
    cos_arr = np.zeros(len(pairs))
    for q, idx in tqdm(groups.items(), desc="score pairs", unit="query"):
        texts = [pairs[i][1] for i in idx]
        rr_arr[idx] = rr.logits(q, texts)
        vecs = enc.encode([q, *texts])
        cos_arr[idx] = vecs[1:] @ vecs[0]
    rr_scores, cosines = rr_arr.tolist(), cos_arr.tolist()
    out = Path(args.out)
    summary: dict[str, Any] = {}
    for kind, scores in (("reranker", rr_scores), ("cosine", cosines)):
        cal = fit_calibration(queries, scores, labels, score=kind, n_dirs=args.n_dirs)
        fitted = precision_recall(RelevanceFilter(calibration=cal, score=kind), queries, scores, labels)
        cal.report = {"pairs": len(pairs), "queries": len(groups), "sources": SOURCES, "n_dirs": args.n_dirs,
                      "scorer": rr.model_name if kind == "reranker" else enc.name, "fit_data": fitted,
                      "command": f"latentrag train relevance --n-dirs {args.n_dirs} --max-pairs {args.max_pairs}"}
        cal.save(out / f"{kind}.json")
        summary[kind] = {"threshold": cal.threshold, **fitted}
    print(json.dumps(summary))
    return 0
