"""The TreeHop hop network: the next query from a query embedding and a retrieved passage embedding.

``q_next = normalize(q - c + f(q, c))`` with ``f(q, c) = W_o g(q, c) + W_c c`` (METHODS.md §1.2), where
``g`` is TreeHop's element-wise (feature-axis) attention of the query over the passage followed by
pre-LayerNorm residual MLP blocks, and ``W_c`` is a linear skip that latentrag adds. ``W_c`` starts at
``2 I``, so an untrained network is the Rocchio-style expansion ``normalize(q + c)``: with a small
embedder (MiniLM) TreeHop's own starting point ``q - c`` ranks the next passage far worse than the
query alone (dev median rank 7,398 vs 354 on 2Wiki), and the gated ``g`` learns the ``+2c`` slowly.
Sized for the 384-d MiniLM default encoder. Weights are safetensors with a JSON config beside them
that records the encoder the network was trained for; loading it for another encoder raises
:class:`~latentrag.errors.EncoderMismatchError`.

The module holds no per-call state and :meth:`HopModel.next_queries` runs under
``torch.inference_mode()`` on an eval-mode module, so one instance serves concurrent callers.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from latentrag.encoders import DEFAULT_ENCODER_NAME
from latentrag.errors import EncoderMismatchError, InvalidInputError, ModelLoadError, check_positive_int

#: Folder of the shipped weights (trained by ``latentrag train multihop``; see its MODEL_CARD.md).
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "treehop"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ARCHITECTURE = "treehop"
FORMAT_VERSION = 2


class _ResidualBlock(nn.Module):
    """``x + ReLU(W LayerNorm(x) + b)`` (pre-norm residual)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.linear = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.linear(self.norm(x)))


