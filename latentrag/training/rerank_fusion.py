"""Fit how the shipped reranker combines its evidence: bi-encoder cosine, cross-encoder logit, BM25.

    latentrag train reranker-fusion [--out DIR] [--max-pairs 3000] [--data DIR]

The cross-encoder alone ranks below the bi-encoder it started from (DL20 nDCG@10 0.562 against 0.608),
so the shipped score is a per-query linear mix of z-scored evidence, ``a * z(cosine) + b * z(logit) +
c * z(bm25)`` (:func:`latentrag.models.cross_encoder.fuse_scores`), BM25 over the candidates with document
frequencies from a general corpus (:class:`~latentrag.models.term_stats.TermStats`, built here). The
weights are a grid search (``a = 1``) maximising the mean over labelled sources of nDCG@10, each source
weighted equally so that no single set decides: TREC DL20 and DL21 (BM25 top-100, graded qrels), WikiQA
and TrecQA train, Vaswani, NovelEval and the multi-hop training questions (gold vs pool passages), up to
``--max-pairs`` candidate pairs each. Every source is also scored by the fit *without* it
(leave-one-source-out), and those are the figures reported for DL20 and DL21; SciFact is never used.
Writes ``fusion.json`` (weights, per-fold weights, report) and ``term_df.json.gz`` to ``--out``; the
evidence is cached under the latentrag cache folder, so a second run costs seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentrag.training.multihop import cache_root, data_root
from latentrag.training.reranker import DevSet, RerankerTrainConfig, load_training_data, ndcg_at_k

PAIR_SETS = ("wikiqa", "trecqa", "vaswani", "noveleval", "multihop")
DL_SETS = ("dl20", "dl21")
GRID_LOGIT = tuple(round(0.1 * i, 2) for i in range(0, 21))
GRID_BM25 = tuple(round(0.05 * i, 2) for i in range(0, 21))
TERM_SOURCES = ("dl21_union_judged", "msmarco_toy_triples", "wikiqa_train", "trecqa_train")


def term_stats(root: Path) -> Any:
    """Document frequencies over the multi-hop corpora (Wikipedia) and the MS MARCO / WikiQA / TrecQA training
    passages of ``shared/data`` (not DL20's pool, not SciFact)."""
    from latentrag.models.term_stats import TermStats

    texts: dict[str, None] = {}
    for path in sorted((root / "multihop").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            for p in (rec.get("pool") or []) + (rec.get("gold") or []):
                if isinstance(p, dict) and p.get("text"):
                    texts[p["text"]] = None
    csv.field_size_limit(1 << 30)
    for name in TERM_SOURCES:
        with (root / "rerank" / "pairs" / f"{name}.tsv").open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts[row["passage"]] = None
    return TermStats.count(texts)


def labelled_lists(root: Path, max_pairs: int, seed: int = 0) -> dict[str, list[tuple[str, list[str], list[float]]]]:
    """Per source: (query, candidates, graded labels) lists with a positive and a negative each."""
    out: dict[str, list[tuple[str, list[str], list[float]]]] = {}
    for split in DL_SETS:
        dev = DevSet.load(split, root)
        rows = []
        for item in dev.run:
            rels = dev.qrels.get(item["qid"], {})
            labels = [float(rels.get(h["docid"], 0)) for h in item["hits"]]
            if rels and len(set(labels)) > 1:
                rows.append((item["query"], [h["text"] for h in item["hits"]], labels))
        out[split] = rows
    for source in PAIR_SETS:
        queries = [q for q in load_training_data(RerankerTrainConfig(sources=(source,)), root)
                   if len(set(q.labels[:40])) > 1]
        random.Random(seed).shuffle(queries)
        rows, n = [], 0
        for q in queries:
            if n >= max_pairs:
                break
            rows.append((q.query, q.docs[:40], q.labels[:40]))
            n += len(rows[-1][1])
        out[source] = rows
    return out


def evidence(reranker: Any, query: str, texts: list[str]) -> np.ndarray:
    """(3, n) cosine, logit and BM25 of ``texts`` for ``query``, computed as the shipped reranker does."""
    logits, cosines, bm25 = reranker._evidence(query, texts, None)
    assert cosines is not None and bm25 is not None
    return np.stack([cosines, logits, bm25]).astype(np.float32)


def source_ndcg(rows: list[tuple[np.ndarray, list[float]]], weights: dict[str, float]) -> float:
    """Mean nDCG@10 of one source's lists under ``weights`` (the shipped ``linear`` fusion of the evidence)."""
    from latentrag.models.cross_encoder import fuse_scores

    fusion = {"kind": "linear", "weights": weights}
    vals = []
    for ev, labels in rows:
        order = np.argsort(-fuse_scores(ev[1], ev[0], fusion, ev[2]), kind="stable")
        qrels = {str(j): int(round(lab)) for j, lab in enumerate(labels) if lab > 0}
        vals.append(ndcg_at_k([str(j) for j in order], qrels))
    return float(np.mean(vals)) if vals else 0.0


def grid_fit(data: dict[str, list[tuple[np.ndarray, list[float]]]], sources: list[str]) -> dict[str, float]:
    """The grid weights maximising the source-balanced mean nDCG@10 over ``sources`` (cosine weight 1)."""
    best, best_w = -1.0, {"cosine": 1.0, "logit": 0.0, "bm25": 0.0}
    for wl, wb in itertools.product(GRID_LOGIT, GRID_BM25):
        w = {"cosine": 1.0, "logit": wl, "bm25": wb}
        value = float(np.mean([source_ndcg(data[s], w) for s in sources]))
        if value > best + 1e-9:
            best, best_w = value, w
    return best_w


def main(argv: list[str] | None = None) -> int:
    from latentrag.compressors.rerank import CrossEncoderReranker
    from latentrag.models.cross_encoder import SHIPPED_DIR

    ap = argparse.ArgumentParser(prog="latentrag train reranker-fusion", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR))
    ap.add_argument("--max-pairs", type=int, default=3000)
    ap.add_argument("--data", default=None)
    args = ap.parse_args(argv)
    root = data_root(args.data)
    out = Path(args.out)
    stats = term_stats(root)
    stats.save(out / "term_df.json.gz")
    reranker = CrossEncoderReranker()
    reranker.term_stats = stats
    lists = labelled_lists(root, args.max_pairs)
    cache = cache_root() / "rerank_fusion"
    cache.mkdir(parents=True, exist_ok=True)
    data: dict[str, list[tuple[np.ndarray, list[float]]]] = {}
    for source, rows in lists.items():
        key = hashlib.sha1(json.dumps([reranker.model_name, stats.n_docs, rows]).encode()).hexdigest()[:12]
        path = cache / f"{source}-{key}.npz"
        if path.exists():
            with np.load(path) as z:
                evs = [z[f"e{i}"] for i in range(len(rows))]
        else:
            evs = [evidence(reranker, q, texts) for q, texts, _ in tqdm(rows, desc=f"evidence {source}", unit="query")]
            np.savez(path, **{f"e{i}": e for i, e in enumerate(evs)})
        data[source] = [(e, labels) for e, (_, _, labels) in zip(evs, rows, strict=True)]
    sources = list(data)
    weights = grid_fit(data, sources)
    folds, held_out = {}, {}
    for s in sources:
        w = grid_fit(data, [t for t in sources if t != s])
        folds[s] = w
        held_out[s] = {"biencoder": round(source_ndcg(data[s], {"cosine": 1.0}), 4),
                       "logit": round(source_ndcg(data[s], {"logit": 1.0}), 4),
                       "bm25": round(source_ndcg(data[s], {"bm25": 1.0}), 4),
                       "fused_without_this_source": round(source_ndcg(data[s], w), 4), "weights": w}
    report = {"sources": {s: {"lists": len(data[s]), "pairs": int(sum(len(lab) for _, lab in data[s]))}
                          for s in sources},
              "objective": "mean over sources of nDCG@10 (each source weighted equally)",
              "leave_one_source_out": held_out,
              "command": f"latentrag train reranker-fusion --max-pairs {args.max_pairs}"}
    spec = {"kind": "linear", "weights": weights, "folds": folds, "term_stats": "term_df.json.gz", "report": report}
    tmp = out / "fusion.json.tmp"
    tmp.write_text(json.dumps(spec, indent=1) + "\n")
    tmp.replace(out / "fusion.json")
    print(json.dumps({"weights": weights, "leave_one_source_out": held_out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
