"""Read Markdown, HTML, PDF, text and JSONL files (or folders of them) into chunks, and index them incrementally.

Structure first, then tokens. Every chunk is at most ``chunk_size`` tiktoken tokens
(:class:`~latentrag.tokens.TokenTextSplitter`), title and heading line included:

- Markdown (``.md``, ``.markdown``): split on headings (ATX ``#`` lines and ``===``/``---`` underlined ones; a
  ``#`` line inside a fenced code block is code, not a heading), then by tokens inside a section. Each chunk's
  text starts with the document title, then its heading path, then the section text (``"Guide\\nInstall >
  Linux\\n..."``), so :mod:`latentrag.retrievers.links` reads the title off it; its metadata holds ``title``
  and ``section`` (the heading path, ``"Install > Linux"``). The title is the front matter's ``title:``, else
  the document's single top heading (then left out of ``section``), else the file name.
- HTML (``.html``, ``.htm``; extra ``latentrag[html]``: beautifulsoup4): ``h1``-``h6`` are the sections, as in
  Markdown; the title is ``<title>``, else the first ``h1``. ``script``, ``style``, ``nav`` and the like are
  dropped.
- PDF (``.pdf``; extra ``latentrag[pdf]``: pypdf): token chunks within each page, with ``page`` (from 1) in
  metadata; the title is the PDF's own title, else the file name. A PDF without a text layer yields nothing.
- Text (``.txt``, ``.rst``): token chunks. JSONL (``.jsonl``): one record per line (``text`` required; ``id``,
  ``title`` and other fields become metadata), every chunk of a titled record starts ``"Title: "``.

Why our own splitters rather than langchain-text-splitters' ``MarkdownHeaderTextSplitter`` or LlamaIndex's
readers: the core install has neither LangChain nor LlamaIndex (the demo command installs only
``.[onnx,xrag]``), and ``latentrag index`` must work there; the heading-path splitter is ~80 lines, counts
tokens with the same tiktoken splitter as the rest of latentrag, and writes the title into every chunk, which
the title links of multi-hop retrieval need.

Incremental indexing (:func:`plan_index`, :func:`index_paths`, ``latentrag index``): each chunk's metadata holds
``source`` (the file's absolute path), ``source_sha256`` (of the file's bytes) and ``chunker`` (the chunking
settings), so the per-file state lives inside the store and is as atomic as the store's own writes. It is read
back with ``store.ids()`` and ``store.get()``. A file whose hash and chunker are unchanged is skipped (not read,
not encoded); a changed file's chunks are upserted under stable ids (``path#n``, or ``path`` for a file of one
chunk; JSONL records keep their ``id``), its ids that no longer exist are deleted, and unchanged chunk texts
reuse their stored vectors; with ``prune`` the chunks of files gone from the given folders are deleted. A store
without ``ids()`` gets every file upserted.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm import tqdm

from latentrag.errors import InvalidInputError, StoreError
from latentrag.tokens import TokenTextSplitter, count_tokens

TEXT_SUFFIXES = {".txt", ".rst"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES
#: Bumped when the chunking of some file type changes, so the next ``latentrag index`` re-chunks every file.
CHUNKER_VERSION = 1
#: Ids fetched per ``store.get`` call while reading the index state.
_PAGE = 2048


@dataclass
class Record:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Section:
    """One section of a document: its heading path (the title heading left out) and its text."""

    path: tuple[str, ...]
    text: str
    page: int | None = None


# ------------------------------------------------------------------------------------------------ files
def iter_files(paths: Sequence[str | Path], exclude: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Supported files under ``paths``: folders are walked recursively in sorted order, skipping hidden
    files and folders (``.git``) and anything under ``exclude`` (a store folder inside the documents)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    skip = [os.path.abspath(e) for e in exclude]
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            msg = f"path {str(p)!r} does not exist; pass existing files or folders."
            raise InvalidInputError(msg)
        if p.is_dir():
            for child in sorted(p.rglob("*")):
                rel = child.relative_to(p).parts
                if any(part.startswith(".") for part in rel) or _under(os.path.abspath(child), skip):
                    continue
                if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield child
        elif p.suffix.lower() in SUPPORTED_SUFFIXES:
            yield p
        else:
            msg = (f"unsupported file type {p.suffix!r} for {str(p)!r}; latentrag index reads "
                   f"{', '.join(sorted(SUPPORTED_SUFFIXES))}.")
            raise InvalidInputError(msg)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return h.hexdigest()


def _unreadable(path: str | Path, exc: OSError) -> InvalidInputError:
    msg = f"cannot read {str(path)!r} ({exc.strerror or exc}); check that it exists and is readable."
    return InvalidInputError(msg)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _require(module: str, extra: str, what: str) -> ModuleType:
    """Import the package an optional file type needs, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        msg = (f"{what} needs the {module!r} package, which is not installed; "
               f'install it with: pip install "latentrag[{extra}]"')
        raise InvalidInputError(msg) from None


