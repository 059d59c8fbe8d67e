"""The in-process registry behind ``<xrag:KEY>`` markers, shared by :class:`~latentrag.compressors.xrag.XRAGCompressor`
(which writes them) and :class:`~latentrag.readers.xrag.XRAGReader` (which reads them). Pass the same
``registry=`` to both to keep markers apart from the process-wide :data:`REGISTRY`."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict

import numpy as np

from latentrag.errors import InvalidInputError
from latentrag.types import Hit

MARKER_RE = re.compile(r"<xrag:([0-9a-f]{16})>")


class SoftContextRegistry:
    """Content-addressed embeddings for ``<xrag:KEY>`` markers: thread-safe, bounded (LRU)."""

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[np.ndarray, str]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, vector: np.ndarray, text: str = "") -> str:
        vec = np.ascontiguousarray(vector, dtype=np.float32)
        key = hashlib.blake2b(vec.tobytes(), digest_size=8).hexdigest()
        with self._lock:
            self._items[key] = (vec, text)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> tuple[np.ndarray, str]:
        """The embedding and the original text behind ``key``."""
        with self._lock:
            item = self._items.get(key)
        if item is None:
            msg = (
                f"no soft context for marker <xrag:{key}> in this registry; markers are made by XRAGCompressor "
                f"in the same process (the registry keeps the last {self.max_items}), and a compressor with its "
                f"own registry= needs a reader given the same registry=."
            )
            raise InvalidInputError(msg)
        return item


REGISTRY = SoftContextRegistry()


def marker(key: str) -> str:
    return f"<xrag:{key}>"


def split_markers(prompt: str, registry: SoftContextRegistry | None = None) -> tuple[list[str], list[Hit]]:
    """Split ``prompt`` at ``<xrag:KEY>`` markers: the text pieces around them, and one hit per marker
    (its original text, its embedding as ``vector``), in order."""
    registry = registry or REGISTRY
    pieces: list[str] = []
    hits: list[Hit] = []
    last = 0
    for m in MARKER_RE.finditer(prompt):
        pieces.append(prompt[last : m.start()])
        vec, text = registry.get(m.group(1))
        hits.append(Hit(m.group(1), text, vector=vec))
        last = m.end()
    pieces.append(prompt[last:])
    return pieces, hits
