"""Where latentrag keeps what it caches on disk: one folder for every cache (demo store, fp32 LM, training
embeddings)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: ``$LATENTRAG_CACHE``, else ``$XDG_CACHE_HOME/latentrag``, else
    ``~/.cache/latentrag``. Nothing is created here; each cache makes its own subfolder when it writes."""
    env = os.environ.get("LATENTRAG_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "latentrag"
