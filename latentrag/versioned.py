"""Atomic saves into a folder of versions, shared by every persisted component (stores, tool indexes).

Layout: ``root/v-<ns>-<rand>/`` holds one complete save (its files plus ``manifest.json`` with a
SHA-256 per file); ``root/CURRENT`` names the live version; ``root/.lock`` serialises writers.

- **Crashes.** A save writes and fsyncs a new version folder, then replaces ``CURRENT`` with
  ``os.replace``, so a crash at any point leaves the previous version loadable. A failed save (a full
  disk, a value that cannot be written) removes its temporary folder before the error propagates.
- **Concurrent writers**, threads or processes, take an exclusive ``flock`` on ``root/.lock`` for the
  whole save, so saves serialise (each one complete, the last one live); a writer that waits longer
  than ``timeout`` seconds gets a :class:`~latentrag.errors.StoreError` and the store is untouched.
  Only the writer holding the lock removes older versions and leftovers of crashed saves.
- **Readers** take a shared lock while they read a version, so a concurrent save never removes the
  folder being read.
- ``CURRENT`` is only followed to a version folder directly inside ``root``.

On platforms without ``fcntl`` (Windows) saves are still atomic but concurrent writers are not serialised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from latentrag.errors import StoreCorruptError, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_VERSION_RE = re.compile(r"^v-\d+-[0-9a-f]{8}$")
#: How long a writer or reader waits for the lock before giving up (seconds).
LOCK_TIMEOUT = 600.0


@contextmanager
def _locked(root: Path, *, exclusive: bool, timeout: float) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    what = "save" if exclusive else "load"
                    msg = (
                        f"could not {what} {str(root)!r}: another process held its lock for over {timeout:.0f} s; "
                        f"retry when that save finishes."
                    )
                    raise StoreError(msg) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def writing(root: Path, *, timeout: float = LOCK_TIMEOUT) -> Iterator[tuple[str, Path]]:
    """Hold ``root``'s writer lock and yield ``(version, tmp)``, a fresh temporary folder for the next
    version; call :func:`commit` inside the block. On any error the temporary folder is removed."""
    if root.exists() and not root.is_dir():
        msg = f"cannot save to {str(root)!r}: it is a file, not a folder; pass a folder path."
        raise StoreError(msg)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root, exclusive=True, timeout=timeout):
        try:
            live = _current_name(root)
        except StoreCorruptError:
            pass  # a damaged pointer: the save replaces it, but removes nothing it might have meant
        else:
            _remove_leftovers(root, keep=live)
        version = f"v-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        tmp = root / f"{version}.tmp"
        tmp.mkdir()
        try:
            yield version, tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def commit(root: Path, version: str, tmp: Path, manifest: dict[str, Any], files: Iterable[str]) -> Path:
    """Checksum ``files`` (written into ``tmp``) into ``manifest``, fsync everything, publish the version
    by replacing ``CURRENT``, and remove older versions. Call inside :func:`writing`. Returns ``root``."""
    names = list(files)
    manifest = {**manifest, "checksums": {name: sha256(tmp / name) for name in names},
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_synced(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    for name in names:
        _fsync(tmp / name)
    _fsync(tmp)
    os.replace(tmp, root / version)
    pointer_tmp = root / f"CURRENT.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write_synced(pointer_tmp, version.encode())
        os.replace(pointer_tmp, root / "CURRENT")
    finally:
        pointer_tmp.unlink(missing_ok=True)
    _fsync(root)
    _remove_leftovers(root, keep=version)
    return root


def _remove_leftovers(root: Path, keep: str | None) -> None:
    """Remove every version folder but ``keep``, and temporary files of crashed saves (writer lock held)."""
    for entry in root.iterdir():
        if entry.name == keep or not (entry.name.startswith("v-") or entry.name.startswith("CURRENT.")):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _current_name(root: Path) -> str | None:
    pointer = root / "CURRENT"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{str(root)!r} has an unreadable CURRENT pointer ({exc}); restore the folder or rebuild it."
        raise StoreCorruptError(msg) from None
    if not _VERSION_RE.match(name):
        msg = (
            f"{str(root)!r} has a CURRENT pointer to {name[:80]!r}, which is not a version folder of this store; "
            f"restore the folder or rebuild it."
        )
        raise StoreCorruptError(msg)
    return name


def current(root: Path) -> Path | None:
    """The folder of the live version, or ``None`` when ``root`` holds no save."""
    name = _current_name(root)
    return None if name is None else root / name


@contextmanager
def reading(
    root: Path, *, kind: str, format_version: int, what: str, hint: str, timeout: float = LOCK_TIMEOUT
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Hold ``root``'s reader lock and yield ``(folder, manifest)`` of the live version, verified: the
    manifest parses, names ``kind`` and ``format_version``, and every file matches its checksum.
    ``what`` names the component in errors (``"FaissStore"``); ``hint`` says how to make one."""
    if not root.is_dir() or not (root / "CURRENT").is_file():
        msg = f"no saved {what} at {str(root)!r} (missing CURRENT); {hint}."
        raise StoreError(msg)
    with _locked(root, exclusive=False, timeout=timeout):
        folder = current(root)
        if folder is None or not folder.is_dir():
            msg = f"{what} at {str(root)!r} points to a missing version folder; restore it or {hint}."
            raise StoreCorruptError(msg)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or not isinstance(manifest.get("checksums"), dict):
                bad = "not a manifest object"
                raise ValueError(bad)
        except (OSError, ValueError) as exc:
            msg = f"{what} at {str(root)!r} has an unreadable manifest ({exc}); restore it or {hint}."
            raise StoreCorruptError(msg) from exc
        if manifest.get("kind") != kind or manifest.get("format_version") != format_version:
            msg = (
                f"{str(root)!r} holds {manifest.get('kind')!r} format {manifest.get('format_version')!r}, not a "
                f"{what} of format {format_version}; open it with the class that saved it, or {hint}."
            )
            raise StoreCorruptError(msg)
        name = failed_checksum(folder, manifest)
        if name is not None:
            msg = f"{what} file {name!r} at {str(folder)!r} fails its checksum; restore it or {hint}."
            raise StoreCorruptError(msg)
        yield folder, manifest


def failed_checksum(folder: Path, manifest: dict[str, Any]) -> str | None:
    """The first file of ``manifest["checksums"]`` missing from ``folder`` or not matching, else ``None``."""
    for name, digest in manifest["checksums"].items():
        path = folder / str(name)
        if Path(str(name)).name != str(name) or not path.is_file() or sha256(path) != digest:
            return str(name)
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's entries are durable only after this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
