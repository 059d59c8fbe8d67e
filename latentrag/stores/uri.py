"""Store URIs for the CLI and for configuration files.

- ``postgresql://user@host:5432/db?table=docs`` (or ``postgres://``): :class:`PgVectorStore`; every
  libpq parameter is passed through, ``table`` (default ``latentrag_docs``) is taken out.
- ``milvus://host:19530/docs``: :class:`MilvusStore` on a Milvus server over HTTP (``milvus+https://``
  for TLS); the path names the collection. A ``user:password`` in the URI, or ``$MILVUS_TOKEN``, is
  the token.
- ``PATH.db`` or ``milvus:///abs/path/milvus.db?collection=docs``: a milvus-lite file.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from latentrag.errors import InvalidInputError

PG_SCHEMES = ("postgresql", "postgres")
MILVUS_SCHEMES = ("milvus", "milvus+http", "milvus+https")
DEFAULT_NAME = "latentrag_docs"


def is_uri(spec: str) -> bool:
    """True when ``spec`` names a database store rather than a FaissStore folder."""
    return "://" in spec or spec.endswith(".db")


def parse_store_uri(spec: str) -> tuple[str, dict[str, Any]]:
    """``(backend, kwargs)`` for a store URI: backend is ``"pgvector"`` or ``"milvus"``.

    >>> parse_store_uri("postgresql://rag@db:5432/rag?table=docs&sslmode=require")
    ('pgvector', {'dsn': 'postgresql://rag@db:5432/rag?sslmode=require', 'table': 'docs'})
    >>> parse_store_uri("milvus://db.internal:19530/docs")
    ('milvus', {'uri': 'http://db.internal:19530', 'collection': 'docs', 'token': ''})
    >>> parse_store_uri("./rag/milvus.db")
    ('milvus', {'uri': './rag/milvus.db', 'collection': 'latentrag_docs', 'token': ''})
    """
    if "://" not in spec:
        return "milvus", {"uri": spec, "collection": DEFAULT_NAME, "token": os.environ.get("MILVUS_TOKEN", "")}
    scheme = spec.split("://", 1)[0].lower()
    if scheme in PG_SCHEMES:
        return "pgvector", _split_table(spec)
    parts = urlsplit(spec)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme in MILVUS_SCHEMES:
        collection = next((v for k, v in query if k == "collection"), None)
        token = os.environ.get("MILVUS_TOKEN", "")
        if parts.username:
            token = f"{parts.username}:{parts.password or ''}"
        if not parts.netloc:  # milvus:///path/to/file.db: a milvus-lite file
            return "milvus", {"uri": parts.path, "collection": collection or DEFAULT_NAME, "token": token}
        name = parts.path.strip("/") or collection or DEFAULT_NAME
        scheme = "https" if parts.scheme == "milvus+https" else "http"
        host = parts.hostname or "localhost"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return "milvus", {"uri": f"{scheme}://{netloc}", "collection": name, "token": token}
    msg = (
        f"unknown store URI scheme {parts.scheme!r} in {spec.split('@')[-1]!r}; use a folder (FaissStore), "
        f"postgresql://... (PgVectorStore), milvus://host:port/collection or a .db file (MilvusStore)."
    )
    raise InvalidInputError(msg)


def _split_table(spec: str) -> dict[str, Any]:
    """Take ``table=`` out of a PostgreSQL URI, leaving every other byte of it as libpq will read it (a
    password may hold ``?`` or ``#``, so the query starts at the first ``?`` after the last ``@``)."""
    at = spec.rfind("@")
    qpos = spec.find("?", at + 1 if at >= 0 else 0)
    if qpos < 0:
        return {"dsn": spec, "table": DEFAULT_NAME}
    base, query = spec[:qpos], spec[qpos + 1 :]
    kept, table = [], DEFAULT_NAME
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == "table":
            table = unquote(value)
        elif pair:
            kept.append(pair)
    return {"dsn": base + ("?" + "&".join(kept) if kept else ""), "table": table}


def open_store(spec: str, *, create: bool = False, index: str | None = None, rebuild: bool = False) -> Any:
    """Open (or, with ``create``, create) the database store that ``spec`` names.

    ``index`` maps the CLI's choices: ``flat`` is exact search on every backend, anything else the
    backend's graph index (HNSW). ``rebuild`` drops the table or collection first.
    """
    backend, kwargs = parse_store_uri(spec)
    if backend == "pgvector":
        from latentrag.stores.pgvector import PgVectorStore

        pg_index = "flat" if index == "flat" else "hnsw"
        if rebuild:
            PgVectorStore(kwargs["dsn"], kwargs["table"], create=True, index=pg_index).drop()
        return PgVectorStore(kwargs["dsn"], kwargs["table"], create=create, index=pg_index)
    from latentrag.stores.milvus import MilvusStore

    mv_index = "auto" if index is None else ("FLAT" if index == "flat" else "HNSW")
    if rebuild:
        MilvusStore(kwargs["uri"], kwargs["collection"], token=kwargs["token"], create=True, index=mv_index).drop()
    return MilvusStore(kwargs["uri"], kwargs["collection"], token=kwargs["token"], create=create, index=mv_index)
