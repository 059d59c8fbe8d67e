"""``ToolRefiner``: the second stage of tool retrieval, a small network that re-scores the first
stage's candidate tools for a query from their similarity features.

Input per candidate (shape (n_candidates, 6)): the four :data:`~latentrag.retrievers.tool_index.FEATURES`
(description, Tool2Vec mean, best example, top-m examples), the first-stage blend score and
``log1p(number of usage examples)`` so it learns how far to trust the example features of each tool.
Output: one score per candidate. Weights are safetensors with the JSON config kept in the tool index
manifest. The module is stateless at inference (eval mode, ``torch.inference_mode``), so one instance
serves concurrent callers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

N_INPUTS = 6


class ToolRefiner(nn.Module):
    """MLP ``6 -> hidden -> hidden -> 1`` (ReLU) over candidate features plus a linear skip of the blend score.

    >>> r = ToolRefiner(hidden=8)
    >>> tuple(r(torch.zeros(5, 6)).shape)
    (5,)
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self._np: dict[str, np.ndarray] | None = None
        self.mlp = nn.Sequential(nn.Linear(N_INPUTS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.skip = nn.Linear(1, 1)
        with torch.no_grad():  # start as the first stage: score = blend score
            self.skip.weight.fill_(1.0)
            self.skip.bias.zero_()
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)
            last.weight.mul_(0.01)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of candidates. Shape: (..., 6) -> (...)."""
        return (self.mlp(x) + self.skip(x[..., 4:5])).squeeze(-1)

    @staticmethod
    def inputs(feats: np.ndarray, blend: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Stack the refiner inputs: ``feats`` (n, 4), ``blend`` (n,), ``counts`` (n,) -> (n, 6) float32."""
        return np.concatenate([feats, blend[:, None], np.log1p(counts.astype(np.float32))[:, None]], axis=1).astype(
            np.float32)

    def rescore(self, q: np.ndarray, rows: np.ndarray, feats: np.ndarray, scores: np.ndarray, index: Any) -> np.ndarray:
        """New scores for candidate ``rows`` of one query (the first-stage ``scores`` are an input)."""
        x = self.inputs(feats, scores, index.counts[rows])
        return self.numpy_forward(x)

    def train(self, mode: bool = True) -> ToolRefiner:
        self._np = None  # weights may change while training: drop the inference copy
        return super().train(mode)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._np = None  # new weights: drop the inference copy
        return super().load_state_dict(*args, **kwargs)

    def numpy_forward(self, x: np.ndarray) -> np.ndarray:
        """:meth:`forward` in numpy (eval mode): a few tiny matrix products, no torch thread pool to wake
        (which cost ~10 ms per query on 2 cores right after query encoding)."""
        if getattr(self, "_np", None) is None:
            self._np = {k: v.detach().numpy().copy() for k, v in self.state_dict().items()}
        w = self._np
        assert w is not None
        h = np.maximum(x @ w["mlp.0.weight"].T + w["mlp.0.bias"], 0.0)
        h = np.maximum(h @ w["mlp.2.weight"].T + w["mlp.2.bias"], 0.0)
        out = h @ w["mlp.4.weight"].T + w["mlp.4.bias"] + x[:, 4:5] * w["skip.weight"][0, 0] + w["skip.bias"]
        return out[:, 0].astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"architecture": "tool_refiner", "hidden": self.hidden, "inputs": N_INPUTS}

    def save(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write the weights as safetensors; returns the config to store beside them."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(path))
        return self.config()

    @classmethod
    def load(cls, path: str | os.PathLike[str], config: dict[str, Any]) -> ToolRefiner:
        from safetensors.torch import load_file

        model = cls(hidden=int(config["hidden"]))
        model.load_state_dict(load_file(str(path)))
        return model.eval()
