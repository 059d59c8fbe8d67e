"""Fitting the :class:`~latentrag.models.tool_refiner.ToolRefiner`, the learned stage of tool retrieval, on a
tool index's own usage examples (called by :meth:`ToolRetriever.fit`; inference code, so it lives here and
not in :mod:`latentrag.training`).

Each example is replayed as a query with itself left out of the index (leave-one-out features), so the
refiner learns from the situation it meets at query time: a new request whose own phrasing is not
among the examples. The loss is a listwise softmax over the first stage's candidates with the
example's tools as positives. Full-batch AdamW; seconds on a CPU for thousands of examples.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np


def refiner_batch(index: Any, weights: Any, examples: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(n_examples, n_candidates, 6)`` and positive mask ``(n_examples, n_candidates)`` built
    from leave-one-out features of each example's first-stage candidates."""
    from latentrag.models.tool_refiner import ToolRefiner

    ids = list(range(len(index.examples))) if examples is None else examples
    wvec = np.array([weights.desc, weights.mean, weights.max, weights.top], dtype=np.float32)
    n_cand = min(len(index), weights.candidates)
    cands = index.candidates(index.examples[ids], weights, n_cand)
    xs, masks = [], []
    for row_i, ex in enumerate(ids):
        rows = cands[row_i]
        pos = np.isin(rows, index.example_tools[ex])
        if not pos.any():
            continue
        feats = index.features(index.examples[ex], rows, weights.top_m, exclude=ex)
        counts = index.counts[rows] - pos.astype(np.int64)
        xs.append(ToolRefiner.inputs(feats, feats @ wvec, counts))
        masks.append(pos)
    if not xs:
        return np.zeros((0, n_cand, 6), np.float32), np.zeros((0, n_cand), bool)
    return np.stack(xs), np.stack(masks)


def _fit(x: np.ndarray, mask: np.ndarray, *, epochs: int, lr: float, hidden: int, weight_decay: float,
         seed: int) -> Any:
    import torch

    from latentrag.models.tool_refiner import ToolRefiner

    torch.manual_seed(seed)
    model = ToolRefiner(hidden=hidden)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    for _ in range(epochs):
        logits = model(xt)
        pos = torch.logsumexp(logits.masked_fill(~mt, float("-inf")), dim=1)
        loss = (torch.logsumexp(logits, dim=1) - pos).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _mrr(scores: np.ndarray, mask: np.ndarray) -> float:
    """Mean reciprocal rank of the best-ranked positive per row."""
    order = np.argsort(-scores, axis=1, kind="stable")
    first = np.argmax(np.take_along_axis(mask, order, axis=1), axis=1)
    return float(np.mean(1.0 / (first + 1)))


def train_refiner(index: Any, weights: Any, *, epochs: int = 100, lr: float = 3e-3, hidden: int = 32,
                  weight_decay: float = 1e-2, seed: int = 0, validate: bool = False,
                  holdout: float = 0.2) -> Any:
    """A trained :class:`~latentrag.models.tool_refiner.ToolRefiner` (eval mode) for ``index``.

    ``validate=True`` first trains on ``1 - holdout`` of the examples and keeps the refiner only if it
    ranks the held-out examples' tools better (mean reciprocal rank) than the first-stage blend;
    otherwise it returns ``None``. The kept refiner is then retrained on every example.
    """
    import torch

    from latentrag.errors import InvalidInputError

    random.seed(seed)
    np.random.seed(seed)
    x, mask = refiner_batch(index, weights)
    if len(x) == 0:
        msg = "none of the usage examples has its tool among the first-stage candidates; the refiner cannot train."
        raise InvalidInputError(msg)
    opts: dict[str, Any] = {"epochs": epochs, "lr": lr, "hidden": hidden, "weight_decay": weight_decay, "seed": seed}
    if validate:
        perm = np.random.default_rng(seed).permutation(len(x))
        n_hold = max(1, int(holdout * len(x)))
        hold, fit = perm[:n_hold], perm[n_hold:]
        if len(fit) == 0:
            return None
        model = _fit(x[fit], mask[fit], **opts)
        with torch.inference_mode():
            refined = model(torch.from_numpy(x[hold])).numpy()
        if _mrr(refined, mask[hold]) <= _mrr(x[hold][..., 4], mask[hold]):
            return None
    return _fit(x, mask, **opts)
