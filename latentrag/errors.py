"""The exception hierarchy. Every message says what was wrong, the value received, and how to fix it."""

from __future__ import annotations


class LatentRagError(Exception):
    """Base class of every error raised by latentrag."""


class InvalidInputError(LatentRagError, ValueError):
    """An argument has the wrong type or value (also a ``ValueError``)."""


class EncoderMismatchError(LatentRagError, ValueError):
    """A store or model was built for another encoder (name or dimension) than the one given."""


class StoreError(LatentRagError):
    """A store operation failed: a missing or duplicate id, an empty store, a corrupt save."""


class DuplicateIdError(StoreError, ValueError):
    """``add`` received an id that the store already holds (use ``upsert`` to replace it)."""


class StoreCorruptError(StoreError):
    """A saved store failed its manifest or checksum verification."""


class ModelLoadError(LatentRagError):
    """A model path or name could not be loaded as the expected kind of model."""


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` >= 1, else raise :class:`InvalidInputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive integer, got {value!r}."
        raise InvalidInputError(msg)
    return value


def check_query(query: object) -> str:
    """Return ``query`` if it is a non-blank ``str``, else raise :class:`InvalidInputError`."""
    if not isinstance(query, str):
        msg = f"query must be a str, got {type(query).__name__} ({query!r:.80}); pass the question text."
        raise InvalidInputError(msg)
    if not query.strip():
        msg = f"query must be a non-empty string, got {query!r}; pass the question text."
        raise InvalidInputError(msg)
    return query
