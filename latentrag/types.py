"""Plain data passed between the core parts: :class:`Hit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Hit:
    """One retrieved passage (or tool): a stable id, its text, a score and free metadata.

    ``score`` is always a plain Python ``float`` (so it survives ``json.dumps``) and
    ``metadata`` is always a ``dict`` (``None`` becomes ``{}``). ``vector`` optionally carries
    the passage's retrieval embedding, shape ``(dim,)``, so later stages (multi-hop, xRAG) can
    reuse it instead of re-encoding; it is excluded from equality and ``repr``.

    >>> Hit("d1", "Paris is the capital of France.", score=1)
    Hit(id='d1', text='Paris is the capital of France.', score=1.0, metadata={})
    """

    id: str
    text: str
    score: float = 0.0
    metadata: dict[str, Any] | None = None
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.score = float(self.score)
        if self.metadata is None:
            self.metadata = {}

    @property
    def meta(self) -> dict[str, Any]:
        """``metadata`` typed as a dict (it is never ``None`` after construction)."""
        assert self.metadata is not None
        return self.metadata

    def copy(self, **changes: Any) -> Hit:
        """A shallow copy with its own metadata dict, so callers' hits are never mutated."""
        values: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "score": self.score,
            "metadata": dict(self.meta),
            "vector": self.vector,
        }
        values.update(changes)
        return Hit(**values)
