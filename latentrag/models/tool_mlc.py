"""``MLCHead``: multi-label classification over tools (one logit per tool) from the query embedding,
trained on usage examples. A tool's logit is ``w_j . q + b_j``; ``w_j`` starts at the tool's Tool2Vec
vector scaled by ``scale`` so an untrained head ranks like Tool2Vec, and training sharpens the
boundaries between tools that share phrasing. Numpy inference; weights are plain arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MLCHead:
    """Logits ``(b, n_tools)`` for query vectors ``(b, dim)``; a tool added after training gets its
    Tool2Vec (or description) vector as weight and the mean bias, so it stays retrievable."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)  # (n_tools, dim)
        self.bias = np.asarray(bias, dtype=np.float32)  # (n_tools,)

    def logits(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float32) @ self.weight.T + self.bias


def train_mlc(index: Any, *, epochs: int = 200, lr: float = 0.05, scale: float = 20.0, weight_decay: float = 1e-4,
              seed: int = 0) -> MLCHead:
    """Fit the head on ``index``'s examples: softmax cross-entropy over all tools with the example's tools as
    positives (multi-label via log-sum-exp over positives), full batch, AdamW. Seconds on a CPU."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(index.examples, dtype=np.float32))
    n = len(index)
    mask = torch.zeros(len(x), n, dtype=torch.bool)
    for i, rows in enumerate(index.example_tools):
        mask[i, rows] = True
    w = torch.nn.Parameter(torch.from_numpy(scale * index.means()).clone())
    b = torch.nn.Parameter(torch.zeros(n))
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        logits = x @ w.T + b
        pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=1)
        loss = (torch.logsumexp(logits, dim=1) - pos).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return MLCHead(w.detach().numpy(), b.detach().numpy())
