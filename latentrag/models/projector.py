"""The xRAG modality bridge: a small MLP from a retrieval embedding to ``k`` soft tokens of a frozen LM.

``Linear(d_r -> H) -> GELU -> Linear(H -> k*H)``, reshaped to ``k`` rows of the LM's input-embedding size
``H`` (xRAG's ``mlp2x_gelu`` with ``k = 1``; ``k > 1`` is this package's option).

With ``chunks = c > 0`` the ``k = 1 + c`` soft tokens come from ``1 + c`` embeddings instead of one: the
passage's retrieval embedding (the store's vector, the mean of the encoder's token states) and the means of
``c`` contiguous runs of those token states (``Encoder.encode_chunks``: the same encoder pass), each through
one shared ``Linear(d_r -> H) -> GELU -> Linear(H -> H)`` plus a learned offset per position. One pooled
384-d vector keeps a passage's topic but few of its names, dates and numbers; a chunk keeps much more of
its own couple of dozen word pieces. Saved as
``projector.safetensors`` plus ``config.json`` recording the encoder (name, dim) and the LM (name, hidden
size) it was trained for; :meth:`Projector.check_pair` refuses any other pair.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentrag.errors import EncoderMismatchError, InvalidInputError, ModelLoadError, check_positive_int

#: The projector trained for (shipped MiniLM, shipped SmolLM2), inside the package (the default, 4 tokens).
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "xrag"
FORMAT_VERSION = 1


def shipped_tokens_per_doc() -> int:
    """Soft tokens per passage of the default shipped projector (read from its config.json)."""
    try:
        return int(json.loads((SHIPPED_DIR / "config.json").read_text())["tokens_per_doc"])
    except (OSError, ValueError, KeyError) as exc:
        msg = (f"cannot read the shipped projector's config in {SHIPPED_DIR} ({exc}); reinstall latentrag or pass "
               "tokens_per_doc=N (XRAGCompressor) to match your reader.")
        raise ModelLoadError(msg) from exc


def shipped_dir(tokens_per_doc: int | None = None) -> Path:
    """The shipped projector folder for ``tokens_per_doc`` (``None``: the default one). Other token counts
    ship as ``weights/xrag_k{N}``; asking for one that is not shipped is an error naming those that are."""
    if tokens_per_doc is None:
        return SHIPPED_DIR
    try:
        default_k: int | None = shipped_tokens_per_doc()
    except ModelLoadError:
        default_k = None
    if tokens_per_doc == default_k:
        return SHIPPED_DIR
    folder = SHIPPED_DIR.parent / f"xrag_k{tokens_per_doc}"
    if (folder / "config.json").is_file():
        return folder
    found = (re.fullmatch(r"xrag_k(\d+)", p.name) for p in SHIPPED_DIR.parent.glob("xrag_k*")
             if (p / "config.json").is_file())
    shipped = sorted({int(m.group(1)) for m in found if m} | ({default_k} if default_k is not None else set()))
    msg = (
        f"no shipped projector makes tokens_per_doc={tokens_per_doc} soft tokens (shipped: {shipped}); pick one of "
        f"those or train one with `latentrag train xrag --tokens-per-doc {tokens_per_doc} --out DIR` and pass "
        "projector=DIR."
    )
    raise ModelLoadError(msg)


@dataclass
class ProjectorConfig:
    """What a projector maps from and to. ``extra`` holds free training notes (data, steps, seed)."""

    encoder_name: str
    encoder_dim: int
    lm_name: str
    lm_hidden_size: int
    tokens_per_doc: int = 1
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    #: runs of the passage's token states embedded beside it (0: every soft token comes from the passage embedding)
    chunks: int = 0

    def __post_init__(self) -> None:
        check_positive_int("encoder_dim", self.encoder_dim)
        check_positive_int("lm_hidden_size", self.lm_hidden_size)
        check_positive_int("tokens_per_doc", self.tokens_per_doc)
        if self.chunks < 0 or (self.chunks and self.tokens_per_doc != 1 + self.chunks):
            msg = (f"chunks must be 0 or tokens_per_doc - 1, got chunks={self.chunks} with "
                   f"tokens_per_doc={self.tokens_per_doc}.")
            raise InvalidInputError(msg)


class Projector(nn.Module):
    """Map embeddings of shape (n, encoder_dim) to soft tokens of shape (n, tokens_per_doc, lm_hidden_size)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        h = config.lm_hidden_size
        self.fc1 = nn.Linear(config.encoder_dim, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, h if config.chunks else config.tokens_per_doc * h)
        if config.chunks:
            self.position = nn.Parameter(torch.zeros(config.tokens_per_doc, h))

    @property
    def tokens_per_doc(self) -> int:
        return self.config.tokens_per_doc

    @property
    def chunks(self) -> int:
        return self.config.chunks

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one passage's input: (encoder dim,), or (1 + chunks, encoder dim) with chunks."""
        d = self.config.encoder_dim
        return (1 + self.chunks, d) if self.chunks else (d,)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if tuple(embeddings.shape[1:]) != self.input_shape or embeddings.ndim != 1 + len(self.input_shape):
            shape = ", ".join(str(n) for n in ("n", *self.input_shape))
            msg = (
                f"embeddings must have shape ({shape}), got {tuple(embeddings.shape)}; embed the passages "
                f"with {self.config.encoder_name}"
                + (" (the passage, then its token chunks: encode_chunks())." if self.chunks else ".")
            )
            raise InvalidInputError(msg)
        out = self.fc2(self.act(self.fc1(embeddings)))
        if self.chunks:
            return out + self.position
        return out.view(embeddings.shape[0], self.config.tokens_per_doc, self.config.lm_hidden_size)

    def check_pair(self, encoder_name: str, encoder_dim: int, lm_name: str, lm_hidden_size: int) -> None:
        """Raise :class:`EncoderMismatchError` unless this projector was trained for this encoder and LM."""
        c = self.config
        pairs = (("encoder", "dim", (c.encoder_name, c.encoder_dim), (encoder_name, int(encoder_dim))),
                 ("LM", "hidden size", (c.lm_name, c.lm_hidden_size), (lm_name, int(lm_hidden_size))))
        for kind, size, (want, want_n), (got, got_n) in pairs:
            if (got, got_n) != (want, want_n):
                msg = (
                    f"the projector was trained for {kind} {want} ({size} {want_n}) but the {kind} is {got} "
                    f"({size} {got_n}); use the matching {kind} or train a projector with `latentrag train xrag`."
                )
                raise EncoderMismatchError(msg)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``projector.safetensors`` and ``config.json`` into ``folder`` (created if needed)."""
        from safetensors.torch import save_file

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / "projector.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str] | None = None) -> Projector:
        """Load a saved projector (``None``: the shipped one), frozen and in eval mode."""
        from safetensors.torch import load_file

        path = Path(folder) if folder is not None else SHIPPED_DIR
        cfg_path, weights = path / "config.json", path / "projector.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            msg = (
                f"no projector at {str(path)!r}: expected config.json and projector.safetensors there; "
                "train one with `latentrag train xrag --out FOLDER`."
            )
            raise ModelLoadError(msg)
        try:
            raw = json.loads(cfg_path.read_text())
            config = ProjectorConfig(**raw)
        except (ValueError, TypeError) as exc:
            msg = f"{cfg_path} is not a projector config ({exc}); re-save it with Projector.save()."
            raise ModelLoadError(msg) from exc
        proj = cls(config)
        proj.load_state_dict(load_file(str(weights)))
        proj.eval()
        for p in proj.parameters():
            p.requires_grad_(False)
        return proj
