"""``MilvusStore``: the store protocol on Milvus, through ``pymilvus``'s ``MilvusClient``.

``uri`` is a Milvus server (``http://host:19530``, a Zilliz Cloud endpoint with ``token=...``) or a
local file (``./rag/milvus.db``), which ``milvus-lite`` serves from a gRPC server on loopback. The
local engine speaks the real Milvus API but is a Python rewrite of Milvus's engine: use it to develop
and test, and a Milvus cluster for production.

One collection per store, with fields ``id`` (VARCHAR primary key), ``text`` (VARCHAR), ``metadata``
(JSON) and ``embedding`` (FLOAT_VECTOR, COSINE metric). Milvus keeps no free-form notes with a
collection that survive a restart, so a side collection (``latentrag_collections``) records each
store collection's encoder name, dimension and index type; opening a collection with another
encoder raises :class:`~latentrag.errors.EncoderMismatchError`, as with ``FaissStore``.

Milvus does not restore the loaded state of a collection after a server restart, so opening an
existing collection always loads it first. Writes are visible to searches at once (the collection
uses Strong consistency); call :meth:`MilvusStore.flush` before timing searches, so that they run
on sealed segments.

Tokens and passwords are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentrag._optional import require
from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import DuplicateIdError, InvalidInputError, StoreError, check_positive_int
from latentrag.stores.base import Filter, check_encoder, check_queries, check_texts_ids, check_upsert_args, vectors_for
from latentrag.types import Hit

logger = logging.getLogger(__name__)

#: The side collection that records each store collection's encoder, dimension and index.
REGISTRY_COLLECTION = "latentrag_collections"
INDEX_TYPES = ("auto", "HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX")
#: Milvus's cap on a VARCHAR field, in bytes.
MAX_TEXT_BYTES = 65_535
MAX_ID_BYTES = 512
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\- .]{1,128}$")
_URI_SECRET = re.compile(r"(://[^:/?#@]*:)[^@/?#]*@")
#: Milvus answers at most 16,384 results per search call (``topk``).
_MAX_K = 16_384
_BATCH = 1_000


def mask_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***``.

    >>> mask_uri("http://root:Milvus@db.example:19530")
    'http://root:***@db.example:19530'
    """
    return _URI_SECRET.sub(r"\1***@", uri)


def is_local_uri(uri: str) -> bool:
    """True for a milvus-lite file path (no ``scheme://``)."""
    return "://" not in uri


