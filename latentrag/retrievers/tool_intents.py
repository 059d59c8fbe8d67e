"""Multi-intent requests: split "do X. Also do Y" into its parts, score tools for each part, and fuse.

One embedding of a request that asks for two things sits between the two tools it needs, and the
second tool often falls out of the top k. Each part is embedded on its own (in the same encoder batch
as the request) and the rankings are fused by *coverage* (:func:`fuse_cover`): the best tool of the
whole request and of each part come first, then the rest, each group ordered by the tool's best score
over the request and its parts (a part's score counting ``PART_MARGIN`` less, :func:`fuse_max`). A
request with one part is scored as before.

Why coverage and not plain max fusion: with many examples per tool the learned scores are peaked, and
one part's near-duplicate tools can fill the whole top k under max fusion, pushing the other part's tool
out. On the dev splits of ``benchmarks/tools.py`` (four shared sets; multi-tool requests real where a
set has them, else two real held-out requests joined), max fusion lost recall@5 on composed requests of
the densest set (APIBench TensorFlow) against no splitting at all; coverage fusion gained on every set.
"""

from __future__ import annotations

import re

import numpy as np

#: Sentence ends, semicolons, and the connectives that start a second request inside a sentence.
_SPLIT = re.compile(
    r"(?<=[.?!;])\s+|\s*;\s*|,?\s+(?:and\s+)?(?:also|then|additionally|afterwards|after that|as well as)\s+"
    r"|,\s+and\s+(?=(?:find|get|calculate|compute|search|look|check|tell|give|show|fetch|list|send|book|"
    r"create|update|delete|convert|translate|play|set|make|add|remove|retrieve|determine|predict|estimate)\b)",
    re.IGNORECASE,
)
MIN_WORDS = 3
MAX_PARTS = 4
#: how much less a part's score counts than the whole request's, in cosine units (dev-selected)
PART_MARGIN = 0.02
#: the fusion rules :class:`~latentrag.retrievers.tools.ToolRetriever` accepts as ``multi_intent``
MODES = ("cover", "max")


def split_intents(query: str) -> list[str]:
    """The request's parts (at least ``MIN_WORDS`` words each, at most ``MAX_PARTS``), or ``[]`` when it
    has fewer than two: then the request is scored whole."""
    parts = [p.strip(" ,.;") for p in _SPLIT.split(query) if p and p.strip(" ,.;")]
    parts = [p for p in parts if len(p.split()) >= MIN_WORDS]
    return parts[:MAX_PARTS] if len(parts) >= 2 else []


def fuse_max(ranked: list[tuple[np.ndarray, np.ndarray]], k: int,
             part_margin: float = PART_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``(rows, scores)`` lists (the whole request first, then its parts): each row keeps its best
    score, a part's less ``part_margin``; the top ``k`` rows, best first (ties keep the first seen)."""
    best: dict[int, float] = {}
    for i, (rows, scores) in enumerate(ranked):
        off = part_margin if i else 0.0
        for r, s in zip(rows.tolist(), (scores - off).tolist(), strict=True):
            if r not in best or s > best[r]:
                best[r] = s
    items = sorted(best.items(), key=lambda kv: -kv[1])[:k]
    return np.array([r for r, _ in items], dtype=np.int64), np.array([s for _, s in items], dtype=np.float32)


def fuse_cover(ranked: list[tuple[np.ndarray, np.ndarray]], k: int,
               part_margin: float = PART_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``(rows, scores)`` lists (the whole request first, then its parts) so that every part is
    covered: the top row of the whole request and of each part come first, then the other rows, each
    group ordered by its :func:`fuse_max` score; the first ``k`` (with fewer slots than parts, the
    parts' best tools with the highest fused scores win)."""
    rows_f, scores_f = fuse_max(ranked, sum(len(r) for r, _ in ranked), part_margin)
    required = {int(rows[0]) for rows, _ in ranked if len(rows)}
    first = [i for i, r in enumerate(rows_f.tolist()) if r in required]
    rest = [i for i, r in enumerate(rows_f.tolist()) if r not in required]
    order = np.array(first + rest, dtype=np.int64)[:k]
    return rows_f[order], scores_f[order]
