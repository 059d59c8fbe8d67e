"""Offline tiktoken: token counting and a tiktoken-aware text splitter.

``tiktoken.get_encoding`` downloads its BPE file on first use. llama-index-core ships the
cl100k_base and o200k_base files; when the user has not set ``TIKTOKEN_CACHE_DIR`` we point it there
(located without importing llama-index), so token counting works with no network.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from latentrag.errors import InvalidInputError, check_positive_int

_lock = threading.Lock()


def _shipped_tiktoken_cache() -> str | None:
    spec = importlib.util.find_spec("llama_index.core")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"
    return str(path) if path.is_dir() else None


@lru_cache(maxsize=8)
def get_encoding(name: str = "cl100k_base") -> Any:
    """``tiktoken.get_encoding(name)``, offline when llama-index-core's cache files are installed."""
    import tiktoken

    with _lock:
        if "TIKTOKEN_CACHE_DIR" not in os.environ:
            cache = _shipped_tiktoken_cache()
            if cache is not None:
                os.environ["TIKTOKEN_CACHE_DIR"] = cache
        try:
            return tiktoken.get_encoding(name)
        except ValueError as exc:
            msg = f"unknown tiktoken encoding {name!r}; use 'cl100k_base' or 'o200k_base'."
            raise InvalidInputError(msg) from exc
        except Exception as exc:  # network failure while downloading the BPE file
            msg = (
                f"tiktoken could not load {name!r} offline ({exc}); install the offline BPE files with "
                'pip install "latentrag[llama-index]" or set TIKTOKEN_CACHE_DIR to a folder holding them.'
            )
            raise RuntimeError(msg) from exc


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
