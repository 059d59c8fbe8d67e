"""The store protocol every backend implements (faiss here; pgvector, Milvus and framework stores later).

Retrievers and compressors depend on this protocol only, never on a concrete backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from latentrag.encoders import Encoder
from latentrag.errors import EncoderMismatchError, InvalidInputError, StoreError
from latentrag.types import Hit

#: Metadata filter: every key must equal the given value (a list or tuple value means "any of").
Filter = Mapping[str, Any]


@runtime_checkable
class Store(Protocol):
    """Vectors plus documents, by id. Search is batched: ``queries`` has shape (n_queries, dim)."""

    encoder: Encoder

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(
        self, texts: Sequence[str], *, ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None, vectors: np.ndarray | None = None,
    ) -> list[str]: ...

    def upsert(
        self, texts: Sequence[str], *, ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None, vectors: np.ndarray | None = None,
    ) -> list[str]: ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, *, filter: Filter | None = None, with_vectors: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row, best first. ``with_vectors`` attaches each hit's stored vector."""
        ...

    def vectors(self, ids: Sequence[str]) -> np.ndarray: ...

    def get(self, ids: Sequence[str]) -> list[Hit]: ...

    def close(self) -> None: ...


def matches(metadata: Mapping[str, Any], filter: Filter | None) -> bool:
    """True when ``metadata`` satisfies every condition of ``filter``."""
    if not filter:
        return True
    for key, want in filter.items():
        have = metadata.get(key)
        if isinstance(want, (list, tuple, set, frozenset)):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def store_is_empty(store: Any) -> bool:
    """True when ``store`` holds no documents, asked cheaply: a backend's own ``is_empty()`` when it has
    one (a database answers ``EXISTS`` faster than ``count(*)``), else ``len()``. A store that cannot
    count (some framework stores) is taken to be non-empty."""
    probe = getattr(store, "is_empty", None)
    if callable(probe):
        return bool(probe())
    try:
        return len(store) == 0
    except StoreError:
        return False


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Validate a query matrix and return it as C-contiguous float32 of shape (n, dim)."""
    arr = np.asarray(queries)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        msg = f"query vectors must have shape (n, {dim}), got {arr.shape}; encode with the store's encoder."
        raise InvalidInputError(msg)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_vectors(vectors: np.ndarray, n_texts: int, dim: int) -> np.ndarray:
    """Validate caller-given vectors: shape (n_texts, dim), returned as float32 (empty when there are no texts)."""
    if n_texts == 0:
        return np.zeros((0, dim), dtype=np.float32)
    vecs = check_queries(vectors, dim)
    if len(vecs) != n_texts:
        msg = f"vectors has {len(vecs)} rows but texts has {n_texts}; give one vector per text."
        raise InvalidInputError(msg)
    return vecs


def vectors_for(encoder: Encoder, texts: list[str], vectors: np.ndarray | None) -> np.ndarray:
    """The vectors to store for ``texts``: the caller's (validated), else the encoder's."""
    if vectors is None:
        return encoder.encode(texts) if texts else np.zeros((0, int(encoder.dim)), dtype=np.float32)
    return check_vectors(vectors, len(texts), int(encoder.dim))


def check_upsert_args(
    texts: Sequence[str], ids: Sequence[str] | None, metadatas: Sequence[Mapping[str, Any]] | None
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """:func:`check_texts_ids` for ``upsert``, where ids are required."""
    if ids is None:
        msg = "upsert() needs ids=[...] to know which documents to replace."
        raise InvalidInputError(msg)
    texts, id_list, metas = check_texts_ids(texts, ids, metadatas)
    assert id_list is not None
    return texts, id_list, metas


def check_encoder(stored_name: str, stored_dim: int, encoder: Encoder, where: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` has the recorded name and dim."""
    if encoder.name != stored_name or int(encoder.dim) != int(stored_dim):
        msg = (
            f"{where} was built with encoder {stored_name!r} (dim {stored_dim}) but the encoder given is "
            f"{encoder.name!r} (dim {encoder.dim}); pass encoder=None to use the recorded one, or rebuild "
            f"the index with `latentrag index --rebuild`."
        )
        raise EncoderMismatchError(msg)


def check_texts_ids(
    texts: Sequence[str], ids: Sequence[str] | None, metadatas: Sequence[Mapping[str, Any]] | None
) -> tuple[list[str], list[str] | None, list[dict[str, Any]]]:
    """Validate parallel ``texts``/``ids``/``metadatas`` lists; ids must be unique strings."""
    if isinstance(texts, str):
        msg = "texts must be a list of strings, got a single str; wrap it in a list."
        raise InvalidInputError(msg)
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            msg = f"texts[{i}] must be a str, got {type(t).__name__}."
            raise InvalidInputError(msg)
    id_list = None
    if ids is not None:
        id_list = [str(i) for i in ids]
        if len(id_list) != len(texts):
            msg = f"ids has {len(id_list)} entries but texts has {len(texts)}; give one id per text."
            raise InvalidInputError(msg)
        seen: set[str] = set()
        dupes = [i for i in id_list if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dupes:
            msg = f"ids must be unique within one call, got duplicates {sorted(set(dupes))[:5]}."
            raise InvalidInputError(msg)
    metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in texts]
    if len(metas) != len(texts):
        msg = f"metadatas has {len(metas)} entries but texts has {len(texts)}; give one dict per text."
        raise InvalidInputError(msg)
    return texts, id_list, metas
