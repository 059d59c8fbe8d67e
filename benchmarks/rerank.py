"""Reranking quality and speed, and RelevanceFilter precision/recall, each against its baseline in the same run.

    python benchmarks/rerank.py [--scifact-depth 50] [--speed-queries 20] [--plot] [--only-filters] [--replot]

- nDCG@10 on TREC DL20 and DL21 (BM25 top-100 from ``rerank/trec_dl``) and on SciFact (BEIR test claims;
  first stage: BM25 top-``depth`` over the 5,183 abstracts, computed here) for the first stage, the
  shipped bi-encoder's order of the same candidates, MaxSim over its token states alone, the untuned
  late-interaction mix (``z(cos) + 3 z(maxsim) + 0.1 z(bm25)`` on the shipped MiniLM, the previous
  default), the cross-encoder logit alone and its mix (``CrossEncoderReranker(CROSS_ENCODER_NAME)``), MaxSim
  of the tuned layer alone, and ``CrossEncoderReranker()`` (the default: the same kind of mix over the token
  states of the MiniLM with its fine-tuned last layer, ``latentrag train late-interaction``). DL20 and DL21
  are each scored with the fold model whose layer *and* mix never saw that set (``benchmarks/folds/``,
  ``--hold``): those are the held-out figures; the shipped model (trained on both) is shown beside them.
  SciFact was never used for any fit or selection.
- ``RelevanceFilter()`` after ``MultiHopRetriever(store, k=10)`` on the shared multi-hop dev sets (titled and
  untitled passages; the filter's multi-hop map was fitted on the training questions): share of the gold
  passages the retriever found that the filter keeps, and of the other hits it drops.
- Pairs per second on DL20 candidates: ``sentence_transformers.CrossEncoder`` on the previous default's
  weights (batch 32, the baseline), that cross-encoder's mix here, and the default score.
- ``RelevanceFilter()`` precision and recall of "keep" at its default threshold on DL20's judged
  candidates (relevant = grade >= 2), for reranker scores and ``RelevanceFilter(score="cosine")`` on cosines.
Prints one JSON line. The cross-encoder was trained on DL21 and its recipe selected on DL20: its logit-alone
rows are not test figures there.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import math
import re
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _common import data_root, plot_path, report, sentence_transformers_cross_encoder

from latentrag.compressors import CrossEncoderReranker, RelevanceFilter
from latentrag.compressors.relevance import precision_recall
from latentrag.compressors.rerank import CROSS_ENCODER_NAME
from latentrag.encoders import default_encoder
from latentrag.models.cross_encoder import fuse_scores
from latentrag.models.late_interaction import LateInteractionScore
from latentrag.training.reranker import DevSet, mean_ndcg

_WORD = re.compile(r"[a-z0-9]+")


def bm25_top(queries: list[str], docs: list[str], depth: int, k1: float = 0.9, b: float = 0.4) -> list[list[int]]:
    """Plain Okapi BM25 (Anserini's k1/b defaults), lower-cased alphanumeric tokens."""
    toks = [_WORD.findall(d.lower()) for d in docs]
    lengths = np.array([len(t) for t in toks], dtype=np.float32)
    avg = float(lengths.mean())
    postings: dict[str, list[tuple[int, int]]] = {}
    for i, t in enumerate(toks):
        for w, c in Counter(t).items():
            postings.setdefault(w, []).append((i, c))
    n = len(docs)
    out = []
    for q in queries:
        scores = np.zeros(n, dtype=np.float32)
        for w in set(_WORD.findall(q.lower())):
            plist = postings.get(w)
            if not plist:
                continue
            idf = math.log(1 + (n - len(plist) + 0.5) / (len(plist) + 0.5))
            for i, c in plist:
                scores[i] += idf * c * (k1 + 1) / (c + k1 * (1 - b + b * lengths[i] / avg))
        out.append(list(np.argsort(-scores, kind="stable")[:depth]))
    return out


def scifact() -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    root = data_root() / "rerank" / "scifact"
    with zipfile.ZipFile(root / "scifact_hf_csv.zip") as z:
        text = z.read("corpus_train.csv").decode("utf-8")
    csv.field_size_limit(1 << 30)
    doc_ids, docs = [], []
    for row in csv.DictReader(io.StringIO(text)):
        abstract = row["abstract"]
        try:
            parts = ast.literal_eval(re.sub(r"'\s*\n\s*'", "', '", abstract).replace('"\n "', '", "'))
            abstract = " ".join(parts) if isinstance(parts, (list, tuple)) else str(parts)
        except (ValueError, SyntaxError):
            abstract = abstract.strip("[]")
        doc_ids.append(row["doc_id"])
        docs.append(f"{row['title']} {abstract}")
    qids, queries = [], []
    with gzip.open(root / "topics.beir-v1.0.0-scifact.test.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            qid, _, query = line.rstrip("\n").partition("\t")
            qids.append(qid)
            queries.append(query)
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels.beir-v1.0.0-scifact.test.txt").read_text().splitlines():
        qid, _, did, rel = line.split()
        qrels.setdefault(qid, {})[did] = int(rel)
    return qids, queries, doc_ids, docs, qrels


Evidence = dict[str, np.ndarray]


def evidence(rr: CrossEncoderReranker, ce: CrossEncoderReranker, queries: list[str],
             cands: list[list[str]]) -> list[Evidence]:
    """Per query, every piece of evidence any arm needs, computed once: the default's cosine, MaxSim and BM25
    (one pass of its tuned MiniLM over the candidates), the shipped MiniLM's cosine (the bi-encoder order) and
    MaxSim (the untuned late interaction), and the cross-encoder's logit (the previous default)."""
    from latentrag.models.late_interaction import maxsim, pooled_cosines

    shipped = default_encoder()
    out = []
    for q, texts in zip(queries, cands, strict=True):
        ms, cos, bm25 = rr._evidence(q, texts, None)
        assert cos is not None and bm25 is not None
        states = shipped.token_states([q, *texts])
        out.append({"cosine": cos, "maxsim": ms, "bm25": bm25, "logit": np.asarray(ce._logits(q, texts)),
                    "shipped_cosine": pooled_cosines(states[0], states[1:]),
                    "shipped_maxsim": maxsim(states[0], states[1:])})
    return out


#: The late-interaction mix shipped before the last layer was tuned (untuned MiniLM token states).
UNTUNED_MIX = {"cosine": 1.0, "maxsim": 3.0, "bm25": 0.1}


def arm_scores(ev: Evidence, arm: dict[str, Any]) -> np.ndarray:
    """An arm: ``{"part": name}`` (that evidence alone), ``{"late": weights}`` (a late-interaction mix;
    with ``"shipped": True`` over the shipped MiniLM's cosine and MaxSim) or ``{"fusion": spec}`` (the
    cross-encoder's mix, ``fuse_scores``)."""
    if "part" in arm:
        return ev[arm["part"]]
    if "late" in arm:
        parts = dict(ev)
        if arm.get("shipped"):
            parts.update(cosine=ev["shipped_cosine"], maxsim=ev["shipped_maxsim"])
        return LateInteractionScore(arm["late"]).fuse(parts)
    return fuse_scores(ev["logit"], ev["shipped_cosine"], arm["fusion"], ev["bm25"])


def arm_ndcg(evs: list[Evidence], arm: dict[str, Any], ids: list[list[str]], qids: list[str],
             qrels: dict[str, dict[str, int]]) -> float:
    run = {qid: [cid[i] for i in np.argsort(-arm_scores(ev, arm), kind="stable")]
           for qid, cid, ev in zip(qids, ids, evs, strict=True)}
    return round(mean_ndcg(run, qrels), 4)


def arms_for(split: str | None, late: LateInteractionScore, ce_fusion: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The arms of one test set (the cross-encoder mix takes the weights fitted without that set)."""
    ce_folds = ce_fusion.get("folds", {})
    return {"biencoder": {"part": "shipped_cosine"}, "untuned_maxsim_alone": {"part": "shipped_maxsim"},
            "untuned_late_interaction": {"late": UNTUNED_MIX, "shipped": True},
            "cross_encoder_logit_alone": {"part": "logit"},
            "previous_default_cross_encoder_mix": {"fusion": {**ce_fusion, "weights": ce_folds.get(
                split, ce_fusion["weights"])}},
            "tuned_maxsim_alone": {"part": "maxsim"}, "default": {"late": late.weights}}


#: Scores trained without DL20 / DL21 (``latentrag train late-interaction --hold SPLIT --out ...``).
FOLDS = Path(__file__).parent / "folds"


def dl_set(split: str, rr: CrossEncoderReranker, ce: CrossEncoderReranker) -> dict[str, Any]:
    """One DL set: every arm, the default being the score whose layer and mix never saw ``split``."""
    dev = DevSet.load(split)
    qids = [item["qid"] for item in dev.run]
    queries = [item["query"] for item in dev.run]
    cands = [[h["text"] for h in item["hits"]] for item in dev.run]
    ids = [[h["docid"] for h in item["hits"]] for item in dev.run]
    row: dict[str, Any] = {"queries": len(qids), "bm25": round(dev.bm25(), 4)}
    fold_dir = FOLDS / f"late_interaction_{split}"
    held = CrossEncoderReranker(str(fold_dir))
    evs = evidence(held, ce, queries, cands)
    assert held.late is not None and ce.fusion is not None and rr.late is not None
    for name, arm in arms_for(split, held.late, ce.fusion).items():
        row[name] = arm_ndcg(evs, arm, ids, qids, dev.qrels)
    row["held_out_model"] = str(fold_dir.relative_to(Path(__file__).parent.parent))
    row["held_out_weights"] = held.late.weights
    shipped_evs = [dict(ev, **dict(zip(("maxsim", "cosine", "bm25"), rr._evidence(q, c, None), strict=True)))
                   for ev, q, c in zip(evs, queries, cands, strict=True)]
    row["shipped_model_not_held_out"] = arm_ndcg(shipped_evs, {"late": rr.late.weights}, ids, qids, dev.qrels)
    row["default_minus_biencoder"] = round(row["default"] - row["biencoder"], 4)
    row["default_minus_untuned_late_interaction"] = round(row["default"] - row["untuned_late_interaction"], 4)
    return row


def multihop_filter() -> dict[str, Any]:
    """RelevanceFilter() keep/drop shares after MultiHopRetriever(store, k=10) on the dev sets."""
    from latentrag.compressors.relevance import SHIPPED_DIR, HopCalibration
    from latentrag.training.multihop import DiskEmbeddingCache, load_dev, untitled_store
    from latentrag.training.relevance import keep_drop, multihop_rows

    cache = DiskEmbeddingCache(default_encoder())
    store, sets = load_dev(data_root(), cache)
    cal = HopCalibration.load(SHIPPED_DIR / "multihop.json")
    out: dict[str, Any] = {"threshold": cal.threshold, "fitted_on": cal.report.get("fit_on")}
    for corpus, s in (("titled", store), ("untitled", untitled_store(store, cache))):
        for name, ds in sets.items():
            out[f"{corpus}/{name}"] = keep_drop(cal, *multihop_rows(s, ds))
    return out


def filters(rr: CrossEncoderReranker, enc: Any) -> dict[str, Any]:
    """RelevanceFilter at its default thresholds: DL20 judged candidates (reranker and cosine maps), and
    after MultiHopRetriever on the multi-hop dev sets."""
    dev = DevSet.load("dl20")
    dev.compute_cosines(enc)
    fq: list[str] = []
    fs: list[float] = []
    fc: list[float] = []
    fl: list[int] = []
    for item, cos in zip(dev.run, dev.cosines or [], strict=True):
        judged = dev.qrels.get(item["qid"], {})
        idx = [i for i, h in enumerate(item["hits"]) if h["docid"] in judged]
        if not idx:
            continue
        fq += [item["query"]] * len(idx)
        fs += rr.logits(item["query"], [item["hits"][i]["text"] for i in idx])
        fc += [float(cos[i]) for i in idx]
        fl += [int(judged[item["hits"][i]["docid"]] >= 2) for i in idx]
    f_rr, f_cos = RelevanceFilter(score="reranker"), RelevanceFilter(score="cosine")
    pr_rr, pr_cos = precision_recall(f_rr, fq, fs, fl, fc), precision_recall(f_cos, fq, fc, fl)
    out = {"relevance_filter_dl20": {
        "pairs": len(fl), "relevant_share": round(float(np.mean(fl)), 4),
        "reranker": {"threshold": f_rr.threshold, **{k: round(v, 4) for k, v in pr_rr.items()}},
        "cosine": {"threshold": f_cos.threshold, **{k: round(v, 4) for k, v in pr_cos.items()}},
    }, "relevance_filter_multihop_dev": multihop_filter()}
    print("filters", out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scifact-depth", type=int, default=50)
    ap.add_argument("--speed-queries", type=int, default=20)
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--only-filters", action="store_true", help="only the RelevanceFilter figures")
    ap.add_argument("--replot", action="store_true", help="redraw the plot from results/rerank.json")
    args = ap.parse_args()
    if args.replot:
        import json

        plot(json.loads((Path(__file__).parent / "results" / "rerank.json").read_text()))
        return
    enc = default_encoder()
    rr = CrossEncoderReranker()
    if args.only_filters:
        report("rerank_filters", filters(rr, enc))
        return
    ce = CrossEncoderReranker(CROSS_ENCODER_NAME)
    out: dict[str, Any] = {"model": rr.model_name, "path": str(rr.path), "max_length": rr.max_length,
                           "previous_default": ce.model_name}

    # --- DL20 and DL21, each scored with the weights fitted without it
    for split in ("dl20", "dl21"):
        out[split] = dl_set(split, rr, ce)
        print(split, out[split], flush=True)
    dev = DevSet.load("dl20")
    queries = [item["query"] for item in dev.run]
    cands = [[h["text"] for h in item["hits"]] for item in dev.run]

    # --- SciFact (never used for any fit or selection)
    sq_ids, s_queries, doc_ids, docs, s_qrels = scifact()
    keep = [i for i, q in enumerate(sq_ids) if q in s_qrels]
    sq_ids, s_queries = [sq_ids[i] for i in keep], [s_queries[i] for i in keep]
    top = bm25_top(s_queries, docs, args.scifact_depth)
    first = {q: [doc_ids[i] for i in t] for q, t in zip(sq_ids, top, strict=True)}
    s_ids = [[doc_ids[i] for i in t] for t in top]
    evs = evidence(rr, ce, s_queries, [[docs[i] for i in t] for t in top])
    assert rr.late is not None and ce.fusion is not None
    out["scifact"] = {"n_queries": len(sq_ids), "depth": args.scifact_depth,
                      "bm25": round(mean_ndcg(first, s_qrels), 4)}
    for name, arm in arms_for(None, rr.late, ce.fusion).items():
        out["scifact"][name] = arm_ndcg(evs, arm, s_ids, sq_ids, s_qrels)
    for base in ("biencoder", "untuned_late_interaction"):
        out["scifact"][f"default_minus_{base}"] = round(out["scifact"]["default"] - out["scifact"][base], 4)
    print("scifact", out["scifact"], flush=True)

    # --- speed on DL20 candidates: the default score against sentence-transformers' CrossEncoder on the
    # previous default's weights (the cross-encoder a user would otherwise run), and that cross-encoder here
    n = args.speed_queries
    pairs_q = [q for q in queries[:n] for _ in range(len(cands[0]))]
    flat = [t for c in cands[:n] for t in c]
    st = sentence_transformers_cross_encoder(ce)
    st.predict(list(zip(pairs_q[:32], flat[:32], strict=True)), batch_size=32)
    t0 = time.perf_counter()
    st.predict(list(zip(pairs_q, flat, strict=True)), batch_size=32)
    st_pps = len(flat) / (time.perf_counter() - t0)
    timed = {}
    for name, fn in (("cross_encoder", lambda q, c: ce.score(q, c)), ("default", lambda q, c: rr.score(q, c))):
        fn(queries[0], cands[0][:8])
        t0 = time.perf_counter()
        for q, c in zip(queries[:n], cands[:n], strict=True):
            fn(q, c)
        timed[name] = len(flat) / (time.perf_counter() - t0)
    out["speed"] = {"pairs": len(flat), "sentence_transformers_cross_encoder_pairs_per_s": round(st_pps, 1),
                    "previous_default_cross_encoder_mix_pairs_per_s": round(timed["cross_encoder"], 1),
                    "default_pairs_per_s": round(timed["default"], 1),
                    "ratio_default_vs_sentence_transformers": round(timed["default"] / st_pps, 2),
                    "ratio_default_vs_previous_default": round(timed["default"] / timed["cross_encoder"], 2)}
    print("speed", out["speed"], flush=True)

    out.update(filters(rr, enc))
    report("rerank", out)
    if args.plot:
        plot(out)


#: The nDCG@10 bars of the plot: result key -> short label.
PLOTTED = {"bm25": "BM25", "biencoder": "bi-enc.", "untuned_late_interaction": "untuned LI",
           "previous_default_cross_encoder_mix": "CE mix", "default": "default"}


def plot(out: dict[str, Any]) -> None:
    """nDCG@10 of each set's arms, and pairs per second (``--replot`` redraws it from results/rerank.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    ticks: list[int] = []
    labels: list[str] = []
    for i, name in enumerate(("dl20", "dl21", "scifact")):
        keys = [k for k in PLOTTED if k in out[name]]
        xs = list(range(len(ticks) + i, len(ticks) + i + len(keys)))  # one empty slot between sets
        axes[0].bar(xs, [out[name][k] for k in keys], color=f"C{i}", label=name)
        ticks += xs
        labels += [PLOTTED[k] for k in keys]
    axes[0].set_xticks(ticks, labels)
    axes[0].tick_params(axis="x", labelsize=7, rotation=60)
    axes[0].set_ylabel("nDCG@10")
    axes[0].set_ylim(0.4, 0.72)
    axes[0].legend(fontsize=8)
    sp = out["speed"]
    axes[1].bar(["sentence-transformers\nCrossEncoder", "cross-encoder\nmix", "default\n(late interaction)"],
                [sp["sentence_transformers_cross_encoder_pairs_per_s"],
                 sp["previous_default_cross_encoder_mix_pairs_per_s"], sp["default_pairs_per_s"]])
    axes[1].set_ylabel("pairs / s")
    axes[1].tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(plot_path("rerank"), dpi=120)


if __name__ == "__main__":
    main()
