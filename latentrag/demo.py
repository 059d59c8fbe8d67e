"""``latentrag demo``: the main job on the embedded default, offline, with no arguments.

It builds a FaissStore from the demo corpus shipped in the package (cached in the user cache folder,
:func:`latentrag.paths.cache_dir`), then runs one section per capability. Every section is a module of
:mod:`latentrag.demos` with ``run(store, out)``; ``--sections`` picks some of them, in the order given.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from latentrag.encoders import default_encoder
from latentrag.errors import InvalidInputError, ModelLoadError
from latentrag.ingest import format_passage
from latentrag.paths import cache_dir
from latentrag.stores.faiss import FaissStore

#: The sections, in the order a plain ``latentrag demo`` runs them; each is ``latentrag.demos.<name>``.
SECTIONS = ["dense", "multihop", "rerank", "tools", "xrag"]
#: torch intra-op threads while the demo runs. The demo's models are small (MiniLM, a 135M LM decoding one
#: token at a time), and torch's default of one thread per core slows them several-fold as soon as anything
#: else uses a core: on 2 busy cores the xRAG answers took 10 s each instead of 2 s.
TORCH_THREADS = 1

__all__ = ["SECTIONS", "build_store", "cache_dir", "check_sections", "load_corpus", "main"]


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


def check_sections(sections: Sequence[str] | None) -> list[str]:
    """The section names to run: all of :data:`SECTIONS` for ``None``, else ``sections`` in the order given
    (duplicates dropped; ``"a,b"`` is read as two names). Raises :class:`InvalidInputError` for an unknown
    name or an empty list, naming the valid sections."""
    if sections is None:
        return list(SECTIONS)
    if isinstance(sections, str):
        sections = [sections]
    names: list[str] = []
    for item in sections:
        for name in str(item).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        what = f"unknown demo section(s) {unknown}" if unknown else f"no demo section given ({list(sections)})"
        msg = f"{what}; valid sections are: {', '.join(SECTIONS)} (omit --sections to run them all)."
        raise InvalidInputError(msg)
    return names


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` (when torch is installed), then restore the caller's."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(out: TextIO = sys.stdout, sections: Sequence[str] | None = None) -> int:
    """Run the demo sections (all by default) and print what each does and what it cost."""
    names = check_sections(sections)
    t_start = time.perf_counter()
    with torch_threads(TORCH_THREADS):
        return _run(names, out, t_start)


def _run(names: list[str], out: TextIO, t_start: float) -> int:
    t0 = time.perf_counter()
    encoder = default_encoder()
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = build_store()
    t_store = time.perf_counter() - t0
    print(f"latentrag demo: {len(store)} passages, encoder {encoder.name} ({encoder.dim}-d)", file=out)
    print(f"  encoder load {t_enc * 1000:.0f} ms, store ready in {t_store * 1000:.0f} ms (cache: {cache_dir()}); "
          f"torch on {TORCH_THREADS} thread(s)", file=out)
    timings = [("start", time.perf_counter() - t_start)]
    for name in names:
        t0 = time.perf_counter()
        module = importlib.import_module(f"latentrag.demos.{name}")
        try:
            module.run(store, out)
        except (ImportError, ModelLoadError) as exc:  # an optional extra is not installed
            print(f"\n== {name}: skipped, a dependency is missing: {exc} ==", file=out)
        timings.append((name, time.perf_counter() - t0))
        out.flush()
    total = time.perf_counter() - t_start
    parts = ", ".join(f"{n} {s:.1f} s" for n, s in timings)
    print(f"\ndemo finished in {total:.1f} s ({parts})", file=out)
    return 0
