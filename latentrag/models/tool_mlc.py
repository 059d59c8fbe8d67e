"""``MLCHead``: multi-label classification over tools (one logit per tool, ``w_j . q + b_j``) from the
request embedding, as in Tool2Vec's MLC, on frozen embeddings. Numpy inference; weights are plain arrays.

In the retriever the head is a *residual* on the first stage (:mod:`latentrag.retrievers.tool_fit` fits
it jointly with the :class:`~latentrag.models.tool_refiner.ToolRefiner`, starting from zero), so a tool
it knows little about ranks as before. :func:`train_logistic_head` fits the plain stand-alone head, the
recipe the benchmark compares against (a logistic-regression head over example and description
embeddings).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MLCHead:
    """Logits ``(b, n_tools)`` for request vectors ``(b, dim)``.

    >>> h = MLCHead(np.eye(2, dtype=np.float32), np.zeros(2, np.float32))
    >>> h.logits(np.array([[0.0, 1.0]], np.float32)).tolist()
    [[0.0, 1.0]]
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)  # (n_tools, dim)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)  # (n_tools,)

    def __len__(self) -> int:
        return len(self.bias)

    def logits(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float32) @ self.weight.T + self.bias

    def rows(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Logits of the tool ``rows`` only, for one request vector ``q`` (dim,)."""
        return self.weight[rows] @ q + self.bias[rows]

    def take(self, src: np.ndarray) -> MLCHead:
        """A head whose row ``i`` is row ``src[i]`` of this one, or zeros where ``src[i] < 0``."""
        w = np.zeros((len(src), self.weight.shape[1]), np.float32)
        b = np.zeros(len(src), np.float32)
        ok = src >= 0
        w[ok] = self.weight[src[ok]]
        b[ok] = self.bias[src[ok]]
        return MLCHead(w, b)


def train_logistic_head(index: Any, *, descriptions: bool = True, epochs: int = 200, lr: float = 0.05,
                        weight_decay: float = 1e-4, seed: int = 0) -> MLCHead:
    """The stand-alone head: multinomial logistic regression from the request embedding to its tools,
    trained on ``index``'s usage examples and (``descriptions=True``) each tool's description embedding as
    one more example of that tool, so every tool has a row. Softmax cross-entropy with the example's tools
    as positives (log-sum-exp over positives), full batch, AdamW from zero. Seconds on a CPU."""
    import torch

    torch.manual_seed(seed)
    n = len(index)
    xs = [np.asarray(index.examples, dtype=np.float32)]
    labels = [list(r) for r in index.example_tools]
    if descriptions:
        xs.append(np.asarray(index.desc, dtype=np.float32))
        labels.extend([i] for i in range(n))
    x = torch.from_numpy(np.concatenate(xs))
    mask = torch.zeros(len(x), n, dtype=torch.bool)
    for i, rows in enumerate(labels):
        mask[i, rows] = True
    w = torch.nn.Parameter(torch.zeros(n, x.shape[1]))
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
