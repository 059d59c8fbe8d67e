"""Reranking quality and speed, and RelevanceFilter precision/recall, each against its baseline in the same run.

    python benchmarks/rerank.py [--scifact-depth 50] [--speed-queries 20] [--plot]

- nDCG@10 on TREC DL20 and DL21 (BM25 top-100 from ``rerank/trec_dl``) and on SciFact (BEIR test claims;
  first stage: BM25 top-``depth`` over the 5,183 abstracts, computed here) for the first stage, the
  shipped bi-encoder's order of the same candidates, the cross-encoder logit alone, the previous default
  score (``0.5 z(logit) + 0.5 z(cosine)``) and ``CrossEncoderReranker()`` (the default: the learned mix
  of cosine, logit and BM25, ``latentrag train reranker-fusion``). DL20 and DL21 are each scored with the
  mix fitted *without* that set (``fusion.json`` ``folds``): those are the held-out figures; the shipped
  mix (fitted on every source) is shown beside them. SciFact was never used. The int8 cost
  (``quantize=True``) is measured on DL20.
- ``RelevanceFilter()`` after ``MultiHopRetriever(store, k=10)`` on the shared multi-hop dev sets (titled and
  untitled passages; the filter's multi-hop map was fitted on the training questions): share of the gold
  passages the retriever found that the filter keeps, and of the other hits it drops.
- Pairs per second on DL20 candidates: ``sentence_transformers.CrossEncoder`` on the same fp32 weights
  (batch 32, the baseline) against ``CrossEncoderReranker`` (length bucketing; fp32 default and int8),
  logit only, and with the default score (which adds the bi-encoder cosine).
- ``RelevanceFilter()`` precision and recall of "keep" at its default threshold on DL20's judged
  candidates (relevant = grade >= 2), for reranker scores and ``RelevanceFilter(score="cosine")`` on cosines.
Prints one JSON line. DL20 selected the cross-encoder's training recipe (see the model card) and the
cross-encoder was trained on DL21: the logit-alone rows are not test figures there.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import math
import re
import tempfile
import time
import zipfile
from collections import Counter
from typing import Any

import numpy as np
from _common import data_root, plot_path, report

from latentrag.compressors import CrossEncoderReranker, RelevanceFilter
from latentrag.compressors.relevance import precision_recall
from latentrag.encoders import default_encoder
from latentrag.models.cross_encoder import fuse_scores
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


def evidence(rr: CrossEncoderReranker, queries: list[str], cands: list[list[str]],
             vectors: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(logits, cosines, BM25) of every query's candidates, computed once and shared by every fusion arm."""
    out = []
    for q, texts, vecs in zip(queries, cands, vectors, strict=True):
        logits, cosines, bm25 = rr._evidence(q, texts, list(vecs))
        assert cosines is not None
        out.append((logits, cosines, bm25))
    return out


def fused_ndcg(ev: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], fusion: dict[str, Any] | None,
               ids: list[list[str]], qids: list[str], qrels: dict[str, dict[str, int]]) -> float:
    run = {}
    for qid, cid, (logits, cosines, bm25) in zip(qids, ids, ev, strict=True):
        s = fuse_scores(logits, cosines, fusion, bm25)
        run[qid] = [cid[i] for i in np.argsort(-s, kind="stable")]
    return round(mean_ndcg(run, qrels), 4)


