"""One helper for the lazy exports of the package modules: a name maps to ``"module:attribute"`` and is
imported on first access, so importing a package never imports an optional dependency."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(module: str, table: Mapping[str, str], public: Sequence[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving the names of ``table``; other names raise ``AttributeError``
    listing ``public``."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            msg = f"module {module!r} has no attribute {name!r}; valid names are {sorted(public)}."
            raise AttributeError(msg)
        mod, _, attr = target.partition(":")
        return getattr(importlib.import_module(mod), attr)

    return __getattr__
