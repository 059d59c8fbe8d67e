"""Checks at the door, shared by every public entry point: each raises
:class:`~latentrag.errors.InvalidInputError` saying what was wrong, the value received, and how to fix it.

What every store accepts (one rule for every backend, so a value accepted by ``add`` can always be saved):

- **texts and ids**: ``str`` without surrogate code points (they cannot be written as UTF-8) or NUL
  characters (PostgreSQL rejects them); ids are non-empty, at most 512 UTF-8 bytes, and never coerced
  (``None``, ``b"x"`` or ``7`` are rejected, not turned into ``"None"``).
- **metadata**: a dict with ``str`` keys whose values are JSON values: ``str``, ``int`` (64-bit), finite
  ``float``, ``bool``, ``None``, ``list`` and ``dict`` of them, at most 32 levels deep. A ``tuple``, ``set``
  or ``bytes`` would not come back as it went in from a save or a database, so it is rejected.
- **vectors**: finite, non-zero, one per text, shape ``(n, dim)``; stored and queried at unit length
  (every backend normalises them, so a vector scaled by 100 scores as the vector itself).
- **filters**: a dict of metadata key -> scalar (``str``, ``int``, finite ``float``, ``bool``, ``None``) or a
  list of scalars meaning "any of". Matching is by JSON type and value: ``True`` matches only ``True``,
  never ``1``; ``1`` matches ``1`` and ``1.0``; ``None`` matches a missing key or a null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from latentrag.errors import InvalidInputError

MAX_ID_BYTES = 512
MAX_METADATA_DEPTH = 32
#: The largest ``k`` any search accepts (databases take it as a 64-bit integer; nobody needs more).
MAX_K = 1 << 31
_INT64 = (-(1 << 63), (1 << 63) - 1)
_SCALARS = (str, int, float, bool, type(None))


def short(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_str(name: str, value: Any) -> str:
    """``value`` if it is a ``str`` that can be stored anywhere (UTF-8, no NUL), else a typed error."""
    if not isinstance(value, str):
        msg = f"{name} must be a str, got {type(value).__name__} ({short(value)})."
        raise InvalidInputError(msg)
    if "\x00" in value:
        msg = f"{name} contains a NUL character ({short(value)}); remove '\\x00' from it."
        raise InvalidInputError(msg)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = (
            f"{name} contains a lone surrogate {value[exc.start]!r} at position {exc.start} ({short(value)}), "
            f"which cannot be stored as UTF-8; decode your bytes with errors='replace'."
        )
        raise InvalidInputError(msg) from None
    return value


def check_str_list(name: str, value: Any, *, allow_empty: bool = True, storable: bool = True) -> list[str]:
    """``value`` as a list of strings. A bare ``str`` is rejected (it would be split into characters).
    ``storable`` also rejects NUL characters and lone surrogates (see :func:`check_str`)."""
    if isinstance(value, (str, bytes)):
        kind = type(value).__name__
        msg = f"{name} must be a list of strings, got a single {kind} {short(value)}; wrap it in a list."
        raise InvalidInputError(msg)
    if isinstance(value, Mapping) or not _is_iterable(value):
        msg = f"{name} must be a list of strings, got {type(value).__name__} ({short(value)})."
        raise InvalidInputError(msg)
    items = list(value)
    for i, item in enumerate(items):
        if storable:
            check_str(f"{name}[{i}]", item)
        elif not isinstance(item, str):
            msg = f"{name}[{i}] must be a str, got {type(item).__name__} ({short(item)})."
            raise InvalidInputError(msg)
    if not allow_empty and not items:
        msg = f"{name} must not be empty; pass at least one string."
        raise InvalidInputError(msg)
    return items


def _is_iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def check_id(name: str, value: Any) -> str:
    """A document id: a non-empty ``str`` of at most 512 UTF-8 bytes, never coerced from another type."""
    if not isinstance(value, str):
        msg = f"{name} must be a str, got {type(value).__name__} ({short(value)}); convert ids with str() yourself."
        raise InvalidInputError(msg)
    check_str(name, value)
    if not value:
        msg = f"{name} must be a non-empty string, got ''."
        raise InvalidInputError(msg)
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        msg = f"{name} is {len(value.encode('utf-8'))} bytes ({short(value)}); ids are at most {MAX_ID_BYTES} bytes."
        raise InvalidInputError(msg)
    return value


def check_ids(value: Any, name: str = "ids") -> list[str]:
    """A list of ids (see :func:`check_id`); a bare ``str`` is rejected."""
    if isinstance(value, (str, bytes)):
        msg = f"{name} must be a list of ids, got a single {type(value).__name__} {short(value)}; wrap it in a list."
        raise InvalidInputError(msg)
    if isinstance(value, Mapping) or not _is_iterable(value):
        msg = f"{name} must be a list of ids, got {type(value).__name__} ({short(value)})."
        raise InvalidInputError(msg)
    return [check_id(f"{name}[{i}]", v) for i, v in enumerate(value)]


def check_unique(ids: list[str], name: str = "ids") -> list[str]:
    seen: set[str] = set()
    dupes = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if dupes:
        msg = f"{name} must be unique within one call, got duplicates {dupes[:5]}."
        raise InvalidInputError(msg)
    return ids


def check_json_value(where: str, value: Any, depth: int = 0) -> Any:
    """``value`` if it round-trips through JSON unchanged (see the module docs), else a typed error."""
    if depth > MAX_METADATA_DEPTH:
        msg = f"{where} is nested more than {MAX_METADATA_DEPTH} levels deep (or refers to itself); flatten it."
        raise InvalidInputError(msg)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            msg = f"{where} = {value} does not fit a 64-bit integer; store it as a str."
            raise InvalidInputError(msg)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{where} = {value!r} is not a finite number (JSON has no NaN or infinity); use None or a str."
            raise InvalidInputError(msg)
        return value
    if isinstance(value, str):
        return check_str(where, value)
    if isinstance(value, list):
        return [check_json_value(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                msg = f"{where} has a key {short(k)} of type {type(k).__name__}; metadata keys must be str."
                raise InvalidInputError(msg)
            check_str(f"{where} key", k)
            out[k] = check_json_value(f"{where}[{k!r}]", v, depth + 1)
        return out
    hint = "use a list" if isinstance(value, (tuple, set, frozenset)) else "convert it to a str, number or list"
    msg = (
        f"{where} is a {type(value).__name__} ({short(value)}), which does not survive a save unchanged; {hint}."
    )
    raise InvalidInputError(msg)


def check_metadata(where: str, value: Any) -> dict[str, Any]:
    """One metadata dict (a copy), checked by :func:`check_json_value`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = f"{where} must be a dict, got {type(value).__name__} ({short(value)})."
        raise InvalidInputError(msg)
    return check_json_value(where, value)


