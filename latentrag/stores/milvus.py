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
existing collection always loads it first. Reads use ``consistency="session"`` by default: every write made
from this process (by any store object: pymilvus keeps the last write's timestamp per server and collection
process-wide; a delete waits for one strong read, as a 2.3.5 server returns no timestamp for it) is visible
to the next search at once, and other processes' writes within the server's staleness bound.
``consistency="strong"`` makes every search wait for the newest timestamp, which on a Milvus 2.3.5 server
costs about 200 ms per search (it waits for the next time tick), against 7-8 ms with "session" (2,000
passages, 2 cores). Call :meth:`MilvusStore.flush` before timing searches, so that they
run on sealed segments.

Concurrency. One ``MilvusClient`` (a gRPC channel, which multiplexes concurrent calls) serves the sync
calls; on a server, reads skip the store lock, so threads sharing one store search in parallel. On a server
the async reads (``asearch``, ``aget``, ``ais_empty``) await pymilvus's ``AsyncMilvusClient`` (grpc.aio),
one per event loop, so no thread waits for the network. On a milvus-lite file they run the sync call in a
worker thread instead: milvus-lite 3.2.2 answers ``AsyncMilvusClient`` too, but its engine is a gRPC server
inside this Python process, so its work holds this process's GIL either way (async gains nothing there),
and reads keep the store lock.

Tokens and passwords are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from latentrag._optional import require
from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import InvalidInputError, StoreError, check_positive_int
from latentrag.masking import mask_uri, redacted_error, secrets_of
from latentrag.stores.base import BaseStore, Batch, Filter, PerLoop, check_encoder, matches
from latentrag.types import Hit

logger = logging.getLogger(__name__)

#: The side collection that records each store collection's encoder, dimension and index.
REGISTRY_COLLECTION = "latentrag_collections"
INDEX_TYPES = ("auto", "HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX")
CONSISTENCY = {"session": "Session", "strong": "Strong", "bounded": "Bounded", "eventually": "Eventually"}
#: Milvus's cap on a VARCHAR field, in bytes.
MAX_TEXT_BYTES = 65_535
MAX_ID_BYTES = 512
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
#: Milvus answers at most 16,384 results per search call (``topk``).
_MAX_K = 16_384
_BATCH = 1_000


def is_local_uri(uri: str) -> bool:
    """True for a milvus-lite file path (no ``scheme://``, and not a server's ``unix:`` socket)."""
    return "://" not in uri and not uri.startswith("unix:")