def dl_set(split: str, rr: CrossEncoderReranker, rr_int8: CrossEncoderReranker | None, enc: Any,
           arms: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    dev = DevSet.load(split)
    dev.compute_cosines(enc)
    qids = [item["qid"] for item in dev.run]
    queries = [item["query"] for item in dev.run]
    cands = [[h["text"] for h in item["hits"]] for item in dev.run]
    ids = [[h["docid"] for h in item["hits"]] for item in dev.run]
    vecs = dev.vectors or []
    row: dict[str, Any] = {"bm25": round(dev.bm25(), 4), "biencoder": round(dev.biencoder(), 4)}
    t0 = time.perf_counter()
    ev = evidence(rr, queries, cands, vecs)
    row["evidence_ms_per_query_100"] = round((time.perf_counter() - t0) * 1000 / len(queries), 1)
    for name, fusion in arms.items():
        row[name] = fused_ndcg(ev, fusion, ids, qids, dev.qrels)
    if rr_int8 is not None:
        row["default_held_out_int8"] = fused_ndcg(evidence(rr_int8, queries, cands, vecs), arms["default_held_out"],
                                                  ids, qids, dev.qrels)
    row["held_out_minus_biencoder"] = round(row["default_held_out"] - row["biencoder"], 4)
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
    args = ap.parse_args()
    enc = default_encoder()
    rr = CrossEncoderReranker()
    if args.only_filters:
        report("rerank_filters", filters(rr, enc))
        return
    rr_int8 = CrossEncoderReranker(quantize=True)
    out: dict[str, Any] = {"model": rr.model_name, "max_length": rr.max_length}

    # --- DL20 and DL21, each with the mix fitted without it
    shipped = rr.fusion or {}
    previous = {"kind": "zscore", "weight": 0.5}
    for split in ("dl20", "dl21"):
        held = {**shipped, "weights": shipped.get("folds", {}).get(split, shipped.get("weights"))}
        arms = {"logit_alone": None, "previous_default": previous, "default_shipped_mix": shipped,
                "default_held_out": held}
        out[split] = dl_set(split, rr, rr_int8 if split == "dl20" else None, enc, arms)
        out[split]["held_out_weights"] = held.get("weights")
        print(split, out[split], flush=True)
    dev = DevSet.load("dl20")
    queries = [item["query"] for item in dev.run]
    cands = [[h["text"] for h in item["hits"]] for item in dev.run]

    # --- SciFact
    sq_ids, s_queries, doc_ids, docs, s_qrels = scifact()
    keep = [i for i, q in enumerate(sq_ids) if q in s_qrels]
    sq_ids, s_queries = [sq_ids[i] for i in keep], [s_queries[i] for i in keep]
    top = bm25_top(s_queries, docs, args.scifact_depth)
    doc_vecs = enc.encode(docs)
    q_vecs = enc.encode(s_queries)
    first = {q: [doc_ids[i] for i in t] for q, t in zip(sq_ids, top, strict=True)}
    bi = {q: [doc_ids[i] for i in sorted(t, key=lambda i, j=j: -float(doc_vecs[i] @ q_vecs[j]))]
          for j, (q, t) in enumerate(zip(sq_ids, top, strict=True))}
    s_cands = [[docs[i] for i in t] for t in top]
    s_ids = [[doc_ids[i] for i in t] for t in top]
    ev = evidence(rr, s_queries, s_cands, [doc_vecs[t] for t in top])
    out["scifact"] = {"n_queries": len(sq_ids), "depth": args.scifact_depth,
                      "bm25": round(mean_ndcg(first, s_qrels), 4), "biencoder": round(mean_ndcg(bi, s_qrels), 4),
                      "logit_alone": fused_ndcg(ev, None, s_ids, sq_ids, s_qrels),
                      "previous_default": fused_ndcg(ev, previous, s_ids, sq_ids, s_qrels),
                      "default": fused_ndcg(ev, shipped, s_ids, sq_ids, s_qrels)}
    out["scifact"]["default_minus_biencoder"] = round(out["scifact"]["default"] - out["scifact"]["biencoder"], 4)
    print("scifact", out["scifact"], flush=True)

    # --- speed on DL20 candidates, same weights
    from sentence_transformers import CrossEncoder

    pairs_q = [q for q in queries[: args.speed_queries] for _ in range(len(cands[0]))]
    flat = [t for c in cands[: args.speed_queries] for t in c]
    with tempfile.TemporaryDirectory() as tmp:
        rr.loaded.model.save_pretrained(tmp)
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=rr.loaded.tokenizer, model_max_length=rr.max_length,
                                cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                unk_token="[UNK]", mask_token="[MASK]").save_pretrained(tmp)
        st = CrossEncoder(tmp, max_length=rr.max_length, device="cpu")
        st.predict(list(zip(pairs_q[:32], flat[:32], strict=True)), batch_size=32)
        t0 = time.perf_counter()
        st.predict(list(zip(pairs_q, flat, strict=True)), batch_size=32)
        st_pps = len(flat) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q, c in zip(queries[: args.speed_queries], cands[: args.speed_queries], strict=True):
        rr._logits(q, c)
    logit_pps = len(flat) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q, c in zip(queries[: args.speed_queries], cands[: args.speed_queries], strict=True):
        rr_int8._logits(q, c)
    int8_pps = len(flat) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q, c in zip(queries[: args.speed_queries], cands[: args.speed_queries], strict=True):
        rr.score(q, c)
    full_pps = len(flat) / (time.perf_counter() - t0)
    out["speed"] = {"pairs": len(flat), "sentence_transformers_fp32_pairs_per_s": round(st_pps, 1),
                    "latentrag_fp32_bucketed_pairs_per_s": round(logit_pps, 1),
                    "latentrag_int8_bucketed_pairs_per_s": round(int8_pps, 1),
                    "latentrag_default_score_pairs_per_s": round(full_pps, 1),
                    "ratio_fp32_logit": round(logit_pps / st_pps, 2), "ratio_int8_logit": round(int8_pps / st_pps, 2),
                    "ratio_default": round(full_pps / st_pps, 2)}
    print("speed", out["speed"], flush=True)

    out.update(filters(rr, enc))
    report("rerank", out)
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for i, name in enumerate(("dl20", "dl21", "scifact")):
            keys = [k for k in ("bm25", "biencoder", "logit_alone", "previous_default", "default_held_out", "default")
                    if k in out[name]]
            axes[0].bar([f"{name}\n{k}" for k in keys], [out[name][k] for k in keys], color=f"C{i}")
        axes[0].set_ylabel("nDCG@10")
        sp = out["speed"]
        axes[1].bar(["sentence-transformers fp32", "latentrag fp32 (logit)", "latentrag int8 (logit)",
                     "latentrag default"],
                    [sp["sentence_transformers_fp32_pairs_per_s"], sp["latentrag_fp32_bucketed_pairs_per_s"],
                     sp["latentrag_int8_bucketed_pairs_per_s"], sp["latentrag_default_score_pairs_per_s"]])
        axes[1].set_ylabel("pairs / s")
        for ax in axes:
            ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        fig.savefig(plot_path("rerank"), dpi=120)


if __name__ == "__main__":
    main()
