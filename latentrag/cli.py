"""The ``latentrag`` command: ``index``, ``query``, ``demo`` and ``train``.

``index`` is incremental (see :mod:`latentrag.ingest`): unchanged files are skipped without loading the
encoder, changed files are re-chunked and upserted, ``--prune`` removes the chunks of deleted files. Embedding
runs here, in batches under a progress bar on stderr, and the vectors go to ``store.upsert(vectors=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRAINERS = {
    "multihop": "latentrag.training.multihop",
    "relevance": "latentrag.training.relevance",
    "reranker": "latentrag.training.reranker",
    "reranker-fusion": "latentrag.training.rerank_fusion",
    "late-interaction": "latentrag.training.late_interaction",
    "int8-ranges": "latentrag.training.int8_ranges",
    "tools": "latentrag.training.tools",
    "xrag": "latentrag.training.xrag",
}

DESCRIPTION = """\
latentrag: retrieval for LangChain and LlamaIndex, on a CPU and offline.

Index folders of Markdown, HTML, PDF, text and JSONL files into a store (a local folder, PostgreSQL
with pgvector, or Milvus), query it with dense or multi-hop retrieval, run the offline demo, or retrain
the shipped models."""

EPILOG = """\
examples:
  latentrag index docs/ notes.md data.jsonl --store ./store
  latentrag index docs/ --store ./store --prune          # daily re-index: only changed files are embedded
  latentrag query "Where did the performer of Imagine die?" --store ./store --hops 2 --explain
  latentrag demo

Run `latentrag COMMAND -h` for the options of one command."""

#: Chunks embedded per encoder call (the encoder length-buckets within a call).
EMBED_BATCH = 128
#: Runs that embed more chunks than this show a progress bar.
PROGRESS_MIN_CHUNKS = 200


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already says it) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.required or action.default is argparse.SUPPRESS:
            return text
        if action.default is None or action.default == []:
            return text
        return super()._get_help_string(action) or text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latentrag")
    except PackageNotFoundError:
        import latentrag

        return str(getattr(latentrag, "__version__", "unknown"))


# ------------------------------------------------------------------------------------------------ stores
def _check_store_path(spec: str, *, for_index: bool) -> Path:
    """A ``--store`` that names a folder: refuse a regular file, and (for ``index``) a folder that holds
    other things but no store."""
    from latentrag.errors import InvalidInputError

    path = Path(spec).expanduser()
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "is a regular file" if blocker == path else f"is inside the regular file {str(blocker)!r}"
        msg = (f"--store {spec!r} {where}; expected a store folder (created if missing), "
               "a .db file (milvus-lite) or a postgresql:// or milvus:// URI.")
        raise InvalidInputError(msg)
    if for_index and path.is_dir() and not (path / "CURRENT").is_file():
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            msg = (f"--store {spec!r} is an existing folder that is not a latentrag store (no CURRENT file; it "
                   f"holds {entries[:3]}); pass a new or empty folder, or a store built by `latentrag index`.")
            raise InvalidInputError(msg)
    return path


def open_store(spec: str, *, create: bool = False, index: str | None = None, rebuild: bool = False,
               rerank: int = 0) -> Any:
    """A FaissStore from a folder, or a database store from a ``postgresql://``/``milvus://`` URI or ``.db`` file."""
    from latentrag.stores.uri import is_uri

    if is_uri(spec):
        if rerank:
            from latentrag.errors import InvalidInputError

            msg = (f"--rerank {rerank} applies to a store folder with --index pq or ivfpq; {spec!r} is a database "
                   "store, whose index scores with the exact vectors already. Drop --rerank.")
            raise InvalidInputError(msg)
        from latentrag.stores.uri import open_store as open_uri

        return open_uri(spec, create=create, index=index, rebuild=rebuild)
    from latentrag.stores.faiss import FaissStore

    path = _check_store_path(spec, for_index=create)
    if rebuild:
        return FaissStore(index=index or "flat", rerank=rerank)
    if (path / "CURRENT").is_file():
        return FaissStore.load(path, encoder=_recorded_encoder(path) if create else None)
    if create:
        return FaissStore(index=index or "flat", rerank=rerank)
    from latentrag.errors import StoreError

    what = "an empty folder" if path.is_dir() else "no such folder"
    msg = f"no store at {spec!r} ({what}); build one with `latentrag index PATH... --store {spec}`."
    raise StoreError(msg)