class MilvusStore(BaseStore):
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
        consistency: str = "session",
    ) -> None:
        if consistency not in CONSISTENCY:
            msg = f"consistency must be one of {list(CONSISTENCY)}, got {consistency!r}."
            raise InvalidInputError(msg)
        self.consistency = consistency
        # milvus-lite has one engine and no time ticks: every read sees every write; it is not asked for a level
        self._level = {} if is_local_uri(str(uri)) else {"consistency_level": CONSISTENCY[consistency]}
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
        self._secrets = secrets_of(str(uri)) + ([str(token)] if token else [])
        self.hnsw_m = check_positive_int("hnsw_m", hnsw_m)
        self.ef_construction = check_positive_int("ef_construction", ef_construction)
        self.ef_search = check_positive_int("ef_search", ef_search)
        self.timeout = timeout
        self._pymilvus = require("pymilvus", "milvus")
        super().__init__()
        uri = str(uri)
        if is_local_uri(uri):
            Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # the async clients' settings (never logged; uri_masked is)
        self._connect_args = {"uri": uri, "token": token, "db_name": db_name, "timeout": timeout}
        self._client_lock = threading.Lock()
        self._aclients = PerLoop(self._connect_async, self._client_lock)
        self.concurrent_reads = not is_local_uri(uri)
        try:
            self._client = self._pymilvus.MilvusClient(uri=uri, token=token, db_name=db_name, timeout=timeout)
        except Exception as exc:  # pymilvus raises several unrelated types on connect
            msg = (
                f"could not connect to Milvus at {self.uri_masked}: {redacted_error(exc, self._secrets)}; "
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
        rows = self._client.get(REGISTRY_COLLECTION, ids=[self.collection], output_fields=["record"], **self._level)
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
    def is_empty(self) -> bool:
        """True when the collection holds no documents (a one-row query, cheaper than ``len()``)."""
        with self._read_lock(), self._db("count"):
            return not self._client.query(self.collection, filter="", output_fields=["id"], limit=1, **self._level)

    async def ais_empty(self) -> bool:
        """Async :meth:`is_empty` through this event loop's ``AsyncMilvusClient``."""
        if not self.concurrent_reads:  # milvus-lite: a worker thread (see the module docs)
            return await super().ais_empty()
        client = await self._async_client()
        with self._db("count"):
            rows = await client.query(self.collection, filter="", output_fields=["id"], limit=1, **self._level)
        return not rows

    def __repr__(self) -> str:
        return (
            f"MilvusStore(uri={self.uri_masked!r}, collection={self.collection!r}, index={self.index_type!r}, "
            f"encoder={self.encoder.name!r})"
        )

    def _where(self) -> str:
        return f"the collection {self.collection!r}"

    @contextmanager
    def _db(self, what: str) -> Iterator[None]:
        """Turn a client error into a :class:`StoreError` with the URI's password masked."""
        try:
            yield
        except self._pymilvus.MilvusException as exc:
            reason = redacted_error(exc, self._secrets)
            msg = f"Milvus {what} on collection {self.collection!r} at {self.uri_masked} failed: {reason}"
            raise StoreError(msg) from None

    def flush(self) -> None:
        """Seal the collection's growing segments (do this before timing searches)."""
        with self._lock, self._db("flush"):
            self._client.flush(self.collection)

    def wait_for_index(self, timeout: float = 300.0, poll: float = 1.0) -> bool:
        """Wait until the server's vector index covers every row (after a bulk load and :meth:`flush`, a server
        builds it in the background; searches meanwhile scan the unindexed segments). True when it does,
        False at ``timeout`` seconds. Returns at once on milvus-lite, whose FLAT index needs no build."""
        if not self.concurrent_reads:  # milvus-lite
            return True
        deadline = time.monotonic() + timeout
        while True:
            with self._lock, self._db("describe index"):
                info = self._client.describe_index(self.collection, "embedding")
                total = self._count()
            rows = info.get("indexed_rows") if isinstance(info, dict) else None
            if rows is None or (int(rows) >= total and int(info.get("pending_index_rows", 0)) == 0):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def close(self) -> None:
        """Close the client (and the async clients of event loops running elsewhere); the data stays in Milvus."""
        with self._lock:
            self._client.close()
        with self._client_lock:
            aclients = self._aclients.detach()
        PerLoop.close_detached(aclients)

    async def aclose(self) -> None:
        """Close this event loop's ``AsyncMilvusClient`` (awaited), then the rest as :meth:`close`."""
        await self._aclients.aclose_current()
        self.close()

    async def _async_client(self) -> Any:
        """This event loop's ``AsyncMilvusClient``, connected on first use (:class:`PerLoop`)."""
        return await self._aclients.get()

    async def _connect_async(self) -> Any:
        # dedicated: a channel of this loop's own (grpc.aio channels belong to the loop that made them)
        client = self._pymilvus.AsyncMilvusClient(dedicated=True, **self._connect_args)
        try:
            await client._connect()  # connect now, so a bad address fails here, with the URI masked
        except Exception as exc:  # pymilvus raises several unrelated types on connect
            msg = f"could not connect to Milvus at {self.uri_masked}: {redacted_error(exc, self._secrets)}"
            raise StoreError(msg) from None
        return client

    def drop(self) -> None:
        """Drop the collection and its registry row (all documents are lost), then close the client."""
        with self._lock, self._db("drop"):
            self._client.drop_collection(self.collection)
            self._client.delete(REGISTRY_COLLECTION, filter=f"name == {quote_literal(self.collection)}")
        self.close()

    # ----------------------------------------------------------------- hooks
    def _count(self) -> int:
        with self._db("count"):
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"], **self._level)
        return int(rows[0]["count(*)"]) if rows else 0

    def _existing(self, ids: list[str]) -> set[str]:
        return set(self._rows(ids, []))

    def _add(self, batch: Batch) -> None:
        self._write("insert", batch)

    def _upsert(self, batch: Batch) -> None:
        self._write("upsert", batch)

    def _delete(self, ids: list[str]) -> int:
        present = sorted(self._existing(ids))
        with self._db("delete"):
            for start in range(0, len(present), _BATCH):
                self._client.delete(self.collection, filter=id_in_expr(present[start : start + _BATCH]))
            if present and self._level and self.consistency != "strong":
                # A Milvus 2.3.5 server returns no timestamp for a delete, so "session" reads would not wait for
                # it: one strong read (it waits for the newest time tick, about 200 ms) makes the query node
                # apply the delete before this returns, so every later read sees it.
                self._client.query(self.collection, filter=id_in_expr(present[:1]), output_fields=["id"],
                                   limit=1, consistency_level="Strong")
        return len(present)

    def _write(self, op: str, batch: Batch) -> None:
        for doc_id, text in zip(batch.ids, batch.texts, strict=True):
            if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
                msg = (
                    f"the text of id {doc_id!r} is {len(text.encode('utf-8'))} bytes, over Milvus's "
                    f"{MAX_TEXT_BYTES}-byte VARCHAR limit; split it into passages first (latentrag.ingest)."
                )
                raise InvalidInputError(msg)
        method = getattr(self._client, op)
        with self._db(op):
            for start in range(0, len(batch.ids), _BATCH):
                end = start + _BATCH
                rows = [
                    {"id": i, "text": t, "metadata": m, "embedding": v}
                    for i, t, m, v in zip(batch.ids[start:end], batch.texts[start:end], batch.metas[start:end],
                                          batch.vecs[start:end].tolist(), strict=True)
                ]
                method(self.collection, rows)

    def _search(self, q: np.ndarray, k: int, filter: dict[str, Any] | None, with_vectors: bool) -> list[list[Hit]]:
        """One search call for the batch. The filter expression narrows the search in Milvus; each hit is
        then re-checked with :func:`~latentrag.stores.base.matches`, whose JSON-typed equality (``True``
        is not ``1``) Milvus's expressions do not have."""
        with self._db("search"):
            result = self._client.search(**self._search_args(q, k, filter, with_vectors))
        return _hits(result, filter, with_vectors)

    async def _asearch(self, q: np.ndarray, k: int, filter: dict[str, Any] | None,
                       with_vectors: bool) -> list[list[Hit]]:
        """:meth:`_search` through this event loop's ``AsyncMilvusClient``."""
        if not self.concurrent_reads:  # milvus-lite: a worker thread (see the module docs)
            return await super()._asearch(q, k, filter, with_vectors)
        client = await self._async_client()
        with self._db("search"):
            result = await client.search(**self._search_args(q, k, filter, with_vectors))
        return _hits(result, filter, with_vectors)

    def _search_args(self, q: np.ndarray, k: int, filter: dict[str, Any] | None,
                     with_vectors: bool) -> dict[str, Any]:
        k = min(k, _MAX_K)
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.ef_search, k)}
        return {"collection_name": self.collection, "data": q.tolist(), "limit": k, "filter": filter_expr(filter),
                "output_fields": ["text", "metadata", *(["embedding"] if with_vectors else [])],
                "search_params": params, **self._level}

    def _get(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        fields = ["text", "metadata", *(["embedding"] if with_vectors else [])]
        return _rows_to_hits(self._rows(ids, fields), with_vectors)

    async def _aget(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        if not self.concurrent_reads:  # milvus-lite: a worker thread (see the module docs)
            return await super()._aget(ids, with_vectors)
        client = await self._async_client()
        fields = ["id", "text", "metadata", *(["embedding"] if with_vectors else [])]
        found: dict[str, dict[str, Any]] = {}
        with self._db("read"):
            for start in range(0, len(ids), _BATCH):
                rows = await client.query(self.collection, filter=id_in_expr(ids[start : start + _BATCH]),
                                          output_fields=fields, **self._level)
                found.update((str(row["id"]), row) for row in rows)
        return _rows_to_hits(found, with_vectors)

    def _rows(self, id_list: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        """The rows of the ids present, by id, in one query per 1,000 ids (ids escaped, never spliced raw)."""
        found: dict[str, dict[str, Any]] = {}
        with self._db("read"):
            for start in range(0, len(id_list), _BATCH):
                rows = self._client.query(self.collection, filter=id_in_expr(id_list[start : start + _BATCH]),
                                          output_fields=["id", *fields], **self._level)
                found.update((str(row["id"]), row) for row in rows)
        return found

    def _ids(self) -> list[str]:
        out: list[str] = []
        with self._db("listing"):
            iterator = self._client.query_iterator(self.collection, batch_size=_BATCH, filter="",
                                                   output_fields=["id"], **self._level)
            try:
                while batch := iterator.next():
                    out.extend(str(r["id"]) for r in batch)
            finally:
                iterator.close()
        return sorted(out)


# --------------------------------------------------------------------- helpers
def _hits(result: Any, filter: dict[str, Any] | None, with_vectors: bool) -> list[list[Hit]]:
    """A search result as hits; each is re-checked with :func:`~latentrag.stores.base.matches`, whose
    JSON-typed equality (``True`` is not ``1``) Milvus's expressions do not have."""
    out: list[list[Hit]] = []
    for row_hits in result:
        hits = []
        for h in row_hits:
            entity = h["entity"]
            meta = dict(entity["metadata"] or {})
            if filter and not matches(meta, filter):
                continue
            vec = np.asarray(entity["embedding"], dtype=np.float32) if with_vectors else None
            hits.append(Hit(str(h["id"]), entity["text"], float(h["distance"]), meta, vector=vec))
        out.append(hits)
    return out


def _rows_to_hits(rows: dict[str, dict[str, Any]], with_vectors: bool) -> dict[str, Hit]:
    return {
        doc_id: Hit(doc_id, r["text"], 0.0, dict(r["metadata"] or {}),
                    vector=np.asarray(r["embedding"], dtype=np.float32) if with_vectors else None)
        for doc_id, r in rows.items()
    }


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_literal(value: str) -> str:
    """``value`` as a double-quoted Milvus string literal: backslash, quote, newline, carriage return
    and tab escaped, other characters (``é``, ``'``) as they are. Other control characters are rejected,
    so no value can end the literal early and change the expression.

    >>> print(quote_literal("zz'] or id not in ['zz"), quote_literal('say "hi"'))
    "zz'] or id not in ['zz" "say \\"hi\\""
    """
    out = ['"']
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            msg = f"Milvus expressions cannot hold the control character {ch!r} (in {value[:60]!r}); remove it."
            raise InvalidInputError(msg)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def id_in_expr(ids: list[str]) -> str:
    """``id in ["...", ...]`` with every id escaped by :func:`quote_literal`."""
    return "id in [" + ", ".join(quote_literal(i) for i in ids) + "]"


def filter_expr(filter: Filter | None) -> str:
    """A Milvus boolean expression over the JSON ``metadata`` field that narrows a search to (a superset
    of) what :func:`latentrag.stores.base.matches` accepts: equality, a list value means any of, ``None``
    means missing. Keys and string values are escaped with :func:`quote_literal`.

    >>> filter_expr({"lang": "café", "year": [2023, 2024]})
    '(metadata["lang"] == "café") and (metadata["year"] == 2023 or metadata["year"] == 2024)'
    """
    if not filter:
        return ""
    clauses = []
    for key, want in filter.items():
        path = f"metadata[{quote_literal(str(key))}]"
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        parts = []
        for value in values:
            if value is None:
                parts.append(f"not exists {path}")
            elif isinstance(value, bool):
                parts.append(f"{path} == {'true' if value else 'false'}")
            elif isinstance(value, (int, float)):
                parts.append(f"{path} == {value!r}")
            elif isinstance(value, str):
                parts.append(f"{path} == {quote_literal(value)}")
            else:
                msg = f"filter value for {key!r} must be a str, number, bool or None, got {value!r}."
                raise InvalidInputError(msg)
        clauses.append("(" + (" or ".join(parts) if parts else "false") + ")")
    return " and ".join(clauses)
