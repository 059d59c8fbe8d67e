"""The Tool2Vec index: per-tool description vectors, running sums of usage-example embeddings, and the
example matrix itself, with the first-stage scoring features computed from them.

A query ``q`` (L2-normalised) scores tool ``j`` with these features (all cosine similarities):

- ``desc``: ``q . d_j`` with ``d_j`` the embedding of the tool's name, description and parameter names;
- ``mean``: ``q . t_j`` with ``t_j = normalise(sum_j / count_j)``, the Tool2Vec vector (running mean of the
  embeddings of the examples that used tool ``j``);
- ``max`` and ``top``: the largest, and the mean of the ``top_m`` largest, ``q . e`` over the tool's examples
  (a nearest-neighbour vote that keeps distinct phrasings apart instead of averaging them away).

A tool without examples uses ``desc`` for every feature. Scores are a fixed linear blend of the features
(:class:`BlendWeights`); candidates are first picked with the blend of the two precomputable features
(one matrix-vector product), then the example features are computed for those candidates only, so the cost
beyond query encoding stays well under 2 ms at 10,000 tools.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import chain

import numpy as np

FEATURES = ("desc", "mean", "max", "top")


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the linear score blend and the candidate-pool size. The defaults won the dev-split grid
    of ``benchmarks/tools.py --select`` on both ToolBench and APIBench (never the test split)."""

    desc: float = 0.4
    mean: float = 0.2
    max: float = 0.2
    top: float = 0.2
    top_m: int = 3
    candidates: int = 64

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