# ------------------------------------------------------------------------------------------------ records
def read_documents(path: Path) -> Iterator[Record]:
    """Raw records, before chunking: one per text or Markdown file, one per JSONL line (``text`` required;
    ``id``, ``title`` and any other fields become metadata), one per HTML file (its text) and one per PDF page."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES | MARKDOWN_SUFFIXES:
        yield Record(str(path), _read_text(path), {"source": str(path)})
        return
    if suffix in HTML_SUFFIXES | PDF_SUFFIXES:
        doc_title, sections = read_html(path) if suffix in HTML_SUFFIXES else read_pdf(path)
        if suffix in HTML_SUFFIXES:
            yield Record(str(path), "\n\n".join(s.text for s in sections), {"source": str(path), "title": doc_title})
        else:
            for s in sections:
                yield Record(f"{path}#page={s.page}", s.text, {"source": str(path), "title": doc_title, "page": s.page})
        return
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 (closed below; the with-block would hide the OSError)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{path}:{n} is not valid JSON ({exc.msg}); each line must be an object with a 'text' field."
                raise InvalidInputError(msg) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                got = type(obj.get("text")).__name__ if isinstance(obj, dict) else type(obj).__name__
                msg = f"{path}:{n} has no string 'text' field (got {got}); each JSONL line needs one."
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
    """Split each record into token windows; a record that fits in one window keeps its id. A record with
    a metadata ``title`` written ``"Title: body"`` keeps that prefix on every chunk."""
    for rec in records:
        title = rec.metadata.get("title")
        prefix = f"{title}: " if isinstance(title, str) and title else ""
        if prefix and rec.text.startswith(prefix) and count_tokens(rec.text, splitter.encoding) > splitter.chunk_size:
            pieces = _split_under(prefix.rstrip(), rec.text[len(prefix) :], splitter, sep=" ")
        else:
            pieces = [c.text.strip() for c in splitter.split(rec.text)]
            pieces = [p for p in pieces if p]
        if len(pieces) == 1:
            yield Record(rec.id, pieces[0], rec.metadata)
            continue
        for i, p in enumerate(pieces):
            yield Record(f"{rec.id}#{i}", p, {**rec.metadata, "chunk": i})


def _split_under(prefix: str, body: str, splitter: TokenTextSplitter, sep: str = "\n") -> list[str]:
    """``prefix + sep + piece`` for token windows of ``body``, each at most ``chunk_size`` tokens with the prefix."""
    if not body.strip():
        return []
    room = splitter.chunk_size - count_tokens(prefix + sep, splitter.encoding)
    room = max(room, max(1, splitter.chunk_size // 4))  # a very long heading path: let the chunk run over
    inner = TokenTextSplitter(room, min(splitter.overlap, room // 2), splitter.encoding)
    return [f"{prefix}{sep}{t}" for t in (c.text.strip() for c in inner.split(body)) if t]


def chunk_sections(doc_id: str, title: str, sections: Iterable[Section], splitter: TokenTextSplitter,
                   metadata: dict[str, Any] | None = None, with_section: bool = True) -> list[Record]:
    """Chunks of a structured document: sections split by tokens, each chunk starting with the title and
    heading path; ids ``doc_id#n`` (just ``doc_id`` for a document of one chunk)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for s in sections:
        prefix = "\n".join([title, " > ".join(s.path)] if s.path else [title])
        meta: dict[str, Any] = {**(metadata or {}), "title": title}
        if with_section:
            meta["section"] = " > ".join(s.path)
        if s.page is not None:
            meta["page"] = s.page
        out.extend((text, meta) for text in _split_under(prefix, s.text, splitter))
    if len(out) == 1:
        return [Record(doc_id, out[0][0], {**out[0][1], "chunk": 0})]
    return [Record(f"{doc_id}#{i}", text, {**m, "chunk": i}) for i, (text, m) in enumerate(out)]


