"""Atomic saves into a folder of versions, shared by every persisted component (stores, tool indexes).

Layout: ``root/v-<ns>-<rand>/`` holds one complete save (its files plus ``manifest.json`` with a
SHA-256 per file); ``root/CURRENT`` names the live version. A save writes and fsyncs a new version
folder, then replaces ``CURRENT`` with ``os.replace``, so a crash at any point leaves the previous
version loadable. Older versions are removed after the switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def begin(root: Path) -> tuple[str, Path]:
    """Create ``root`` if needed and a fresh temporary folder for the next version: ``(version, tmp)``."""
    root.mkdir(parents=True, exist_ok=True)
    version = f"v-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"{version}.tmp"
    tmp.mkdir()
    return version, tmp


def commit(root: Path, version: str, tmp: Path, manifest: dict[str, Any], files: Iterable[str]) -> Path:
    """Checksum ``files`` (written into ``tmp``) into ``manifest``, fsync everything, publish the version
    by replacing ``CURRENT``, and remove older versions. Returns ``root``."""
    names = list(files)
    manifest = {**manifest, "checksums": {name: sha256(tmp / name) for name in names},
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_synced(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    for name in names:
        _fsync(tmp / name)
    _fsync(tmp)
    os.replace(tmp, root / version)
    write_synced(root / "CURRENT.tmp", version.encode())
    os.replace(root / "CURRENT.tmp", root / "CURRENT")
    _fsync(root)
    for old in root.iterdir():
        if old.name != version and (old.name.startswith("v-") or old.name == "CURRENT.tmp"):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    return root


def current(root: Path) -> Path | None:
    """The folder of the live version, or ``None`` when ``root`` holds no save."""
    pointer = root / "CURRENT"
    return root / pointer.read_text().strip() if pointer.is_file() else None


def failed_checksum(folder: Path, manifest: dict[str, Any]) -> str | None:
    """The first file of ``manifest["checksums"]`` missing from ``folder`` or not matching, else ``None``."""
    for name, digest in manifest["checksums"].items():
        if not (folder / name).is_file() or sha256(folder / name) != digest:
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
