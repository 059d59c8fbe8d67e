"""``BM25Index``: lexical (BM25) search over a store's passages, with `bm25s <https://github.com/xhluca/bm25s>`_.

The index is built from the store itself (``store.ids()`` and ``store.get()``; FaissStore, PgVectorStore
and MilvusStore can list their documents), on first use, and rebuilt when the store's ``revision``
changes (every write through a FaissStore, PgVectorStore or MilvusStore object bumps it): before the next
query for a small index, in a background thread for one of :data:`BACKGROUND_REBUILD` passages or more
(queries meanwhile use the previous index: a deleted passage is skipped, a new one is found by the dense
side). For a store written by another process call :meth:`BM25Index.refresh`. :meth:`BM25Index.save`
writes it atomically into a folder of versions beside the store (the same scheme as the stores' own saves), with a
fingerprint of the passages it was built from, and :meth:`BM25Index.load` checks the fingerprint, so a
saved index never silently serves passages that changed since.

Tokens: lower-cased words of two or more letters or digits, English stop words removed, no stemming
(names and numbers, what lexical search adds to dense retrieval, are kept as written).

Thread-safe: searches read an immutable snapshot; a rebuild swaps in a new one under a lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentrag import versioned
from latentrag.errors import InvalidInputError, StoreCorruptError, check_positive_int
from latentrag.stores.base import Filter, can_list, get_existing, matches

log = logging.getLogger(__name__)

KIND = "latentrag-bm25"
FORMAT_VERSION = 1
#: Ids fetched per ``store.get`` call while indexing.
PAGE = 2048
#: Lists of this many passages or more show a progress bar while indexing.
PROGRESS_THRESHOLD = 20_000
#: An index of this many passages or more is rebuilt in a background thread after a write, while queries
#: use the previous one; a smaller one is rebuilt before the next query (a second or less).
BACKGROUND_REBUILD = 50_000


_quieted = False


def _bm25s() -> Any:
    global _quieted
    from latentrag._optional import require

    module = require("bm25s", "hybrid")
    if not _quieted:  # bm25s sets its own logger to DEBUG on import, so every index build would print a line
        _quieted = True
        bm_log = logging.getLogger("bm25s")
        if bm_log.level == logging.DEBUG:
            bm_log.setLevel(logging.WARNING)
    return module


@dataclass(frozen=True)
class _Snapshot:
    ids: list[str]
    model: Any  # bm25s.BM25
    tokenizer: Any  # bm25s.tokenization.Tokenizer
    fingerprint: str
    built_at: object
    stopwords: frozenset[str] = frozenset()


class BM25Index:
    """BM25 over the passages of ``store`` (``k1``, ``b``: the usual BM25 parameters)."""

    def __init__(self, store: Any, *, k1: float = 1.2, b: float = 0.75) -> None:
        if not can_list(store):
            msg = (f"a BM25 index needs a store that can list its documents (ids() and get()); "
                   f"{type(store).__name__} cannot. Use a FaissStore, PgVectorStore or MilvusStore.")
            raise InvalidInputError(msg)
        for name, value, top in (("k1", k1, 3), ("b", b, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
                msg = f"BM25 {name} must be a number in [0, {top}], got {value!r}."
                raise InvalidInputError(msg)
        _bm25s()  # a clear error now, not on the first query
        self.store = store
        self.k1, self.b = float(k1), float(b)
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        self._worker: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_worker")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._worker = None

    def __repr__(self) -> str:
        n = "unbuilt" if self._snap is None else len(self._snap.ids)
        return f"BM25Index(passages={n}, k1={self.k1}, b={self.b}, store={type(self.store).__name__})"

    def __len__(self) -> int:
        return len(self._ensure().ids)

    # ------------------------------------------------------------------ building
    def refresh(self) -> None:
        """Rebuild from the store now (needed after another process wrote to it)."""
        with self._lock:
            self._snap = self._build()

    def _ensure(self) -> _Snapshot:
        rev = getattr(self.store, "revision", None)
        snap = self._snap
        if snap is not None and (rev is None or rev == snap.built_at):
            return snap
        if snap is not None and len(snap.ids) >= BACKGROUND_REBUILD:
            self._rebuild_in_background()
            return snap  # stale until the rebuild lands: deleted ids are skipped, new ones found by dense search
        with self._lock:
            snap = self._snap
            if snap is None or (rev is not None and rev != snap.built_at):
                snap = self._snap = self._build()
        return snap

    def _rebuild_in_background(self) -> None:
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return

            def work() -> None:
                try:
                    snap = self._build()
                except Exception:  # noqa: BLE001 - logged; the next query tries again
                    log.exception("BM25 index rebuild failed; serving the previous index")
                    return
                with self._lock:
                    self._snap = snap

            self._worker = threading.Thread(target=work, name="latentrag-bm25-rebuild", daemon=True)
            self._worker.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background rebuild to finish (see :data:`BACKGROUND_REBUILD`)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _passages(self) -> tuple[list[str], list[str]]:
        """Ids and texts of the passages in the store now (an id deleted while paging is skipped)."""
        ids = list(self.store.ids())
        hits = [h for s in range(0, len(ids), PAGE) for h in get_existing(self.store, ids[s : s + PAGE])]
        return [h.id for h in hits], [h.text for h in hits]

    def _build(self) -> _Snapshot:
        bm25s = _bm25s()
        from bm25s.tokenization import Tokenizer

        rev = getattr(self.store, "revision", None)
        ids, texts = self._passages()
        show = len(texts) >= PROGRESS_THRESHOLD
        tokenizer = Tokenizer(stopwords="en")
        tokens = tokenizer.tokenize(texts, return_as="tuple", show_progress=show) if texts else None
        model = bm25s.BM25(k1=self.k1, b=self.b)
        if texts:
            model.index(tokens, show_progress=show)
        log.debug("BM25 index: %d passages, %d terms", len(ids), len(tokenizer.get_vocab_dict()))
        return _Snapshot(ids, model if texts else None, tokenizer, fingerprint(ids, texts),
                         rev if rev is not None else True, frozenset(tokenizer.stopwords))

    # ------------------------------------------------------------------ search
    def search(self, queries: list[str], k: int, *, filter: Filter | None = None) -> list[list[tuple[str, float]]]:
        """The top ``k`` ``(id, BM25 score)`` per query, best first; passages sharing no term with a query are
        left out, so a list may be shorter than ``k``. ``filter`` keeps the passages whose metadata
        matches (the store's own filter semantics), searching deeper until ``k`` pass or none are left."""
        k = check_positive_int("k", k)
        snap = self._ensure()
        if snap.model is None or not queries:
            return [[] for _ in queries]
        q = [_query_terms(snap, text) for text in queries]
        if not any(q):
            return [[] for _ in queries]
        q = [terms or [""] for terms in q]  # "" is bm25s's empty token: a query sharing no term scores 0
        n = len(snap.ids)
        depth = min(n, k if not filter else 4 * k)
        while True:
            docs, scores = snap.model.retrieve(q, k=depth, show_progress=False, n_threads=0)
            out = [[(snap.ids[int(d)], float(s)) for d, s in zip(row_d, row_s, strict=True) if s > 0]
                   for row_d, row_s in zip(np.atleast_2d(docs), np.atleast_2d(scores), strict=True)]
            if not filter:
                return [row[:k] for row in out]
            kept = self._filtered(out, filter)
            if depth >= n or all(len(row) >= k or len(o) < depth for row, o in zip(kept, out, strict=True)):
                return [row[:k] for row in kept]
            depth = min(n, depth * 4)

    def _filtered(self, rows: list[list[tuple[str, float]]], filter: Filter) -> list[list[tuple[str, float]]]:
        wanted = sorted({i for row in rows for i, _ in row})
        meta = {h.id: h.meta for h in get_existing(self.store, wanted)}
        return [[(i, s) for i, s in row if i in meta and matches(meta[i], filter)] for row in rows]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically into the folder ``path`` (a folder of versions; concurrent saves serialise)."""
        snap = self._ensure()
        root = Path(path)
        with versioned.writing(root) as (version, tmp):
            files: list[str] = []
            if snap.model is not None:
                before = set(os.listdir(tmp))
                snap.model.save(str(tmp), show_progress=False)
                files = sorted(set(os.listdir(tmp)) - before)
            snap.tokenizer.save_vocab(str(tmp), vocab_name="vocab.tokenizer.json")
            (tmp / "ids.json").write_text(json.dumps(snap.ids), encoding="utf-8")
            files += ["vocab.tokenizer.json", "ids.json"]
            manifest = {"kind": KIND, "format_version": FORMAT_VERSION, "k1": self.k1, "b": self.b,
                        "count": len(snap.ids), "fingerprint": snap.fingerprint, "empty": snap.model is None}
            return versioned.commit(root, version, tmp, manifest, files)

    @classmethod
    def load(cls, path: str | os.PathLike[str], store: Any) -> BM25Index:
        """Load a saved index for ``store``. Raises :class:`~latentrag.errors.StoreCorruptError` when the
        store's passages are no longer those the index was built from (rebuild with ``BM25Index(store)``)."""
        bm25s = _bm25s()
        from bm25s.tokenization import Tokenizer

        root = Path(path)
        with versioned.reading(root, kind=KIND, format_version=FORMAT_VERSION, what="BM25Index",
                               hint="save one with BM25Index(store).save(path)") as (folder, manifest):
            idx = cls(store, k1=manifest["k1"], b=manifest["b"])
            ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer(stopwords="en")
            tokenizer.load_vocab(str(folder), vocab_name="vocab.tokenizer.json")
            model = None if manifest["empty"] else bm25s.BM25.load(str(folder), show_progress=False)
        rev = getattr(store, "revision", None)
        now_ids, now_texts = idx._passages()
        now = fingerprint(now_ids, now_texts)
        if now != manifest["fingerprint"]:
            msg = (f"the BM25 index at {str(root)!r} was built from {manifest['count']} passages that differ from "
                   f"the store's {len(now_ids)} now; rebuild it with BM25Index(store) and save it again.")
            raise StoreCorruptError(msg)
        idx._snap = _Snapshot(ids, model, tokenizer, now, rev if rev is not None else True,
                              frozenset(tokenizer.stopwords))
        return idx


def _query_terms(snap: _Snapshot, text: str) -> list[str]:
    """The index's terms in ``text``, tokenised as the passages were (lower-cased words, English stop words
    removed); words the passages never use are dropped. Done here rather than by bm25s, whose query path
    rebuilds a reverse vocabulary on every call (16 ms per query at 14k passages)."""
    tok = snap.tokenizer
    words = tok.splitter(text.lower() if tok.lower else text)
    stop = snap.stopwords
    vocab = snap.model.vocab_dict
    return [w for w in words if w not in stop and w in vocab]


def fingerprint(ids: list[str], texts: list[str]) -> str:
    """SHA-256 over the (id, text) pairs in id order: equal exactly when the passages are."""
    h = hashlib.sha256()
    for i, t in sorted(zip(ids, texts, strict=True)):
        h.update(i.encode("utf-8", "surrogatepass") + b"\0" + hashlib.sha1(t.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()