def chunk_file(path: str | Path, splitter: TokenTextSplitter | None = None) -> list[Record]:
    """The chunks of one file, structure-aware for Markdown, HTML and PDF (see the module docstring)."""
    path = Path(path)
    splitter = splitter or TokenTextSplitter()
    suffix = path.suffix.lower()
    base = {"source": str(path)}
    if suffix in MARKDOWN_SUFFIXES:
        title, sections = parse_markdown(_read_text(path), default_title=path.stem)
        return chunk_sections(str(path), title, sections, splitter, base)
    if suffix in HTML_SUFFIXES:
        title, sections = read_html(path)
        return chunk_sections(str(path), title, sections, splitter, base)
    if suffix in PDF_SUFFIXES:
        title, sections = read_pdf(path)
        return chunk_sections(str(path), title, sections, splitter, base, with_section=False)
    if suffix in TEXT_SUFFIXES | JSONL_SUFFIXES:
        return list(chunk_records(read_documents(path), splitter))
    msg = (f"unsupported file type {path.suffix!r} for {str(path)!r}; latentrag index reads "
           f"{', '.join(sorted(SUPPORTED_SUFFIXES))}.")
    raise InvalidInputError(msg)


# ------------------------------------------------------------------------------------------------ structure
def _outline(blocks: list[tuple[int, str, str]], explicit_title: str | None,
             default_title: str) -> tuple[str, list[Section]]:
    """Title and sections from ``(heading level, heading, text)`` blocks (level 0: text before any heading).

    The title is ``explicit_title``, else the document's single top-level heading when it is also its first
    heading, else ``default_title``; a heading used as the title is left out of the section paths."""
    headings = [i for i, (level, _, _) in enumerate(blocks) if level]
    title_at = None
    if headings:
        top = min(blocks[i][0] for i in headings)
        tops = [i for i in headings if blocks[i][0] == top]
        if len(tops) == 1 and tops[0] == headings[0]:
            title_at = tops[0]
    if title_at is not None and explicit_title and blocks[title_at][1].casefold() != explicit_title.casefold():
        title_at = None
    title = explicit_title or (blocks[title_at][1] if title_at is not None else default_title)
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    for i, (level, heading, text) in enumerate(blocks):
        if level:
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        path = tuple(h for lvl, h in stack)
        if title_at is not None and i >= title_at:
            path = path[1:]
        if text.strip():
            sections.append(Section(path, text))
    return title, sections


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_PARAGRAPH = re.compile(r"^\s*([-*+>|]|\d+[.)])(\s|$)")
_FRONT_TITLE = re.compile(r"""^title:\s*(["']?)(.*?)\1\s*$""")
_COMMENT = re.compile(r"<!--.*?-->")