class HopModel(nn.Module):
    """TreeHop update ``q_next = normalize(q - c + W_o g(q, c) + W_c c)``.

    Shapes: ``q`` and ``c`` are (batch, x_size), rows L2-normalised; the output is (batch, x_size),
    rows L2-normalised. ``g``: ``Q = W_Q q``, ``K = W_K c``, ``V = W_V c`` (each x_size -> g_size),
    ``a = softmax(Q * K / sqrt(g_size))`` over the feature axis, ``u = a * V``,
    ``m = MLP(u)`` (``n_mlp`` residual blocks), ``g = W_s m + u``.

    >>> m = HopModel(x_size=8, g_size=16, n_mlp=1)
    >>> q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    >>> tuple(m(q, q).shape)
    (3, 8)
    """

    def __init__(
        self,
        x_size: int = 384,
        g_size: int = 768,
        n_mlp: int = 2,
        dropout: float = 0.1,
        *,
        encoder_name: str = DEFAULT_ENCODER_NAME,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.x_size = check_positive_int("x_size", x_size)
        self.g_size = check_positive_int("g_size", g_size)
        self.n_mlp = check_positive_int("n_mlp", n_mlp)
        self.dropout_p = float(dropout)
        self.encoder_name = str(encoder_name)
        #: Free JSON-able facts stored in config.json (e.g. the calibrated stop threshold, training figures).
        self.extra: dict[str, Any] = dict(extra or {})
        self._np: dict[str, np.ndarray] | None = None
        self.w_q = nn.Linear(x_size, g_size)
        self.w_k = nn.Linear(x_size, g_size)
        self.w_v = nn.Linear(x_size, g_size)
        self.mlp = nn.Sequential(*[_ResidualBlock(g_size) for _ in range(n_mlp)])
        self.w_s = nn.Linear(g_size, g_size)
        self.w_o = nn.Linear(g_size, x_size, bias=False)
        self.w_c = nn.Linear(x_size, x_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.w_o.weight, std=0.02 / math.sqrt(g_size))
        with torch.no_grad():
            self.w_c.weight.copy_(2.0 * torch.eye(x_size))
        self.eval()

    # ------------------------------------------------------------------------------------------ math
    def update(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The learned update ``f(q, c) = W_o g(q, c) + W_c c``. Shape: (batch, x_size)."""
        qq, kk, vv = self.w_q(q), self.w_k(c), self.w_v(c)
        attn = torch.softmax(qq * kk / math.sqrt(self.g_size), dim=-1)
        u = attn * vv
        g = self.w_s(self.mlp(u)) + u
        return self.w_o(g) + self.w_c(c)

    def forward(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Next query, rows L2-normalised. Shape: (batch, x_size)."""
        h = q - c + self.update(q, c)
        return F.normalize(self.dropout(h), dim=-1)

    def next_queries(self, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Inference on numpy rows: (n, x_size) float32 each -> (n, x_size) float32, L2-normalised."""
        q = np.asarray(q, dtype=np.float32)
        c = np.asarray(c, dtype=np.float32)
        if q.ndim != 2 or q.shape != c.shape or q.shape[1] != self.x_size:
            msg = (f"next_queries() needs q and c of the same shape (n, {self.x_size}), got {q.shape} and "
                   f"{c.shape}; pass query and passage embeddings from the encoder the model was trained for.")
            raise InvalidInputError(msg)
        if len(q) == 0:
            return np.zeros((0, self.x_size), dtype=np.float32)
        if self.training:
            msg = "HopModel.next_queries() needs an eval-mode module; call model.eval() after training."
            raise InvalidInputError(msg)
        return self._numpy_forward(q, c)

    def train(self, mode: bool = True) -> HopModel:
        self._np = None  # weights may change while training: drop the inference copy
        return super().train(mode)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._np = None  # new weights: drop the inference copy (edit parameters in place only in train mode)
        return super().load_state_dict(*args, **kwargs)

    def _numpy_weights(self) -> dict[str, np.ndarray]:
        if getattr(self, "_np", None) is None:
            with torch.no_grad():
                self._np = {k: v.detach().numpy().astype(np.float32).copy() for k, v in self.state_dict().items()}
        assert self._np is not None
        return self._np

    def _numpy_forward(self, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        """The eval-mode forward in numpy: same math as :meth:`forward`, but no torch thread pool.

        Right after query encoding and a BLAS search, waking torch's intra-op threads for a
        (5 x 384) batch cost ~10 ms on 2 cores; these few small matrix products take ~0.3 ms.
        """
        w = self._numpy_weights()

        def linear(x: np.ndarray, name: str) -> np.ndarray:
            y = x @ w[f"{name}.weight"].T
            bias = w.get(f"{name}.bias")
            return y + bias if bias is not None else y

        qq, kk, vv = linear(q, "w_q"), linear(c, "w_k"), linear(c, "w_v")
        logits = qq * kk / math.sqrt(self.g_size)
        logits -= logits.max(axis=-1, keepdims=True)
        attn = np.exp(logits)
        attn /= attn.sum(axis=-1, keepdims=True)
        u = attn * vv
        m = u
        for i in range(self.n_mlp):
            mu = m.mean(axis=-1, keepdims=True)
            var = ((m - mu) ** 2).mean(axis=-1, keepdims=True)
            normed = (m - mu) / np.sqrt(var + 1e-5) * w[f"mlp.{i}.norm.weight"] + w[f"mlp.{i}.norm.bias"]
            m = m + np.maximum(linear(normed, f"mlp.{i}.linear"), 0.0)
        g = linear(m, "w_s") + u
        h = q - c + linear(g, "w_o") + linear(c, "w_c")
        return (h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------ io
    def config(self) -> dict[str, Any]:
        return {
            "architecture": ARCHITECTURE,
            "format_version": FORMAT_VERSION,
            "x_size": self.x_size,
            "g_size": self.g_size,
            "n_mlp": self.n_mlp,
            "dropout": self.dropout_p,
            "encoder_name": self.encoder_name,
            "encoder_dim": self.x_size,
            **({"extra": self.extra} if self.extra else {}),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` (fp32) and ``config.json`` into ``directory``; returns it."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"architecture": ARCHITECTURE})
        (out / CONFIG_NAME).write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        encoder_name: str | None = None,
        encoder_dim: int | None = None,
    ) -> HopModel:
        """Load from a folder (or its ``model.safetensors``); ``None`` loads the shipped weights.

        ``encoder_name``/``encoder_dim``, when given, must match the encoder recorded in the config,
        else :class:`~latentrag.errors.EncoderMismatchError` is raised.
        """
        folder = SHIPPED_DIR if path is None else Path(path)
        if folder.is_file():
            folder = folder.parent
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            msg = (f"no hop model at {str(folder)!r}: expected {CONFIG_NAME} and {WEIGHTS_NAME} there; pass the "
                   "folder written by HopModel.save() or `latentrag train multihop --out DIR`.")
            raise ModelLoadError(msg)
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            msg = f"could not read {str(cfg_path)!r} as JSON: {exc}."
            raise ModelLoadError(msg) from exc
        if cfg.get("format_version") != FORMAT_VERSION:
            msg = (f"{str(cfg_path)!r} has format version {cfg.get('format_version')!r}; this latentrag reads "
                   f"version {FORMAT_VERSION}. Retrain it with `latentrag train multihop --out DIR`.")
            raise ModelLoadError(msg)
        if cfg.get("architecture") != ARCHITECTURE:
            msg = f"{str(cfg_path)!r} describes architecture {cfg.get('architecture')!r}, expected {ARCHITECTURE!r}."
            raise ModelLoadError(msg)
        check_model_encoder(cfg, encoder_name, encoder_dim, where=str(folder))
        model = cls(
            x_size=int(cfg["x_size"]), g_size=int(cfg["g_size"]), n_mlp=int(cfg["n_mlp"]),
            dropout=float(cfg.get("dropout", 0.0)), encoder_name=str(cfg["encoder_name"]), extra=cfg.get("extra"),
        )
        from safetensors.torch import load_file

        try:
            model.load_state_dict(load_file(str(w_path)))
        except RuntimeError as exc:
            msg = f"weights in {str(w_path)!r} do not fit the config in {str(cfg_path)!r}: {exc}"
            raise ModelLoadError(msg) from exc
        return model.eval()


def check_model_encoder(cfg: dict[str, Any], encoder_name: str | None, encoder_dim: int | None, *, where: str) -> None:
    """Raise :class:`EncoderMismatchError` if the recorded encoder differs from the one given."""
    name, dim = cfg.get("encoder_name"), int(cfg.get("encoder_dim", cfg.get("x_size", 0)))
    if (encoder_name is not None and encoder_name != name) or (encoder_dim is not None and int(encoder_dim) != dim):
        msg = (
            f"the hop model at {where} was trained for encoder {name!r} (dim {dim}) but the encoder given is "
            f"{encoder_name!r} (dim {encoder_dim}); use a store built with {name!r}, or train a hop model for "
            f"this encoder with `latentrag train multihop --out DIR` and pass model=DIR."
        )
        raise EncoderMismatchError(msg)


@lru_cache(maxsize=1)
def _shipped() -> HopModel:
    return HopModel.load(None)


def shipped_model(encoder_name: str | None = None, encoder_dim: int | None = None) -> HopModel:
    """The shipped TreeHop weights (loaded once per process), checked against the given encoder."""
    model = _shipped()
    check_model_encoder(model.config(), encoder_name, encoder_dim, where=str(SHIPPED_DIR))
    return model
