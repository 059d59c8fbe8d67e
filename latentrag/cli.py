"""The ``latentrag`` command: ``index``, ``query``, ``demo`` and ``train``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

TRAINERS = {
    "multihop": "latentrag.training.multihop",
    "relevance": "latentrag.training.relevance",
    "reranker": "latentrag.training.reranker",
    "tools": "latentrag.training.tools",
    "xrag": "latentrag.training.xrag",
}


def open_store(spec: str, *, create: bool = False, index: str | None = None, rebuild: bool = False) -> Any:
    """A FaissStore from a folder, or a database store from a ``postgresql://``/``milvus://`` URI or ``.db`` file."""
    from latentrag.stores.uri import is_uri

    if is_uri(spec):
        from latentrag.stores.uri import open_store as open_uri

        return open_uri(spec, create=create, index=index, rebuild=rebuild)
    from latentrag.stores.faiss import FaissStore

    path = Path(spec)
    if rebuild:
        return FaissStore(index=index or "flat")
    if (path / "CURRENT").is_file():
        return FaissStore.load(path)
    if create:
        return FaissStore(index=index or "flat")
    from latentrag.errors import StoreError

    msg = f"no store at {spec!r}; build one with `latentrag index PATH... --store {spec}`."
    raise StoreError(msg)


def cmd_index(args: argparse.Namespace) -> int:
    from latentrag.ingest import chunk_records, iter_files, read_documents
    from latentrag.tokens import TokenTextSplitter

    splitter = TokenTextSplitter(chunk_size=args.chunk_size, overlap=args.chunk_overlap)
    files = list(iter_files(args.paths))
    records: list[Any] = []
    for f in tqdm(files, desc="read + chunk", unit="file", disable=len(files) < 5):
        records.extend(chunk_records(read_documents(f), splitter))
    if not records:
        print("no text found in the given paths", file=sys.stderr)
        return 1
    from latentrag.stores.uri import is_uri

    is_folder = not is_uri(args.store)
    store = open_store(args.store, create=True, index=args.index, rebuild=args.rebuild)
    t0 = time.perf_counter()
    store.upsert(
        [r.text for r in records], ids=[r.id for r in records], metadatas=[r.metadata for r in records]
    )
    if is_folder:
        store.save(args.store)
    from latentrag.stores.pgvector import mask_dsn

    print(
        f"indexed {len(records)} chunks from {len(files)} files into {mask_dsn(args.store)} "
        f"({len(store)} total) in {time.perf_counter() - t0:.1f}s"
    )
    store.close()
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.hops is not None or args.explain:
        from latentrag.retrievers.multihop import MultiHopRetriever

        kwargs = {} if args.hops is None else {"n_hops": args.hops}
        retriever: Any = MultiHopRetriever(store, k=args.k, **kwargs)
    else:
        from latentrag.retrievers.dense import DenseRetriever

        retriever = DenseRetriever(store, k=args.k)
    t0 = time.perf_counter()
    hits = retriever.retrieve(args.question)
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        payload: dict[str, Any] = {"query": args.question, "ms": round(ms, 2),
                                   "hits": [{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata}
                                            for h in hits]}
        if args.explain:
            payload["tree"] = retriever.trace(args.question).render()
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    else:
        print(f"{len(hits)} hits in {ms:.1f} ms")
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>3}. {h.score:.3f}  {h.id}  {h.text[:100]!r}")
    if args.explain:
        print(retriever.trace(args.question))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from latentrag.demo import main as demo_main

    return demo_main(sections=args.sections)


def cmd_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(TRAINERS[args.what])
    return int(module.main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentrag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="chunk and index text, markdown and JSONL files or folders")
    p.add_argument("paths", nargs="+", help="files or folders (.txt, .md, .jsonl with a 'text' field)")
    p.add_argument("--store", required=True, help="store folder, or a postgresql:// or milvus:// URI")
    p.add_argument("--chunk-size", type=int, default=200, help="tokens per chunk (tiktoken cl100k_base)")
    p.add_argument("--chunk-overlap", type=int, default=30, help="tokens shared by neighbouring chunks")
    p.add_argument("--index", default=None, choices=["flat", "hnsw", "pq", "ivfpq"],
                   help="index type (default: flat for a folder, HNSW for PostgreSQL and Milvus servers)")
    p.add_argument("--rebuild", action="store_true", help="start a new store instead of updating the existing one")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("query", help="retrieve passages for a question")
    p.add_argument("question")
    p.add_argument("--store", required=True)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--hops", type=int, default=None, help="use multi-hop retrieval with N hops")
    p.add_argument("--explain", action="store_true", help="print the multi-hop tree")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("demo", help="offline demo on the shipped corpus (no arguments needed)")
    p.add_argument("--sections", nargs="*", default=None, help="capability sections to run (default: all)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a shipped model: multihop, reranker, tools or xrag")
    p.add_argument("what", choices=sorted(TRAINERS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options for the trainer (see `latentrag train WHAT -h`)")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from latentrag.errors import LatentRagError

    try:
        return int(args.func(args) or 0)
    except (LatentRagError, ValueError) as exc:
        print(f"latentrag: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