def parse_markdown(text: str, default_title: str = "") -> tuple[str, list[Section]]:
    """``(title, sections)`` of a Markdown document; headings inside fenced code blocks are code.

    >>> title, sections = parse_markdown("# Guide\\nIntro.\\n## Install\\n```\\n# not a heading\\n```\\n")
    >>> title, [(s.path, s.text) for s in sections]
    ('Guide', [((), 'Intro.'), (('Install',), '```\\n# not a heading\\n```')])
    """
    lines = text.splitlines()
    explicit = None
    if lines and lines[0].strip() == "---":  # YAML front matter
        end = next((j for j in range(1, min(len(lines), 200)) if lines[j].strip() in ("---", "...")), None)
        if end is not None:
            for line in lines[1:end]:
                m = _FRONT_TITLE.match(line.strip())
                if m and m.group(2).strip():
                    explicit = m.group(2).strip()
            lines = lines[end + 1 :]
    blocks: list[tuple[int, str, str]] = []
    level, heading = 0, ""
    body: list[str] = []
    fence: str | None = None

    def close() -> None:
        blocks.append((level, heading, "\n".join(body).strip("\n")))

    for line in lines:
        if fence is not None:
            body.append(line)
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            body.append(line)
            continue
        m = _ATX.match(line)
        underline = _SETEXT.match(line)
        if m or (underline and _setext_title(body)):
            if m:
                new_level, new_heading = len(m.group(1)), (m.group(2) or "").strip()
            else:
                assert underline is not None
                new_level, new_heading = (1 if underline.group(1)[0] == "=" else 2), body.pop().strip()
            if new_heading:
                close()
                level, heading, body = new_level, new_heading, []
            continue
        body.append(_COMMENT.sub("", line) if "<!--" in line else line)
    close()
    blocks = [(lvl, h, re.sub(r"\n{3,}", "\n\n", t)) for lvl, h, t in blocks]
    return _outline(blocks, explicit, default_title)


def _setext_title(body: list[str]) -> bool:
    """Whether the last line of ``body`` is a one-line paragraph that an underline makes a heading."""
    if not body or not body[-1].strip() or _NOT_PARAGRAPH.match(body[-1]) or body[-1].startswith("    "):
        return False
    return len(body) == 1 or not body[-2].strip()


_HTML_SKIP = {"script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "button", "form"}
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HTML_PARAGRAPH = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre",
                   "table", "ul", "ol", "dl", "figure", "hr", "address", "details", "summary"}
_HTML_LINE = {"li", "tr", "br", "dt", "dd", "figcaption", "caption"}


def parse_html(html: str | bytes, default_title: str = "") -> tuple[str, list[Section]]:
    """``(title, sections)`` of an HTML page: ``h1``-``h6`` are headings; the title is ``<title>``, else the
    first ``h1``. Needs ``latentrag[html]`` (beautifulsoup4)."""
    bs4 = _require("bs4", "html", "reading HTML")
    soup = bs4.BeautifulSoup(html, "html.parser")
    explicit = None
    title_tag = soup.head.find("title") if soup.head is not None else soup.find("title")
    if title_tag is not None and title_tag.get_text(strip=True):
        explicit = " ".join(title_tag.get_text().split())
    blocks: list[tuple[int, str, str]] = []
    state: dict[str, Any] = {"level": 0, "heading": "", "parts": []}

    def close() -> None:
        text = "".join(state["parts"])
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        blocks.append((state["level"], state["heading"], re.sub(r"\n{3,}", "\n\n", text).strip("\n")))

    def add(piece: str, pre: bool = False) -> None:
        parts: list[str] = state["parts"]
        if not pre and (not parts or parts[-1].endswith("\n")):
            piece = piece.lstrip()
        if piece:
            parts.append(piece)

    def newline(sep: str) -> None:  # block boundaries: adjacent ones merge into the longer one
        parts: list[str] = state["parts"]
        if parts and not parts[-1].strip("\n"):
            parts[-1] = max(parts[-1], sep, key=len)
        elif parts:
            parts.append(sep)

    def walk(node: Any, pre: bool) -> None:
        for child in node.children:
            if isinstance(child, bs4.element.NavigableString):
                if not isinstance(child, bs4.element.PreformattedString):
                    add(str(child), pre=True) if pre else add(re.sub(r"\s+", " ", str(child)))
                continue
            name = child.name
            if name in _HTML_SKIP:
                continue
            if name in _HTML_HEADINGS:
                heading = " ".join(child.get_text(" ").split())
                if heading:
                    close()
                    state.update(level=_HTML_HEADINGS[name], heading=heading, parts=[])
                continue
            sep = "\n\n" if name in _HTML_PARAGRAPH else "\n" if name in _HTML_LINE else ""
            if sep:
                newline(sep)
            if name == "li":
                add("- ")
            walk(child, pre or name == "pre")
            if sep:
                newline(sep)
            elif name in ("td", "th"):
                add(" ")

    try:
        walk(soup.body or soup, False)
    except RecursionError:
        msg = "HTML nested too deeply to read (over ~900 levels); flatten the page or convert it to Markdown."
        raise InvalidInputError(msg) from None
    close()
    if explicit is None:
        first_h1 = next((h for lvl, h, _ in blocks if lvl == 1), None)
        explicit = first_h1
    return _outline(blocks, explicit, default_title)