def check_filter(filter: Any) -> dict[str, Any] | None:
    """A metadata filter (see the module docs), as a dict of key -> scalar or list of scalars."""
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        msg = f"filter must be a dict of metadata key -> value, got {type(filter).__name__} ({short(filter)})."
        raise InvalidInputError(msg)
    out: dict[str, Any] = {}
    for key, want in filter.items():
        if not isinstance(key, str) or not key:
            msg = f"filter keys must be non-empty metadata field names (str), got {short(key)}."
            raise InvalidInputError(msg)
        check_str("filter key", key)
        many = isinstance(want, (list, tuple, set, frozenset))
        values = list(want) if many else [want]
        for v in values:
            if not isinstance(v, _SCALARS):
                msg = (
                    f"filter value for {key!r} must be a str, number, bool or None (or a list of them), "
                    f"got {type(v).__name__} ({short(v)})."
                )
                raise InvalidInputError(msg)
            check_json_value(f"filter[{key!r}]", v)
        out[key] = values if many else want
    return out


def json_equal(have: Any, want: Any) -> bool:
    """Equality by JSON type and value: a bool equals only a bool; ints and floats compare by value."""
    if isinstance(want, bool) or isinstance(have, bool):
        return isinstance(want, bool) and isinstance(have, bool) and have == want
    if isinstance(want, (int, float)):
        return isinstance(have, (int, float)) and have == want
    return type(have) is type(want) and have == want


def check_k(k: Any, name: str = "k") -> int:
    """A result count: an int in [1, 2**31]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        msg = f"{name} must be an integer from 1 to {MAX_K}, got {short(k)}."
        raise InvalidInputError(msg)
    return int(k)


def unit_rows(vectors: Any, dim: int, *, name: str = "vectors", rows: int | None = None) -> np.ndarray:
    """Vectors as C-contiguous float32 ``(n, dim)`` at unit length; NaN, infinity and zero rows are rejected."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        msg = f"{name} must be a numeric array of shape (n, {dim}), got {type(vectors).__name__}."
        raise InvalidInputError(msg) from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        msg = f"{name} must have shape (n, {dim}), got {arr.shape}; encode with the store's encoder."
        raise InvalidInputError(msg)
    if rows is not None and len(arr) != rows:
        msg = f"{name} has {len(arr)} rows but there are {rows} texts; give one vector per text."
        raise InvalidInputError(msg)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        msg = f"{name}[{bad}] holds NaN or infinity; every vector must be finite."
        raise InvalidInputError(msg)
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        msg = f"{name}[{bad}] is all zeros, which has no direction; give a non-zero vector."
        raise InvalidInputError(msg)
    if np.abs(norms - 1.0).max(initial=0.0) > 1e-4:
        arr = arr / norms[:, None].astype(np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32)