class _LazyEncoder:
    """Stands in for a saved store's encoder (its recorded name and dim) and loads the model on the first
    ``encode``: an index run that finds nothing new never loads it (it takes seconds, more than the rest of
    an unchanged re-index)."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim
        self._real: Any = None

    def _load(self) -> Any:
        if self._real is None:
            from latentrag import encoders
            from latentrag.stores.base import check_encoder

            real = encoders.load_encoder(self.name)
            check_encoder(self.name, self.dim, real, "the store")
            self._real = real
        return self._real

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._load().encode(texts))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr == "_real":
            raise AttributeError(attr)
        return getattr(self._load(), attr)


def _recorded_encoder(path: Path) -> Any:
    """A :class:`_LazyEncoder` for the encoder a saved FaissStore records, or ``None`` (the store's own
    loading then reports whatever is wrong with the folder)."""
    from latentrag import versioned

    try:
        folder = versioned.current(path)
        if folder is None:
            return None
        info = json.loads((folder / "manifest.json").read_text())["encoder"]
        return _LazyEncoder(str(info["name"]), int(info["dim"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------ index
def _embed(encoder: Any, texts: list[str], batch_size: int = EMBED_BATCH) -> np.ndarray:
    """``encoder.encode`` in batches of similar length, with a chunks/s progress bar on stderr for runs of
    more than :data:`PROGRESS_MIN_CHUNKS` chunks."""
    from tqdm import tqdm

    out = np.zeros((len(texts), int(encoder.dim)), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with tqdm(total=len(texts), desc="embed", unit=" chunks", file=sys.stderr,
              disable=len(texts) <= PROGRESS_MIN_CHUNKS, dynamic_ncols=True) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = encoder.encode([texts[i] for i in idx])
            bar.update(len(idx))
    return out


def cmd_index(args: argparse.Namespace) -> int:
    from latentrag.ingest import apply_plan, iter_files, plan_index, plan_vectors
    from latentrag.stores.base import store_is_empty
    from latentrag.stores.uri import is_uri
    from latentrag.tokens import TokenTextSplitter

    t0 = time.perf_counter()
    splitter = TokenTextSplitter(chunk_size=args.chunk_size, overlap=args.chunk_overlap)
    is_folder = not is_uri(args.store)
    exclude = [_check_store_path(args.store, for_index=True)] if is_folder else []
    files = list(iter_files(args.paths, exclude=exclude))  # bad paths fail before a store is opened
    store = open_store(args.store, create=True, index=args.index, rebuild=args.rebuild, rerank=args.rerank)
    try:
        plan = plan_index(store, args.paths, splitter=splitter, prune=args.prune, files=files)
        if not plan.writes and store_is_empty(store):
            print(f"no text found in {args.paths}; nothing to index", file=sys.stderr)
            return 1
        vectors = None
        if plan.records:
            vectors = plan_vectors(store, plan, encode=lambda texts: _embed(store.encoder, texts))
        apply_plan(store, plan, vectors)
        if is_folder and (plan.writes or args.rebuild):
            store.save(args.store)
        from latentrag.stores.pgvector import mask_dsn

        print(f"indexed {len(plan.records)} chunks from {len(plan.files)} files into {mask_dsn(args.store)}: "
              f"{plan.summary()} ({len(store)} total) in {time.perf_counter() - t0:.1f}s")
        if plan.missing:
            print(f"note: {len(plan.missing)} indexed file(s) are gone from disk (e.g. {plan.missing[0]!r}); "
                  "pass --prune to remove their chunks", file=sys.stderr)
        if plan.empty:
            print(f"note: {len(plan.empty)} file(s) have no text (e.g. {plan.empty[0]!r}; a scanned PDF needs OCR)",
                  file=sys.stderr)
    finally:
        store.close()
    return 0


# ------------------------------------------------------------------------------------------------ query
def _number(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def trace_nodes(trace: Any) -> list[dict[str, Any]]:
    """A :class:`~latentrag.retrievers.multihop.HopTrace` as a flat list of JSON-ready nodes, parents before
    children: ``id``, ``hop``, ``parent`` (the parent's id, ``None`` at hop 1), ``via`` (``dense``, ``hop``,
    ``link`` or ``dense+link``), ``status`` (``kept`` or why it was pruned), ``score`` (similarity to the
    query that found it), ``path_score``, ``question_sim`` and ``rank`` (1-based place in the final hits, on
    the kept node of that passage; ``None`` elsewhere)."""
    rank = {h.id: i for i, h in enumerate(trace.hits, 1)}
    out: list[dict[str, Any]] = []
    stack = list(reversed(trace.roots))
    while stack:
        node = stack.pop()
        kept = node.status == "kept"
        out.append({"id": node.id, "hop": node.hop, "parent": node.parent_id, "via": node.via,
                    "status": node.status, "score": _number(node.score), "path_score": _number(node.path_score),
                    "question_sim": _number(node.question_sim), "rank": rank.pop(node.id, None) if kept else None})
        stack.extend(reversed(node.children))
    return out


def cmd_query(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        trace = None
        if args.hops is not None or args.explain:
            from latentrag.retrievers.multihop import MultiHopRetriever

            kwargs = {} if args.hops is None else {"n_hops": args.hops}
            multihop = MultiHopRetriever(store, k=args.k, **kwargs)
            t0 = time.perf_counter()
            if args.explain:  # one run: the trace holds the final hits
                trace = multihop.trace(args.question)
                hits = trace.hits
            else:
                hits = multihop.retrieve(args.question)
        else:
            from latentrag.retrievers.dense import DenseRetriever

            t0 = time.perf_counter()
            hits = DenseRetriever(store, k=args.k).retrieve(args.question)
        ms = (time.perf_counter() - t0) * 1000
    finally:
        store.close()
    if args.json:
        payload: dict[str, Any] = {"query": args.question, "ms": round(ms, 2),
                                   "hits": [{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata}
                                            for h in hits]}
        if trace is not None:
            payload["hops_run"] = trace.hops_run
            payload["stop_reason"] = trace.stop_reason
            payload["tree"] = trace_nodes(trace)
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    print(f"{len(hits)} hits in {ms:.1f} ms")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:>3}. {h.score:.3f}  {h.id}  {h.text[:100]!r}")
    if trace is not None:
        print(trace.render())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from latentrag.demo import main as demo_main

    return demo_main(sections=args.sections)


def cmd_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(TRAINERS[args.what])
    return int(module.main(args.rest) or 0)


# ------------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentrag", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="chunk, embed and index files or folders (incremental)",
                       description="Chunk, embed and index Markdown, HTML, PDF, text and JSONL files or folders.\n"
                       "Re-running skips unchanged files, re-embeds changed ones only, and with --prune\n"
                       "removes the chunks of deleted files. HTML needs latentrag[html], PDF latentrag[pdf].",
                       formatter_class=_HelpFormatter)
    p.add_argument("paths", nargs="+", help="files or folders (.md, .html, .pdf, .txt, .rst, .jsonl with a 'text' "
                   "field; folders are walked recursively, hidden files skipped)")
    p.add_argument("--store", required=True, help="store folder (created if missing), a .db file (milvus-lite), "
                   "or a postgresql:// or milvus:// URI (required)")
    p.add_argument("--chunk-size", type=int, default=200,
                   help="most tokens per chunk, title and heading path included (tiktoken cl100k_base)")
    p.add_argument("--chunk-overlap", type=int, default=30, help="tokens shared by neighbouring chunks of a section")
    p.add_argument("--index", default=None, choices=["flat", "hnsw", "pq", "ivfpq"],
                   help="index type of a new store (default: flat for a folder, HNSW for PostgreSQL and Milvus)")
    p.add_argument("--rerank", type=int, default=0, metavar="N",
                   help="with --index pq or ivfpq: re-score the index's top N with the exact vectors, kept on disk "
                        "beside it (400 keeps recall@10 near 0.97 at a million passages)")
    p.add_argument("--prune", action="store_true",
                   help="delete the chunks of files under PATHS that no longer exist")
    p.add_argument("--rebuild", action="store_true", help="start a new store instead of updating the existing one")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("query", help="retrieve passages for a question", formatter_class=_HelpFormatter,
                       description="Retrieve passages for a question from a store built by `latentrag index`.")
    p.add_argument("question", help="the question text")
    p.add_argument("--store", required=True, help="store folder, .db file or postgresql:// / milvus:// URI (required)")
    p.add_argument("--k", type=int, default=5, help="passages to return")
    p.add_argument("--hops", type=int, default=None,
                   help="multi-hop retrieval with N hops (default: dense retrieval; 2 hops with --explain)")
    p.add_argument("--explain", action="store_true", help="also print the multi-hop tree (as JSON with --json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("demo", help="offline demo on the shipped corpus (no arguments needed)",
                       formatter_class=_HelpFormatter)
    p.add_argument("--sections", nargs="*", default=None, help="capability sections to run (default: all)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="retrain a shipped model: " + ", ".join(sorted(TRAINERS)),
                       formatter_class=_HelpFormatter)
    p.add_argument("what", choices=sorted(TRAINERS), help="the model to train")
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
        from latentrag.masking import redact, secrets_of

        secrets = secrets_of(args.store) if isinstance(getattr(args, "store", None), str) else []
        print(f"latentrag: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `latentrag query ... | head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