def read_html(path: Path) -> tuple[str, list[Section]]:
    """:func:`parse_html` of a file (the encoding is detected from the bytes and the page's ``<meta>``)."""
    _require("bs4", "html", f"reading {str(path)!r} (HTML)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return parse_html(data, default_title=path.stem)


def read_pdf(path: Path) -> tuple[str, list[Section]]:
    """``(title, one section per page with text)`` of a PDF. Needs ``latentrag[pdf]`` (pypdf)."""
    pypdf = _require("pypdf", "pdf", f"reading {str(path)!r} (PDF)")
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            msg = f"{str(path)!r} is an encrypted PDF; decrypt it first (e.g. `qpdf --decrypt`)."
            raise InvalidInputError(msg)
        meta_title = getattr(reader.metadata, "title", None) if reader.metadata is not None else None
        pages = [page.extract_text() or "" for page in reader.pages]
    except InvalidInputError:
        raise
    except Exception as exc:  # pypdf raises many types on malformed files
        msg = f"cannot read {str(path)!r} as a PDF ({type(exc).__name__}: {exc}); check that it is a valid PDF file."
        raise InvalidInputError(msg) from None
    title = " ".join(meta_title.split()) if isinstance(meta_title, str) and meta_title.strip() else path.stem
    sections = []
    for n, text in enumerate(pages, 1):
        text = "\n".join(" ".join(line.split()) for line in text.splitlines())
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            sections.append(Section((), text, page=n))
    return title, sections


# ------------------------------------------------------------------------------------------------ incremental
def chunker_fingerprint(splitter: TokenTextSplitter) -> str:
    """The chunking settings recorded with every chunk; a change re-chunks every file on the next run."""
    return (f"latentrag.ingest/{CHUNKER_VERSION} chunk_size={splitter.chunk_size} overlap={splitter.overlap} "
            f"encoding={splitter.encoding}")


@dataclass
class _SourceState:
    ids: list[str] = field(default_factory=list)
    digests: set[Any] = field(default_factory=set)
    chunkers: set[Any] = field(default_factory=set)


def read_index_state(store: Any) -> tuple[dict[str, _SourceState], dict[str, str]] | None:
    """Per source file, the ids, hashes and chunkers of its chunks in ``store``, plus each id's source;
    ``None`` for a store that cannot list its ids. Chunks without a ``source`` are not tracked."""
    if getattr(store, "can_list", True) is False or not (
            callable(getattr(store, "ids", None)) and callable(getattr(store, "get", None))):
        return None
    ids = list(store.ids())
    by_source: dict[str, _SourceState] = {}
    owner: dict[str, str] = {}
    absolute: dict[str, str] = {}
    for start in range(0, len(ids), _PAGE):
        for hit in store.get(ids[start : start + _PAGE]):
            meta = hit.metadata or {}
            src = meta.get("source")
            if not isinstance(src, str) or not src:
                continue
            src = absolute.get(src) or absolute.setdefault(src, os.path.abspath(src))
            st = by_source.setdefault(src, _SourceState())
            st.ids.append(hit.id)
            st.digests.add(meta.get("source_sha256"))
            st.chunkers.add(meta.get("chunker"))
            owner[hit.id] = src
    return by_source, owner


@dataclass
class IndexPlan:
    """What an incremental index run does: the chunks to upsert, the ids to delete, and per-file counts.

    ``reuse`` maps a position in ``records`` to a stored id whose chunk had the same text (its vector is
    reused instead of encoding again); ``missing`` lists indexed files gone from disk that ``prune`` was
    not asked to remove; ``empty`` lists files without text; ``listable`` is False for a store without
    ``ids()`` (then every file is counted new and nothing is skipped)."""

    files: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    reuse: dict[int, str] = field(default_factory=dict)
    delete_ids: list[str] = field(default_factory=list)
    listable: bool = True

    @property
    def n_encode(self) -> int:
        """Chunks that need encoding (upserted chunks minus those whose stored vector is reused)."""
        return len(self.records) - len(self.reuse)

    @property
    def writes(self) -> bool:
        """Whether applying the plan changes the store."""
        return bool(self.records or self.delete_ids)

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "unchanged": len(self.unchanged),
                "removed": len(self.removed)}

    def summary(self) -> str:
        """``"2 new, 1 changed, 97 unchanged, 0 removed files; 14 chunks encoded, 3 deleted"``."""
        c = self.counts()
        text = (f"{c['new']} new, {c['changed']} changed, {c['unchanged']} unchanged, {c['removed']} removed files; "
                f"{self.n_encode} chunks encoded, {len(self.delete_ids)} deleted")
        if not self.listable:
            text += " (the store cannot list its ids, so every file was upserted)"
        return text


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def plan_index(
    store: Any,
    paths: Sequence[str | Path],
    *,
    splitter: TokenTextSplitter | None = None,
    prune: bool = False,
    exclude: Sequence[str | Path] = (),
    files: Sequence[str | Path] | None = None,
    progress: bool | None = None,
) -> IndexPlan:
    """Compare the files under ``paths`` with the state kept in ``store`` and return what to write (nothing
    is written; see :func:`apply_plan`). Only new and changed files are read and chunked. ``files`` (the
    result of :func:`iter_files`) skips walking ``paths`` again; ``progress`` shows a bar on stderr over the
    files to read (``None``: when 50 or more are new or changed)."""
    splitter = splitter or TokenTextSplitter()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    listed = list(iter_files(paths, exclude=exclude)) if files is None else [Path(f) for f in files]
    if not listed and not prune:
        msg = (f"no supported files in {[str(p) for p in paths]}; latentrag index reads "
               f"{', '.join(sorted(SUPPORTED_SUFFIXES))} (hidden files are skipped).")
        raise InvalidInputError(msg)
    fingerprint = chunker_fingerprint(splitter)
    state = read_index_state(store)
    if state is None and prune:
        msg = (f"prune needs a store that can list its ids (ids() and get()); {type(store).__name__} cannot. "
               "Run without prune.")
        raise InvalidInputError(msg)
    by_source, owner = state if state is not None else ({}, {})
    plan = IndexPlan(listable=state is not None)
    claimed: dict[str, str] = {}  # chunk id -> the file that produces it in this run
    stale: list[str] = []
    todo: list[tuple[str, str, _SourceState | None]] = []
    for source in dict.fromkeys(os.path.abspath(f) for f in listed):
        plan.files.append(source)
        digest = file_sha256(source)
        old = by_source.pop(source, None)
        if old is not None and old.digests == {digest} and old.chunkers == {fingerprint}:
            plan.unchanged.append(source)
            _claim(claimed, old.ids, source)
        else:
            todo.append((source, digest, old))
    if progress is None:
        progress = len(todo) >= 50
    for source, digest, old in tqdm(todo, desc="read + chunk", unit="file", disable=not progress, file=sys.stderr):
        records = chunk_file(source, splitter)
        for r in records:
            r.metadata.update(source=source, source_sha256=digest, chunker=fingerprint)
        _claim(claimed, [r.id for r in records], source)
        if old is None:
            (plan.new if records else plan.empty).append(source)
        else:
            plan.changed.append(source)
            stale.extend(old.ids)
            _reuse_vectors(store, old.ids, records, len(plan.records), plan.reuse)
        plan.records.extend(records)
    gone = [s for s in by_source if _under(s, [os.path.abspath(p) for p in paths])]
    if prune:
        plan.removed = gone
        stale.extend(i for s in gone for i in by_source[s].ids)
    else:
        plan.missing = gone
    touched = set(plan.changed) | set(plan.removed)
    for r in plan.records:
        src = owner.get(r.id)
        if src is not None and src != r.metadata["source"] and src not in touched:
            msg = (f"chunk id {r.id!r} from {r.metadata['source']!r} is already in the store for {src!r}; ids must "
                   "be unique across files: give JSONL records distinct 'id' values (or drop 'id' to use path:line); "
                   "if that file was deleted or renamed, index with prune to remove its chunks.")
            raise InvalidInputError(msg)
    plan.delete_ids = list(dict.fromkeys(i for i in stale if i not in claimed))
    return plan