class MilvusStore:
    """Vectors, texts and JSON metadata by id in a Milvus collection.

    ``index="auto"`` builds HNSW (M=16, efConstruction=128, searched with ``ef = max(ef_search, k)``)
    on a server and FLAT (exact) on a milvus-lite file, whose engine has no graph index worth the
    build time at that scale. ``encoder=None`` uses the encoder recorded for an existing collection,
    or the shipped MiniLM for a new one.

    Example::

        store = MilvusStore.from_texts(texts, ids=ids, uri="./rag/milvus.db", collection="docs")
        hits = store.search(store.encoder.encode(["who wrote it?"]), k=10)
    """

    def __init__(
        self,
        uri: str,
        collection: str = "latentrag_docs",
        encoder: Encoder | str | None = None,
        *,
        token: str = "",
        db_name: str = "",
        index: str = "auto",
        hnsw_m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 200,
        create: bool = True,
        timeout: float | None = 30.0,
    ) -> None:
        if index not in INDEX_TYPES:
            msg = f"index must be one of {list(INDEX_TYPES)}, got {index!r}."
            raise InvalidInputError(msg)
        if not isinstance(collection, str) or not _NAME_RE.match(collection) or collection == REGISTRY_COLLECTION:
            msg = (
                f"collection must be a name of letters, digits and _ (starting with a letter or _), and not "
                f"{REGISTRY_COLLECTION!r}; got {collection!r}."
            )
            raise InvalidInputError(msg)
        self.collection = collection
        self.uri_masked = mask_uri(str(uri))
        self.hnsw_m = check_positive_int("hnsw_m", hnsw_m)
        self.ef_construction = check_positive_int("ef_construction", ef_construction)
        self.ef_search = check_positive_int("ef_search", ef_search)
        self.timeout = timeout
        self._pymilvus = require("pymilvus", "milvus")
        self._lock = threading.RLock()
        uri = str(uri)
        if is_local_uri(uri):
            Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = self._pymilvus.MilvusClient(uri=uri, token=token, db_name=db_name, timeout=timeout)
        except Exception as exc:  # pymilvus raises several unrelated types on connect
            msg = (
                f"could not connect to Milvus at {self.uri_masked}: {_clean(exc)}; "
                f"check the URI and that the server runs."
            )
            raise StoreError(msg) from None
        logger.info("connected to Milvus at %s (collection %s)", self.uri_masked, collection)
        try:
            self._ensure_registry()
            recorded = self._recorded()
            if recorded is None:
                if self._client.has_collection(collection):
                    msg = (
                        f"collection {collection!r} at {self.uri_masked} exists but was not created by latentrag "
                        f"(it has no row in {REGISTRY_COLLECTION}); choose another collection name."
                    )
                    raise StoreError(msg)
                if not create:
                    msg = (
                        f"no latentrag collection {collection!r} at {self.uri_masked}; build it with "
                        f"`latentrag index ... --store milvus://HOST:PORT/{collection}` or pass create=True."
                    )
                    raise StoreError(msg)
                self.encoder = load_encoder(encoder)
                self.index_type = ("FLAT" if is_local_uri(uri) else "HNSW") if index == "auto" else index
                self._create_collection()
            else:
                enc_name, enc_dim, self.index_type = recorded
                self.encoder = load_encoder(enc_name if encoder is None else encoder)
                check_encoder(enc_name, enc_dim, self.encoder, f"the Milvus collection {collection!r}")
                if not self._client.has_collection(collection):
                    msg = (
                        f"the registry at {self.uri_masked} lists collection {collection!r} but it is gone; "
                        f"drop it with MilvusStore(...).drop() after recreating, or choose another name."
                    )
                    raise StoreError(msg)
            # Milvus does not restore a collection's loaded state after a restart: load it every time.
            self._client.load_collection(collection)
        except BaseException:
            self._client.close()
            raise

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        uri: str,
        collection: str = "latentrag_docs",
        encoder: Encoder | str | None = None,
        vectors: np.ndarray | None = None,
        **options: Any,
    ) -> MilvusStore:
        """Create (or open) ``collection`` at ``uri`` and add ``texts`` in batches."""
        store = cls(uri, collection, encoder, **options)
        store.add(texts, ids=ids, metadatas=metadatas, vectors=vectors)
        return store

    def _ensure_registry(self) -> None:
        dt = self._pymilvus.DataType
        if self._client.has_collection(REGISTRY_COLLECTION):
            self._client.load_collection(REGISTRY_COLLECTION)
            return
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", dt.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("record", dt.VARCHAR, max_length=4096)
        schema.add_field("unused", dt.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        params = self._client.prepare_index_params()
        params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self._client.create_collection(REGISTRY_COLLECTION, schema=schema, index_params=params)

    def _recorded(self) -> tuple[str, int, str] | None:
        rows = self._client.get(REGISTRY_COLLECTION, ids=[self.collection], output_fields=["record"])
        if not rows:
            return None
        record = json.loads(rows[0]["record"])
        return str(record["encoder"]), int(record["dim"]), str(record["index_type"])

    def _create_collection(self) -> None:
        dt = self._pymilvus.DataType
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", dt.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("text", dt.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("metadata", dt.JSON)
        schema.add_field("embedding", dt.FLOAT_VECTOR, dim=self.dim)
        params = self._client.prepare_index_params()
        build = {"M": self.hnsw_m, "efConstruction": self.ef_construction} if self.index_type == "HNSW" else {}
        params.add_index(field_name="embedding", index_type=self.index_type, metric_type="COSINE", params=build)
        self._client.create_collection(
            self.collection, schema=schema, index_params=params, consistency_level="Strong"
        )
        record = {"encoder": self.encoder.name, "dim": self.dim, "index_type": self.index_type,
                  "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction}
        self._client.insert(
            REGISTRY_COLLECTION, [{"name": self.collection, "record": json.dumps(record), "unused": [0.0, 0.0]}]
        )
        logger.info("created collection %s (dim %d, index %s, encoder %s)", self.collection, self.dim,
                    self.index_type, self.encoder.name)

    # ----------------------------------------------------------------- protocol basics
    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def __len__(self) -> int:
        with self._lock:
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def __contains__(self, doc_id: object) -> bool:
        return bool(self._existing([str(doc_id)]))

    def is_empty(self) -> bool:
        """True when the collection holds no documents (a one-row query, cheaper than ``len()``)."""
        with self._lock:
            return not self._client.query(self.collection, filter="", output_fields=["id"], limit=1)

    def __repr__(self) -> str:
        return (
            f"MilvusStore(uri={self.uri_masked!r}, collection={self.collection!r}, index={self.index_type!r}, "
            f"encoder={self.encoder.name!r})"
        )

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Seal the collection's growing segments (do this before timing searches)."""
        with self._lock:
            self._client.flush(self.collection)

    def close(self) -> None:
        """Close the client; the data stays in Milvus."""
        with self._lock:
            self._client.close()

    def drop(self) -> None:
        """Drop the collection and its registry row (all documents are lost), then close the client."""
        with self._lock:
            self._client.drop_collection(self.collection)
            self._client.delete(REGISTRY_COLLECTION, ids=[self.collection])
        self.close()

    # ----------------------------------------------------------------- writes
    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[str]:
        """Add new documents; an id already present raises :class:`DuplicateIdError`."""
        texts, id_list, metas = check_texts_ids(texts, ids, metadatas)
        if id_list is None:
            id_list = [uuid.uuid4().hex for _ in texts]
        if not texts:
            return []
        clash = self._existing(id_list)
        if clash:
            msg = (
                f"ids already in the collection {self.collection!r}: {sorted(clash)[:5]}; "
                f"use upsert() to replace documents."
            )
            raise DuplicateIdError(msg)
        self._write("insert", id_list, texts, metas, vectors_for(self.encoder, texts, vectors))
        return id_list

    def upsert(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[str]:
        """Insert or replace documents by id."""
        texts, id_list, metas = check_upsert_args(texts, ids, metadatas)
        if not texts:
            return []
        self._write("upsert", id_list, texts, metas, vectors_for(self.encoder, texts, vectors))
        return id_list

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; unknown ids are ignored. Returns how many were deleted."""
        if isinstance(ids, str):
            ids = [ids]
        present = sorted(self._existing([str(i) for i in ids]))
        if present:
            with self._lock:
                for start in range(0, len(present), _BATCH):
                    self._client.delete(self.collection, ids=present[start : start + _BATCH])
        return len(present)

    def _existing(self, id_list: list[str]) -> set[str]:
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(id_list), _BATCH):
                rows = self._client.get(self.collection, ids=id_list[start : start + _BATCH], output_fields=["id"])
                found.update(str(r["id"]) for r in rows)
        return found

    def _write(self, op: str, ids: list[str], texts: list[str], metas: list[dict[str, Any]], vecs: np.ndarray) -> None:
        for doc_id, text in zip(ids, texts, strict=True):
            if len(doc_id.encode("utf-8")) > MAX_ID_BYTES:
                msg = f"id {doc_id[:40]!r}... is longer than Milvus's {MAX_ID_BYTES}-byte key limit; use shorter ids."
                raise InvalidInputError(msg)
            if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
                msg = (
                    f"the text of id {doc_id!r} is {len(text.encode('utf-8'))} bytes, over Milvus's "
                    f"{MAX_TEXT_BYTES}-byte VARCHAR limit; split it into passages first (latentrag.ingest)."
                )
                raise InvalidInputError(msg)
        method = getattr(self._client, op)
        with self._lock:
            for start in range(0, len(ids), _BATCH):
                end = start + _BATCH
                rows = [
                    {"id": i, "text": t, "metadata": m, "embedding": v}
                    for i, t, m, v in zip(ids[start:end], texts[start:end], metas[start:end],
                                          vecs[start:end].tolist(), strict=True)
                ]
                method(self.collection, rows)

    # ----------------------------------------------------------------- reads
    def search(
        self, queries: np.ndarray, k: int, *, filter: Filter | None = None, with_vectors: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each row of ``queries`` (shape (n, dim)), best first, in one search call."""
        k = min(check_positive_int("k", k), _MAX_K)
        q = check_queries(queries, self.dim)
        if len(q) == 0:
            return []
        fields = ["text", "metadata", *(["embedding"] if with_vectors else [])]
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.ef_search, k)}
        with self._lock:
            result = self._client.search(
                self.collection, data=q.tolist(), limit=k, filter=filter_expr(filter),
                output_fields=fields, search_params=params,
            )
        out: list[list[Hit]] = []
        for row_hits in result:
            hits = []
            for h in row_hits:
                entity = h["entity"]
                vec = np.asarray(entity["embedding"], dtype=np.float32) if with_vectors else None
                hits.append(Hit(str(h["id"]), entity["text"], float(h["distance"]), dict(entity["metadata"] or {}),
                                vector=vec))
            out.append(hits)
        return out

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``ids`` as one float32 array of shape (len(ids), dim)."""
        rows = self._rows([str(i) for i in ids], ["embedding"])
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for j, row in enumerate(rows):
            out[j] = row["embedding"]
        return out

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """The documents of ``ids`` (score 0.0), in the order given; unknown ids raise :class:`StoreError`."""
        return [Hit(str(r["id"]), r["text"], 0.0, dict(r["metadata"] or {}))
                for r in self._rows([str(i) for i in ids], ["text", "metadata"])]

    def _rows(self, id_list: list[str], fields: list[str]) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(id_list), _BATCH):
                for row in self._client.get(self.collection, ids=id_list[start : start + _BATCH],
                                            output_fields=["id", *fields]):
                    found[str(row["id"])] = row
        missing = [i for i in id_list if i not in found]
        if missing:
            msg = f"id {missing[0]!r} is not in the collection {self.collection!r}; check the id or add it first."
            raise StoreError(msg)
        return [found[i] for i in id_list]

    def ids(self) -> list[str]:
        """Every id in the collection, sorted."""
        out: list[str] = []
        with self._lock:
            iterator = self._client.query_iterator(self.collection, batch_size=_BATCH, filter="",
                                                   output_fields=["id"])
            try:
                while batch := iterator.next():
                    out.extend(str(r["id"]) for r in batch)
            finally:
                iterator.close()
        return sorted(out)


# --------------------------------------------------------------------- helpers
def _clean(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_uri(text)


def filter_expr(filter: Filter | None) -> str:
    """A Milvus boolean expression over the JSON ``metadata`` field with the semantics of
    :func:`latentrag.stores.base.matches` (equality; a list value means any of; ``None`` means missing).

    >>> filter_expr({"lang": "en", "year": [2023, 2024]})
    '(metadata["lang"] == "en") and (metadata["year"] == 2023 or metadata["year"] == 2024)'
    """
    if not filter:
        return ""
    clauses = []
    for key, want in filter.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            msg = f"filter keys must be metadata field names of letters, digits, '_', '-', '.' or ' ', got {key!r}."
            raise InvalidInputError(msg)
        path = f"metadata[{json.dumps(key)}]"
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        parts = []
        for value in values:
            if value is None:
                parts.append(f"not exists {path}")
            elif isinstance(value, (str, bool, int, float)):
                literal = json.dumps(value) if not isinstance(value, bool) else ("true" if value else "false")
                parts.append(f"{path} == {literal}")
            else:
                msg = f"filter value for {key!r} must be a str, number, bool or None on Milvus, got {value!r}."
                raise InvalidInputError(msg)
        clauses.append("(" + (" or ".join(parts) if parts else "false") + ")")
    return " and ".join(clauses)