class ToolIndex:
    """Vectors for ``n`` tools (rows) and ``m`` usage examples. Not thread-safe by itself: the owning
    :class:`~latentrag.retrievers.tools.ToolRetriever` holds its lock around every read and write."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.desc = np.zeros((0, dim), dtype=np.float32)  # (n, dim)
        self.sums = np.zeros((0, dim), dtype=np.float32)  # (n, dim)
        self.counts = np.zeros(0, dtype=np.int64)  # (n,)
        self.examples = np.zeros((0, dim), dtype=np.float32)  # (m, dim)
        self.example_tools: list[list[int]] = []  # example -> tool rows
        self.tool_examples: list[list[int]] = []  # tool row -> example indices
        self._means: np.ndarray | None = None
        self._first: np.ndarray | None = None
        self._first_weights: tuple[float, float] | None = None

    # ------------------------------------------------------------------ writes
    def add_tools(self, desc_vectors: np.ndarray) -> None:
        """Append tools (rows of ``desc_vectors``, shape (n_new, dim)) with no examples yet."""
        n_new = len(desc_vectors)
        self.desc = np.vstack([self.desc, np.asarray(desc_vectors, dtype=np.float32)])
        self.sums = np.vstack([self.sums, np.zeros((n_new, self.dim), dtype=np.float32)])
        self.counts = np.concatenate([self.counts, np.zeros(n_new, dtype=np.int64)])
        self.tool_examples.extend([] for _ in range(n_new))
        self._invalidate()

    def add_examples(self, vectors: np.ndarray, tool_rows: list[list[int]]) -> None:
        """Append examples (shape (m_new, dim)); each updates the running sum of every tool it names."""
        start = len(self.examples)
        vectors = np.asarray(vectors, dtype=np.float32)
        self.examples = np.vstack([self.examples, vectors])
        for i, rows in enumerate(tool_rows):
            self.example_tools.append(list(rows))
            for r in rows:
                self.sums[r] += vectors[i]
                self.counts[r] += 1
                self.tool_examples[r].append(start + i)
        self._invalidate()

    def remove_tools(self, rows: list[int]) -> np.ndarray:
        """Drop tool rows; examples lose those labels and examples left with none are dropped.
        Returns the boolean mask of kept examples (to keep the caller's example texts aligned)."""
        drop = set(rows)
        keep_rows = [r for r in range(len(self.desc)) if r not in drop]
        remap = {old: new for new, old in enumerate(keep_rows)}
        self.desc = self.desc[keep_rows]
        self.sums = self.sums[keep_rows]
        self.counts = self.counts[keep_rows]
        new_labels = [[remap[r] for r in rows_ if r in remap] for rows_ in self.example_tools]
        keep_ex = np.array([bool(lab) for lab in new_labels], dtype=bool)
        self.examples = self.examples[keep_ex] if len(keep_ex) else self.examples
        self.example_tools = [lab for lab, k in zip(new_labels, keep_ex, strict=True) if k]
        self.tool_examples = [[] for _ in keep_rows]
        for e, lab in enumerate(self.example_tools):
            for r in lab:
                self.tool_examples[r].append(e)
        self._invalidate()
        return keep_ex

    def copy(self) -> ToolIndex:
        """An independent copy (a snapshot a background fit can read while the original changes)."""
        out = ToolIndex(self.dim)
        out.desc, out.sums, out.counts = self.desc.copy(), self.sums.copy(), self.counts.copy()
        out.examples = self.examples.copy()
        out.example_tools = [list(r) for r in self.example_tools]
        out.tool_examples = [list(e) for e in self.tool_examples]
        return out

    def subset(self, examples: np.ndarray) -> ToolIndex:
        """The same tools with only the usage ``examples`` (indices) kept (held-out validation)."""
        out = ToolIndex(self.dim)
        out.add_tools(self.desc)
        ids = np.asarray(examples, dtype=np.int64)
        out.add_examples(self.examples[ids], [self.example_tools[int(i)] for i in ids])
        return out

    def _invalidate(self) -> None:
        self._means = None
        self._first = None

    # ------------------------------------------------------------------ derived
    def __len__(self) -> int:
        return len(self.desc)

    def means(self) -> np.ndarray:
        """Tool2Vec vectors, shape (n, dim): normalised example means, or the description for cold tools."""
        if self._means is None:
            m = self.desc.copy()
            has = self.counts > 0
            if has.any():
                m[has] = _normalize_rows(self.sums[has] / self.counts[has, None])
            self._means = m
        return self._means

    def mean_without(self, tool: int, example: int) -> np.ndarray | None:
        """The Tool2Vec vector of ``tool`` with ``example`` (one of its examples) left out: the normalised
        mean of its other examples, ``None`` when it has no other."""
        n = int(self.counts[tool]) - 1
        return None if n <= 0 else _normalize_rows((self.sums[tool] - self.examples[example])[None] / n)[0]

    def first_stage(self, w: BlendWeights) -> np.ndarray:
        """The precomputed candidate matrix ``(w.desc + w.max + w.top) d_j + w.mean t_j``, shape (n, dim)."""
        key = (w.desc + w.max + w.top, w.mean)
        if self._first is None or self._first_weights != key:
            self._first = np.ascontiguousarray(key[0] * self.desc + key[1] * self.means(), dtype=np.float32)
            self._first_weights = key
        return self._first

    # ------------------------------------------------------------------ scoring
    def candidates(self, q: np.ndarray, w: BlendWeights, n_cand: int) -> np.ndarray:
        """Top ``n_cand`` tool rows for each query by the first-stage blend. Shape (b, n_cand), unordered."""
        first = self.first_stage(w)
        s = q @ first.T
        n = len(first)
        if n_cand >= n:
            return np.broadcast_to(np.arange(n), (len(q), n)).copy()
        return np.argpartition(-s, n_cand - 1, axis=1)[:, :n_cand]

    def features(self, q: np.ndarray, rows: np.ndarray, top_m: int, exclude: int | None = None) -> np.ndarray:
        """Features of the candidate ``rows`` for one query ``q`` (dim,). Shape (len(rows), 4), in
        :data:`FEATURES` order.

        ``exclude`` leaves one example out (its own vector is removed from the means, max and top of
        the tools it names), so a refiner trained on the examples sees what it will see at query time.
        """
        d = self.desc[rows] @ q
        mean = self.means()[rows] @ q
        mx = d.copy()
        top = d.copy()
        ex_lists = [self.tool_examples[r] for r in rows.tolist()]
        if exclude is not None:
            own = set(self.example_tools[exclude])
            for c, r in enumerate(rows.tolist()):
                if r in own:
                    ex_lists[c] = [i for i in ex_lists[c] if i != exclude]
                    rest = self.mean_without(r, exclude)
                    mean[c] = d[c] if rest is None else float(rest @ q)
        lens = np.fromiter((len(e) for e in ex_lists), dtype=np.int64, count=len(ex_lists))
        total = int(lens.sum())
        if total:
            flat = np.fromiter(chain.from_iterable(ex_lists), dtype=np.int64, count=total)
            sims = self.examples[flat] @ q
            # one padded (candidates, longest list) matrix instead of a loop over candidates
            starts = np.cumsum(lens) - lens
            seg = np.repeat(np.arange(len(lens)), lens)
            pad = np.full((len(lens), int(lens.max())), -np.inf, dtype=np.float32)
            pad[seg, np.arange(total) - starts[seg]] = sims
            has = lens > 0
            mx[has] = pad[has].max(axis=1)
            m = max(1, min(top_m, pad.shape[1]))
            best = -np.partition(-pad, m - 1, axis=1)[:, :m] if m < pad.shape[1] else pad
            take = np.minimum(lens, max(1, top_m))
            sums = np.where(np.isfinite(best), best, 0.0).sum(axis=1)
            top[has] = sums[has] / take[has]
        return np.stack([d, mean, mx, top], axis=1).astype(np.float32)
