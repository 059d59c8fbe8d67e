"""Fit the shipped reranker's score (:mod:`latentrag.models.late_interaction`) on labelled candidate lists.

    latentrag train late-interaction [--out DIR] [--max-pairs 3000] [--data DIR]

Data: the seven labelled sources of ``latentrag train reranker-fusion`` (TREC DL20 and DL21 BM25 top-100 with
graded qrels, WikiQA and TrecQA train, Vaswani, NovelEval, the multi-hop training questions with their gold
and pool passages), at most ``--max-pairs`` candidate pairs per non-DL source. The shipped MiniLM computes
the token states of every query and candidate once (cached under the latentrag cache folder); from them come
the bi-encoder cosine (mean pooling) and MaxSim, and BM25 comes from the shipped document frequencies.

The mix weights ``a * z(cosine) + b * z(maxsim) + c * z(bm25)`` are a grid search maximising the mean over
sources of nDCG@10 (each source weighted equally, so no single set decides). Selection is leave-one-source-out:
each source is scored with the weights fitted on the other six, and those are the figures reported
(``config.json`` ``report``); the shipped weights are fitted on all seven. SciFact and the outside TREC DL
queries are never used.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentrag.training.multihop import cache_root, data_root
from latentrag.training.reranker import ndcg_at_k

GRID_COSINE = (0.0, 0.5, 1.0)
GRID_MAXSIM = (1.0, 2.0, 3.0, 5.0)
GRID_BM25 = (0.0, 0.1, 0.2, 0.3)


def cached_states(encoder: Any, texts: Sequence[str], cache: Path | None) -> dict[str, np.ndarray]:
    """Token states (fp16) of every distinct text, from ``encoder.token_states``, cached as one .npz."""
    todo = sorted(set(texts))
    key = hashlib.sha1(json.dumps([encoder.name, str(encoder.path), todo]).encode()).hexdigest()[:12]
    path = None if cache is None else cache / f"states-{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            flat, offsets = z["flat"], z["offsets"]
        return {t: flat[offsets[i] : offsets[i + 1]] for i, t in enumerate(todo)}
    rows: list[np.ndarray] = []
    for start in tqdm(range(0, len(todo), 512), desc="token states", unit="chunk"):
        rows += [s.astype(np.float16) for s in encoder.token_states(todo[start : start + 512])]
    if path is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, flat=np.concatenate(rows), offsets=np.cumsum([0, *[len(r) for r in rows]]))
        tmp.replace(path)
    return dict(zip(todo, rows, strict=True))


def list_evidence(states: dict[str, np.ndarray], stats: Any, query: str, texts: list[str]) -> dict[str, np.ndarray]:
    """The three parts of the score for one list, as the reranker computes them."""
    from latentrag.models.late_interaction import maxsim, pooled_cosines

    q, docs = states[query], [states[t] for t in texts]
    return {"cosine": pooled_cosines(q, docs), "maxsim": maxsim(q, docs), "bm25": stats.bm25(query, texts)}


def ndcg(rows: list[tuple[dict[str, np.ndarray], np.ndarray]], weights: dict[str, float]) -> float:
    from latentrag.models.late_interaction import LateInteractionScore

    score = LateInteractionScore(weights)
    vals = []
    for ev, labels in rows:
        order = np.argsort(-score.fuse(dict(ev)), kind="stable")
        qrels = {str(j): int(round(float(x))) for j, x in enumerate(labels) if x > 0}
        vals.append(ndcg_at_k([str(j) for j in order], qrels))
    return float(np.mean(vals)) if vals else 0.0


def grid_fit(table: dict[tuple[float, ...], dict[str, float]], sources: list[str]) -> dict[str, float]:
    best = max(table, key=lambda g: (float(np.mean([table[g][s] for s in sources])), -sum(g)))
    return dict(zip(("cosine", "maxsim", "bm25"), best, strict=True))


def main(argv: list[str] | None = None) -> int:
    from latentrag.encoders import default_encoder
    from latentrag.models.cross_encoder import SHIPPED_DIR as CROSS_ENCODER_DIR
    from latentrag.models.late_interaction import SHIPPED_DIR, LateInteractionScore
    from latentrag.models.term_stats import TermStats
    from latentrag.training.rerank_fusion import labelled_lists

    ap = argparse.ArgumentParser(prog="latentrag train late-interaction", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR))
    ap.add_argument("--data", default=None)
    ap.add_argument("--max-pairs", type=int, default=3000)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    root = data_root(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "term_df.json.gz").is_file():  # the document frequencies `train reranker-fusion` built
        shutil.copyfile(CROSS_ENCODER_DIR / "term_df.json.gz", out / "term_df.json.gz")
    stats = TermStats.load(out / "term_df.json.gz")
    lists = labelled_lists(root, args.max_pairs)
    enc = default_encoder(cache_size=0)
    cache = cache_root() / "late_interaction"
    cache.mkdir(parents=True, exist_ok=True)
    states = cached_states(enc, [t for rows in lists.values() for q, texts, _ in rows for t in (q, *texts)], cache)
    data = {s: [(list_evidence(states, stats, q, texts), np.asarray(lab, dtype=np.float32)) for q, texts, lab in rows]
            for s, rows in tqdm(lists.items(), desc="evidence", unit="source")}
    sources = list(data)
    grid = list(itertools.product(GRID_COSINE, GRID_MAXSIM, GRID_BM25))
    table = {g: {s: ndcg(data[s], dict(zip(("cosine", "maxsim", "bm25"), g, strict=True))) for s in sources}
             for g in tqdm(grid, desc="grid", unit="mix")}
    weights = grid_fit(table, sources)
    folds, held_out = {}, {}
    for s in sources:
        w = grid_fit(table, [t for t in sources if t != s])
        folds[s] = w
        held_out[s] = {"biencoder": round(ndcg(data[s], {"cosine": 1.0}), 4),
                       "maxsim": round(ndcg(data[s], {"maxsim": 1.0}), 4),
                       "bm25": round(ndcg(data[s], {"bm25": 1.0}), 4),
                       "mix_without_this_source": round(ndcg(data[s], w), 4), "weights": w}
    mean = {k: round(float(np.mean([v[k] for v in held_out.values()])), 4)
            for k in ("biencoder", "maxsim", "mix_without_this_source")}
    report = {"sources": {s: {"lists": len(data[s]), "pairs": int(sum(len(lab) for _, lab in data[s]))}
                          for s in sources},
              "objective": "mean over sources of nDCG@10 (each source weighted equally)",
              "leave_one_source_out": held_out, "mean_held_out": mean, "encoder_path": str(enc.path),
              "seconds": round(time.perf_counter() - t0, 1),
              "command": f"latentrag train late-interaction --max-pairs {args.max_pairs}"}
    LateInteractionScore(weights, "term_df.json.gz", {"folds": folds, "report": report}).save(out)
    print(json.dumps({"weights": weights, "mean_held_out": mean, "leave_one_source_out": held_out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
