"""Masking secrets in connection strings before they reach a ``repr``, a log line, an error or the CLI.

:func:`mask_dsn` covers every form libpq accepts: URIs (``postgresql://user:pass@host/db``, where the
password may hold ``?``, ``#`` or ``:`` and may be percent-encoded), ``?password=`` parameters, and
``key=value`` strings (quoted or not). Where psycopg is installed, the driver's own parser reads the
real password and the masked text is checked not to contain it; if it still does, the DSN is rebuilt
from the parsed parameters with the password replaced. :func:`mask_uri` masks the user-info of any URI
(Milvus, HTTP).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_KV_PASSWORD = re.compile(r"(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]\w*password=)[^&]*", re.IGNORECASE)


def _mask_userinfo(uri: str) -> str:
    """Mask the password of ``scheme://user:password@rest``. The user-info is taken to end at the last
    ``@`` of the string, so a password holding ``?``, ``#``, ``/`` or ``@`` never shows (when a later
    parameter holds an ``@`` too, more than the password is masked)."""
    head = _SCHEME.match(uri)
    if head is None:
        return uri
    start = head.end()
    end = uri.rfind("@")
    if end < start:
        return uri
    userinfo = uri[start:end]
    if ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{uri[:start]}{user}:{MASK}{uri[end:]}"


def _driver_parse(dsn: str) -> dict[str, Any] | None:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return None
    try:
        return dict(conninfo_to_dict(dsn))
    except Exception:  # not a DSN libpq can parse: the regex masking below still applies
        return None


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URI, ``?password=`` and ``key=value`` forms).

    >>> mask_dsn("postgresql://alice:s3cret@db.example:5432/rag")
    'postgresql://alice:***@db.example:5432/rag'
    >>> mask_dsn("postgresql://postgres:Top?Secret#99@/postgres?host=/tmp")
    'postgresql://postgres:***@/postgres?host=/tmp'
    >>> mask_dsn("host=db user=alice password='s3 cret' dbname=rag")
    'host=db user=alice password=*** dbname=rag'
    """
    masked = mask_uri(str(dsn))
    parsed = _driver_parse(str(dsn))
    if parsed is not None:
        secrets = [str(v) for k, v in parsed.items() if "password" in k and v]
        if any(_shows(masked, secret) for secret in secrets):
            return _rebuild(parsed)
    return masked


def mask_uri(uri: str) -> str:
    """``uri`` with any password in its user-info (or a ``password=`` parameter) replaced by ``***``.

    >>> mask_uri("http://root:Mil?vus@db.example:19530")
    'http://root:***@db.example:19530'
    """
    text = str(uri)
    if _SCHEME.match(text):
        return _QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, _mask_userinfo(text))
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def _shows(text: str, password: str) -> bool:
    return password in text or quote(password, safe="") in text or quote(password) in text


def _rebuild(parsed: dict[str, Any]) -> str:
    """The DSN as ``key=value`` pairs with the password masked (used when the text form could leak)."""
    return " ".join(f"{k}={MASK if 'password' in k else v}" for k, v in parsed.items())


def secrets_of(dsn: str) -> list[str]:
    """The password-like values in ``dsn`` (by the driver's parser where installed, and by user-info),
    longest first, for :func:`redact`."""
    found: set[str] = set()
    text = str(dsn)
    head = _SCHEME.match(text)
    end = text.rfind("@")
    if head is not None and end > head.end() and ":" in text[head.end() : end]:
        found.add(text[head.end() : end].split(":", 1)[1])
    for key, value in (_driver_parse(text) or {}).items():
        if "password" in key and value:
            found.add(str(value))
    for match in _QUERY_PASSWORD.finditer(text):
        found.add(text[match.end() :].split("&", 1)[0])
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` (an error message, say) with every form of ``secrets`` replaced by ``***``, then masked
    by :func:`mask_uri`: a driver that echoes a mangled DSN still shows no password."""
    out = str(text)
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            out = out.replace(form, MASK)
    return mask_uri(out)


def redacted_error(exc: BaseException, secrets: list[str]) -> str:
    """An exception's first line (its type name when it has no message) with every secret masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(text, secrets)