def _claim(claimed: dict[str, str], ids: Iterable[str], source: str) -> None:
    for i in ids:
        if i in claimed:
            where = "twice in" if claimed[i] == source else f"in both {claimed[i]!r} and"
            msg = (f"chunk id {i!r} appears {where} {source!r}; ids must be unique: give JSONL records distinct "
                   "'id' values (or drop 'id' to use path:line).")
            raise InvalidInputError(msg)
        claimed[i] = source


def _reuse_vectors(store: Any, old_ids: list[str], records: list[Record], offset: int, reuse: dict[int, str]) -> None:
    """Record which new chunks of a changed file have the same text as one of its stored chunks."""
    by_text: dict[str, str] = {}
    for start in range(0, len(old_ids), _PAGE):
        for hit in store.get(old_ids[start : start + _PAGE]):
            by_text.setdefault(hit.text, hit.id)
    for j, r in enumerate(records):
        if r.text in by_text:
            reuse[offset + j] = by_text[r.text]


def plan_vectors(store: Any, plan: IndexPlan, encode: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
    """The vectors for ``plan.records``: stored ones where a chunk's text is unchanged, the rest from ``encode``
    (default ``store.encoder.encode``), called once with the texts to encode. Call before :func:`apply_plan`."""
    encode = encode or store.encoder.encode
    out = np.zeros((len(plan.records), int(store.dim)), dtype=np.float32)
    reused = sorted(plan.reuse)
    if reused:
        try:
            out[reused] = store.vectors([plan.reuse[i] for i in reused])
        except (StoreError, NotImplementedError):  # a store that cannot return vectors: encode them all
            plan.reuse = {}
    todo = [i for i in range(len(plan.records)) if i not in plan.reuse]
    if todo:
        out[todo] = encode([plan.records[i].text for i in todo])
    return out


def apply_plan(store: Any, plan: IndexPlan, vectors: np.ndarray | None = None) -> None:
    """Write a plan: upsert its chunks (with ``vectors`` when given), then delete its stale ids. Saving a
    FaissStore afterwards is the caller's (``store.save(path)``; skip it when ``plan.writes`` is False)."""
    if plan.records:
        store.upsert([r.text for r in plan.records], ids=[r.id for r in plan.records],
                     metadatas=[r.metadata for r in plan.records], vectors=vectors)
    if plan.delete_ids:
        store.delete(plan.delete_ids)


def index_paths(store: Any, paths: Sequence[str | Path], *, splitter: TokenTextSplitter | None = None,
                prune: bool = False, exclude: Sequence[str | Path] = ()) -> IndexPlan:
    """Incrementally index ``paths`` into ``store`` (:func:`plan_index`, :func:`plan_vectors`,
    :func:`apply_plan`) and return the plan; the counts are in ``plan.counts()``.

    >>> from latentrag import FaissStore
    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "guide.md").write_text("# Guide\\n## Install\\nRun pip install latentrag.")
    >>> store = FaissStore()
    >>> index_paths(store, [folder]).counts(), index_paths(store, [folder]).counts()["unchanged"]
    ({'new': 1, 'changed': 0, 'unchanged': 0, 'removed': 0}, 1)
    >>> store.get([str(folder / "guide.md")])[0].text
    'Guide\\nInstall\\nRun pip install latentrag.'
    """
    plan = plan_index(store, paths, splitter=splitter, prune=prune, exclude=exclude)
    vectors = plan_vectors(store, plan) if plan.records else None
    apply_plan(store, plan, vectors)
    return plan
