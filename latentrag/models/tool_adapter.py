"""``QueryAdapter``: a low-rank adapter on the request embedding (the Augmented-Embeddings idea), so that
requests land nearer the tools they need before any tool is scored:

    q' = normalize(q + U (V^T q))

with ``U`` and ``V`` of shape ``(dim, rank)``. ``U`` starts at zero, so an untrained adapter is the identity
(``q' = q`` for a unit ``q``); :mod:`latentrag.retrievers.tool_fit` trains both on the catalogue's usage
examples (InfoNCE of the adapted example vectors against fixed tool vectors). The tool side never
changes, so nothing in the index is re-encoded when the adapter is refitted.

Numpy inference: two ``(dim, rank)`` products per request, a few microseconds. Read-only once fitted,
so one instance serves concurrent callers.
"""

from __future__ import annotations

import numpy as np

from latentrag.errors import InvalidInputError


class QueryAdapter:
    """``apply(q)`` maps request vectors ``(b, dim)`` (or one ``(dim,)``) to adapted unit vectors.

    >>> a = QueryAdapter.identity(dim=3, rank=2)
    >>> [round(float(x), 3) for x in a.apply(np.array([0.0, 0.6, 0.8], np.float32))]
    [0.0, 0.6, 0.8]
    """

    def __init__(self, u: np.ndarray, v: np.ndarray) -> None:
        u = np.ascontiguousarray(u, dtype=np.float32)
        v = np.ascontiguousarray(v, dtype=np.float32)
        if u.ndim != 2 or u.shape != v.shape or u.shape[1] < 1:
            msg = (f"QueryAdapter needs U and V of one shape (dim, rank) with rank >= 1, got U {u.shape} and "
                   f"V {v.shape}; build one with QueryAdapter.identity(dim, rank).")
            raise InvalidInputError(msg)
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            msg = "QueryAdapter weights hold NaN or infinite values; refit the learned stage (retriever.fit())."
            raise InvalidInputError(msg)
        self.u, self.v = u, v

    @classmethod
    def identity(cls, dim: int, rank: int = 16, seed: int = 0) -> QueryAdapter:
        """The untrained adapter: ``U = 0`` (so ``apply`` only re-normalises), ``V`` random normal (the
        directions ``U`` learns to use; with ``U = 0`` the gradient reaches ``U`` through them)."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            msg = f"dim must be a positive integer (the embedding dimension), got {dim!r}."
            raise InvalidInputError(msg)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= dim:
            msg = f"rank must be an integer from 1 to dim ({dim}), got {rank!r}; 16-32 suits MiniLM's 384."
            raise InvalidInputError(msg)
        v = np.random.default_rng(seed).standard_normal((dim, rank)).astype(np.float32) / np.sqrt(rank)
        return cls(np.zeros((dim, rank), np.float32), v)

    @property
    def dim(self) -> int:
        return int(self.u.shape[0])

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    def delta_norm(self) -> float:
        """Size of the update: the Frobenius norm of ``U V^T`` (0 for the identity)."""
        return float(np.sqrt(np.sum((self.u.T @ self.u) * (self.v.T @ self.v))))

    def apply(self, q: np.ndarray) -> np.ndarray:
        """Adapted, L2-normalised request vectors, same shape as ``q``."""
        x = np.asarray(q, dtype=np.float32)
        one = x.ndim == 1
        if one:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            msg = (f"query embedding has shape {tuple(np.shape(q))}; the query adapter takes (dim,) or "
                   f"(batch, dim) with dim {self.dim} (the encoder it was fitted with).")
            raise InvalidInputError(msg)
        z = x + (x @ self.v) @ self.u.T
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return z[0] if one else z

    def tensors(self) -> dict[str, np.ndarray]:
        return {"adapter.u": self.u, "adapter.v": self.v}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> QueryAdapter:
        return cls(t["adapter.u"], t["adapter.v"])

    def __repr__(self) -> str:
        return f"QueryAdapter(dim={self.dim}, rank={self.rank}, |UV^T|={self.delta_norm():.3f})"
