"""Reranking quality and speed, and RelevanceFilter precision/recall, each against its baseline in the same run.

    python benchmarks/rerank.py [--scifact-depth 100] [--speed-queries 20] [--plot]

- nDCG@10 on TREC DL20 (BM25 top-100 from ``rerank/trec_dl``) and on SciFact (BEIR test claims; first
  stage: BM25 top-``depth`` over the 5,183 abstracts, computed here) for the first stage, the
  shipped bi-encoder's order of the same candidates, ``CrossEncoderReranker()`` (the default, fp32) and
  the same model with ``quantize=True`` (dynamic int8 Linear layers: the int8 cost).
- Pairs per second on DL20 candidates: ``sentence_transformers.CrossEncoder`` on the same fp32 weights
  (batch 32, the baseline) against ``CrossEncoderReranker`` (length bucketing; fp32 default and int8),
  logit only, and with the default score (which adds the bi-encoder cosine).
- ``RelevanceFilter()`` precision and recall of "keep" at its default threshold on DL20's judged
  candidates (relevant = grade >= 2), for reranker scores and ``RelevanceFilter(score="cosine")`` on cosines.
Prints one JSON line. DL20 was the model-selection set (see the model card); SciFact was never used.
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


def rerank_ndcg(rr: CrossEncoderReranker, queries: list[str], cands: list[list[str]], ids: list[list[str]],
                qids: list[str], qrels: dict[str, dict[str, int]], vectors: list[np.ndarray] | None = None) -> float:
    run = {}
    for j, (qid, q, texts, cid) in enumerate(zip(qids, queries, cands, ids, strict=True)):
        vecs = None if vectors is None else list(vectors[j])
        s = np.asarray(rr.score(q, texts, vectors=vecs))
        run[qid] = [cid[i] for i in np.argsort(-s, kind="stable")]
    return mean_ndcg(run, qrels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scifact-depth", type=int, default=100)
    ap.add_argument("--speed-queries", type=int, default=20)
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    enc = default_encoder()
    rr = CrossEncoderReranker()
    rr_int8 = CrossEncoderReranker(quantize=True)
    out: dict[str, Any] = {"model": rr.model_name, "max_length": rr.max_length}

    # --- DL20
    dev = DevSet.load("dl20")
    dev.compute_cosines(enc)
    qids = [item["qid"] for item in dev.run]
    queries = [item["query"] for item in dev.run]
    cands = [[h["text"] for h in item["hits"]] for item in dev.run]
    ids = [[h["docid"] for h in item["hits"]] for item in dev.run]
    vecs = [enc.encode(c) for c in cands]
    t0 = time.perf_counter()
    ndcg_rr = rerank_ndcg(rr, queries, cands, ids, qids, dev.qrels, vecs)
    rerank_s = time.perf_counter() - t0
    out["dl20"] = {"bm25": round(dev.bm25(), 4), "biencoder": round(dev.biencoder(), 4),
                   "reranker": round(ndcg_rr, 4),
                   "reranker_quantize_int8": round(rerank_ndcg(rr_int8, queries, cands, ids, qids, dev.qrels, vecs), 4),
                   "rerank_ms_per_query_100": round(rerank_s * 1000 / len(queries), 1)}
    out["dl20"]["reranker_minus_biencoder"] = round(out["dl20"]["reranker"] - out["dl20"]["biencoder"], 4)
    print("dl20", out["dl20"], flush=True)

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
    s_vecs = [doc_vecs[t] for t in top]
    out["scifact"] = {"n_queries": len(sq_ids), "depth": args.scifact_depth,
                      "bm25": round(mean_ndcg(first, s_qrels), 4), "biencoder": round(mean_ndcg(bi, s_qrels), 4),
                      "reranker": round(rerank_ndcg(rr, s_queries, s_cands, s_ids, sq_ids, s_qrels, s_vecs), 4)}
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

    # --- RelevanceFilter at its default thresholds on DL20 judged candidates
    fq, fs, fc, fl = [], [], [], []
    for item, c, cos in zip(dev.run, cands, dev.cosines or [], strict=True):
        judged = dev.qrels.get(item["qid"], {})
        idx = [i for i, h in enumerate(item["hits"]) if h["docid"] in judged]
        if not idx:
            continue
        s = rr.logits(item["query"], [c[i] for i in idx])
        fq += [item["query"]] * len(idx)
        fs += s
        fc += [float(cos[i]) for i in idx]
        fl += [int(judged[item["hits"][i]["docid"]] >= 2) for i in idx]
    f_rr, f_cos = RelevanceFilter(), RelevanceFilter(score="cosine")
    pr_rr, pr_cos = precision_recall(f_rr, fq, fs, fl), precision_recall(f_cos, fq, fc, fl)
    out["relevance_filter_dl20"] = {
        "pairs": len(fl), "relevant_share": round(float(np.mean(fl)), 4),
        "reranker": {"threshold": f_rr.threshold, **{k: round(v, 4) for k, v in pr_rr.items()}},
        "cosine": {"threshold": f_cos.threshold, **{k: round(v, 4) for k, v in pr_cos.items()}},
    }
    report("rerank", out)
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for i, name in enumerate(("dl20", "scifact")):
            keys = [k for k in ("bm25", "biencoder", "reranker") if k in out[name]]
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
