"""Offline tiktoken: token counting and a tiktoken-aware text splitter.

``tiktoken.get_encoding`` downloads its BPE file on first use. latentrag ships the cl100k_base and
o200k_base files (``latentrag/data/tiktoken``, MIT, from tiktoken) under the names tiktoken's cache
uses, so token counting works with no network whatever extras are installed. A ``TIKTOKEN_CACHE_DIR``
the user has set always wins; the shipped files are used when it is unset, or when loading from the
user's folder fails (offline, and the file is not there).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from latentrag.errors import InvalidInputError, check_positive_int

_lock = threading.Lock()
#: The BPE files shipped in the wheel, in tiktoken's cache layout.
SHIPPED_TIKTOKEN_DIR = Path(__file__).parent / "data" / "tiktoken"
_CACHE_VAR = "TIKTOKEN_CACHE_DIR"


@contextmanager
def _cache_dir(folder: str) -> Iterator[None]:
    """Point tiktoken's cache at ``folder`` for one load, restoring the caller's environment after."""
    before = os.environ.get(_CACHE_VAR)
    os.environ[_CACHE_VAR] = folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_CACHE_VAR, None)
        else:
            os.environ[_CACHE_VAR] = before


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> Any:
    """``tiktoken.get_encoding(name)``, offline for cl100k_base and o200k_base (shipped BPE files)."""
    import tiktoken

    if not isinstance(name, str) or name not in tiktoken.list_encoding_names():
        valid = sorted(tiktoken.list_encoding_names())
        msg = f"unknown tiktoken encoding {name!r}; use one of {valid} (offline: 'cl100k_base' or 'o200k_base')."
        raise InvalidInputError(msg)
    with _lock:
        user_dir = os.environ.get(_CACHE_VAR)
        first_error: Exception | None = None
        if user_dir is not None:
            try:
                return tiktoken.get_encoding(name)
            except Exception as exc:  # offline and not in the user's folder: try the shipped files
                first_error = exc
        try:
            with _cache_dir(str(SHIPPED_TIKTOKEN_DIR)):
                return tiktoken.get_encoding(name)
        except Exception as exc:  # not shipped, and the BPE download failed
            cause = first_error or exc
            msg = (
                f"tiktoken could not load {name!r} offline ({cause}); latentrag ships 'cl100k_base' and "
                f"'o200k_base'. For other encodings, connect once or set TIKTOKEN_CACHE_DIR to a folder holding them."
            )
            raise RuntimeError(msg) from cause


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    """Number of tiktoken tokens in ``text``."""
    return len(get_encoding(encoding).encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    start_token: int


class TokenTextSplitter:
    """Split text into windows of ``chunk_size`` tokens overlapping by ``overlap`` tokens, cutting at
    paragraph, sentence or word boundaries near the window's end where one exists.

    >>> [c.text for c in TokenTextSplitter(chunk_size=4, overlap=0).split("one two three four five six")]
    ['one two three four', ' five six']
    """

    def __init__(self, chunk_size: int = 200, overlap: int = 30, encoding: str = "cl100k_base") -> None:
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if not isinstance(overlap, int) or overlap < 0 or overlap >= chunk_size:
            msg = f"overlap must be an int in [0, chunk_size={chunk_size}), got {overlap!r}."
            raise InvalidInputError(msg)
        self.overlap = overlap
        self.encoding = encoding

    def split(self, text: str) -> list[Chunk]:
        enc = get_encoding(self.encoding)
        toks = enc.encode(text, disallowed_special=())
        chunks: list[Chunk] = []
        start = 0
        while start < len(toks):
            end = min(start + self.chunk_size, len(toks))
            if end < len(toks):
                end = self._boundary(enc, toks, start, end)
            piece = enc.decode(toks[start:end])
            if piece.strip():
                chunks.append(Chunk(piece, len(chunks), start))
            if end >= len(toks):
                break
            start = max(end - self.overlap, start + 1)
        return chunks

    def _boundary(self, enc: Any, toks: list[int], start: int, end: int) -> int:
        """Move ``end`` back to the last paragraph/sentence/space break in the window's last third."""
        floor = start + (2 * (end - start)) // 3
        for marks in (("\n\n",), (". ", "? ", "! ", ".\n"), (" ", "\n")):
            for pos in range(end, floor, -1):
                piece = enc.decode(toks[pos - 1 : pos + 1])
                if any(m in piece for m in marks):
                    return pos
        return end
