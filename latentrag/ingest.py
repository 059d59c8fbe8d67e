"""Read text, markdown and JSONL files (or folders of them) into chunks ready for a store."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentrag.errors import InvalidInputError
from latentrag.tokens import TokenTextSplitter

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl"}


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def iter_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Supported files under ``paths`` (folders are walked recursively, in sorted order)."""
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            msg = f"path {str(p)!r} does not exist; pass existing files or folders."
            raise InvalidInputError(msg)
        if p.is_dir():
            for child in sorted(p.rglob("*")):
                if child.is_file() and child.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES:
                    yield child
        elif p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES:
            yield p
        else:
            msg = f"unsupported file type {p.suffix!r} for {str(p)!r}; use .txt, .md or .jsonl."
            raise InvalidInputError(msg)


def read_documents(path: Path) -> Iterator[Record]:
    """One record per text file, or one per JSONL line (``text`` required; ``id``, ``title`` and
    any other fields become metadata)."""
    if path.suffix.lower() in TEXT_SUFFIXES:
        yield Record(str(path), path.read_text(encoding="utf-8", errors="replace"), {"source": str(path)})
        return
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{path}:{n} is not valid JSON ({exc.msg}); each line must be an object with a 'text' field."
                raise InvalidInputError(msg) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                msg = f"{path}:{n} has no string 'text' field; each JSONL line needs one."
                raise InvalidInputError(msg)
            text = obj.pop("text")
            doc_id = str(obj.pop("id", f"{path}:{n}"))
            title = obj.get("title")
            if isinstance(title, str) and title:
                text = format_passage(title, text)
            yield Record(doc_id, text, {"source": str(path), **obj})


def format_passage(title: str, text: str) -> str:
    """The passage format used for indexing and for training the shipped models: ``"Title: text"``."""
    return f"{title}: {text}"


def chunk_records(records: Iterable[Record], splitter: TokenTextSplitter) -> Iterator[Record]:
    """Split each record into token windows; a record that fits in one window keeps its id."""
    for rec in records:
        chunks = splitter.split(rec.text)
        if len(chunks) == 1:
            yield Record(rec.id, rec.text.strip(), rec.metadata)
            continue
        for c in chunks:
            yield Record(f"{rec.id}#{c.index}", c.text.strip(), {**rec.metadata, "chunk": c.index})
