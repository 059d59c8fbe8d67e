"""``latentrag demo``: the main job on the embedded default, offline, with no arguments.

It builds a FaissStore from the demo corpus shipped in the package (cached in the user cache
folder), answers a few questions with timings, then runs one section per capability.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from latentrag.encoders import default_encoder
from latentrag.ingest import format_passage
from latentrag.retrievers.dense import DenseRetriever
from latentrag.stores.faiss import FaissStore

QUESTIONS = [
    "Who directed the film about a giant shark?",
    "Which element did Marie Curie discover with her husband?",
    "How do vaccines protect against disease?",
]
#: Capability sections, in order; each module has ``run(store, out)``.
SECTIONS = ["multihop", "rerank", "tools", "xrag"]


def cache_dir() -> Path:
    """``$LATENTRAG_CACHE`` or ``~/.cache/latentrag``."""
    root = os.environ.get("LATENTRAG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "latentrag")
    return Path(root)


def load_corpus() -> list[dict[str, str]]:
    text = (Path(__file__).parent / "data" / "demo_corpus.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_store(folder: Path | None = None) -> FaissStore:
    """Load the cached demo store, or build and save it (atomically) on first use."""
    folder = folder or cache_dir() / "demo-store"
    corpus = load_corpus()
    try:
        store = FaissStore.load(folder)
        if len(store) == len(corpus):
            return store
    except Exception:  # a missing, stale or corrupt cache is rebuilt
        pass
    store = FaissStore.from_texts(
        [format_passage(d["title"], d["text"]) for d in corpus],
        ids=[d["id"] for d in corpus],
        metadatas=[{"title": d["title"]} for d in corpus],
    )
    store.save(folder)
    return store


def main(out: TextIO = sys.stdout, sections: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    encoder = default_encoder()
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = build_store()
    t_store = time.perf_counter() - t0
    print(f"latentrag demo: {len(store)} passages, encoder {encoder.name} ({encoder.dim}-d)", file=out)
    print(f"  encoder load {t_enc * 1000:.0f} ms, store ready in {t_store * 1000:.0f} ms (cache: {cache_dir()})",
          file=out)
    retriever = DenseRetriever(store, k=3)
    retriever.retrieve("warm-up")
    print("\n== Dense retrieval (DenseRetriever, k=3) ==", file=out)
    for q in QUESTIONS:
        t0 = time.perf_counter()
        hits = retriever.retrieve(q)
        ms = (time.perf_counter() - t0) * 1000
        print(f"\nQ: {q}  [{ms:.1f} ms]", file=out)
        for h in hits:
            print(f"  {h.score:.3f}  {h.id:<14} {h.text[:90]}", file=out)
    for name in sections if sections is not None else SECTIONS:
        try:
            module = importlib.import_module(f"latentrag.demos.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"latentrag.demos.{name}":
                continue  # capability not present in this build
            print(f"\n== {name}: skipped, a dependency is missing ({exc}) ==", file=out)
            continue
        except ImportError as exc:
            print(f"\n== {name}: skipped ({exc}) ==", file=out)
            continue
        runner = module.run
        if "store" in runner.__code__.co_varnames[: runner.__code__.co_argcount]:
            runner(store, out)
        else:
            runner(out)
    return 0
