"""latentrag.ingest: structure-aware chunking (Markdown, HTML, PDF) and incremental indexing kept in the store."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from latentrag import FaissStore, InvalidInputError
from latentrag.ingest import chunk_file, index_paths, parse_markdown, plan_index
from latentrag.retrievers.links import title_of
from latentrag.tokens import TokenTextSplitter, count_tokens

GUIDE = """\
# Guide

Latentrag retrieves passages.

## Install

Install it with pip.

### Linux

Use a virtual environment on Linux.

```bash
# this is a shell comment, not a heading
python3 -m venv .venv
```

### macOS

Homebrew's Python works.

Usage
-----

Call latentrag index.
"""


class CountingEncoder:
    """The shipped encoder, counting the texts it encodes."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.count = inner, inner.name, inner.dim, 0

    def encode(self, texts):
        self.count += len(texts)
        return self.inner.encode(list(texts))


def write_pdf(path: Path, pages: list[str], title: str) -> None:
    """A minimal real PDF (one Helvetica text line per page, an /Info title), written by hand."""
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {n} >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for pid, text in zip(page_ids, pages, strict=True):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {pid + 1} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objs.append(f"<< /Title ({title}) >>".encode())
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info {len(objs)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    path.write_bytes(bytes(out))


# ------------------------------------------------------------------------------------------------ chunking
def test_markdown_splits_on_headings_and_every_chunk_starts_with_the_title(tmp_path):
    (tmp_path / "guide.md").write_text(GUIDE)
    chunks = chunk_file(tmp_path / "guide.md", TokenTextSplitter(chunk_size=200, overlap=30))
    assert [c.metadata["section"] for c in chunks] == ["", "Install", "Install > Linux", "Install > macOS", "Usage"]
    assert [c.id for c in chunks] == [f"{tmp_path / 'guide.md'}#{i}" for i in range(5)]
    assert all(c.metadata["title"] == "Guide" and c.text.startswith("Guide\n") for c in chunks)
    assert all(title_of(c.text) == "Guide" for c in chunks)  # what the multi-hop title links read
    linux = chunks[2].text
    assert linux.startswith("Guide\nInstall > Linux\nUse a virtual environment")
    assert "# this is a shell comment, not a heading" in linux and "macOS" not in linux  # no next heading
    assert chunks[4].text == "Guide\nUsage\nCall latentrag index."  # setext heading


def test_long_sections_split_by_tokens_inside_the_section(tmp_path):
    body = " ".join(f"Sentence {i} explains step {i} of the Linux install." for i in range(60))
    (tmp_path / "long.md").write_text(f"# Guide\n\n## Linux\n\n{body}\n\n## Windows\n\nUse WSL.\n")
    chunks = chunk_file(tmp_path / "long.md", TokenTextSplitter(chunk_size=60, overlap=10))
    linux = [c for c in chunks if c.metadata["section"] == "Linux"]
    assert len(linux) > 5 and chunks[-1].metadata["section"] == "Windows"
    assert all(c.text.startswith("Guide\nLinux\n") and count_tokens(c.text) <= 60 for c in linux)
    assert all("Windows" not in c.text for c in linux)
    assert "Sentence 59" in " ".join(c.text for c in linux)


def test_markdown_title_fallbacks():
    title, sections = parse_markdown("---\ntitle: \"Field Notes\"\n---\n# Field Notes\n## A\nx\n", "notes")
    assert title == "Field Notes" and [s.path for s in sections] == [("A",)]
    title, sections = parse_markdown("# One\nx\n# Two\ny\n", "two-parts")  # two top headings: no single title
    assert title == "two-parts" and [s.path for s in sections] == [("One",), ("Two",)]
    title, sections = parse_markdown("plain text, no heading\n", "plain")
    assert title == "plain" and sections[0].path == ()
    title, sections = parse_markdown("```\n# Code\n```\n## Real\nbody\n", "doc")
    assert title == "Real" and sections[0].text == "```\n# Code\n```"


def test_html_headings_are_sections(tmp_path):
    pytest.importorskip("bs4")
    page = tmp_path / "page.html"
    page.write_text("<html><head><title>Shark Films</title><script>var x = 1;</script></head><body>"
                    "<nav>Home | About</nav><h1>Shark Films</h1><p>Films   about <b>sharks</b>.</p>"
                    "<h2>Jaws</h2><p>Directed by Steven Spielberg.</p><h3>Sequels</h3><ul><li>Jaws 2</li>"
                    "<li>Jaws 3-D</li></ul><h2>The Meg</h2><p>A 2018 film.</p></body></html>")
    chunks = chunk_file(page)
    assert [c.metadata["section"] for c in chunks] == ["", "Jaws", "Jaws > Sequels", "The Meg"]
    assert chunks[0].text == "Shark Films\nFilms about sharks."
    assert chunks[2].text == "Shark Films\nJaws > Sequels\n- Jaws 2\n- Jaws 3-D"
    assert all(c.metadata["title"] == "Shark Films" for c in chunks)
    assert not any("var x" in c.text or "Home | About" in c.text for c in chunks)
    (tmp_path / "untitled.htm").write_text("<h1>Bees</h1><p>Bees make honey.</p>")
    assert chunk_file(tmp_path / "untitled.htm")[0].metadata["title"] == "Bees"  # first h1 without <title>


def test_pdf_chunks_carry_page_numbers(tmp_path):
    pytest.importorskip("pypdf")
    write_pdf(tmp_path / "report.pdf", ["Honey bees live in colonies.", "Bumblebees nest in the ground."],
              title="Bee Report")
    chunks = chunk_file(tmp_path / "report.pdf")
    assert [(c.metadata["page"], c.text) for c in chunks] == [
        (1, "Bee Report\nHoney bees live in colonies."), (2, "Bee Report\nBumblebees nest in the ground.")]
    assert chunks[0].metadata["title"] == "Bee Report" and "section" not in chunks[0].metadata
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    with pytest.raises(InvalidInputError, match=r"cannot read .*broken\.pdf' as a PDF"):
        chunk_file(tmp_path / "broken.pdf")


@pytest.mark.parametrize(("name", "module", "extra"), [("a.pdf", "pypdf", "pdf"), ("a.html", "bs4", "html")])
def test_a_missing_extra_names_the_pip_line(tmp_path, monkeypatch, name, module, extra):
    (tmp_path / name).write_bytes(b"<h1>x</h1>")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(InvalidInputError, match=re.escape(f'pip install "latentrag[{extra}]"')):
        chunk_file(tmp_path / name)


def test_jsonl_records_keep_their_title_on_every_chunk(tmp_path):
    body = " ".join(f"Fact {i} about Ulm." for i in range(80))
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "ulm", "title": "Ulm", "text": body}) + "\n")
    chunks = chunk_file(tmp_path / "d.jsonl", TokenTextSplitter(chunk_size=50, overlap=5))
    assert len(chunks) > 3 and chunks[1].id == "ulm#1"
    assert all(c.text.startswith("Ulm: ") and count_tokens(c.text) <= 50 for c in chunks)


def test_bad_input_says_what_and_how(tmp_path):
    (tmp_path / "notes.docx").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=r"unsupported file type '\.docx'.*reads .*\.md"):
        chunk_file(tmp_path / "notes.docx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no supported files in"):
        plan_index(object(), [tmp_path / "empty"])  # fails before the store is touched
    (tmp_path / "bad.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1 has no string 'text' field \(got int\)"):
        chunk_file(tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------------------------------ incremental
def _ids_by_source(store):
    out: dict[str, set[str]] = {}
    for hit in store.get(store.ids()):
        out.setdefault(hit.metadata["source"], set()).add(hit.id)
    return out


def test_incremental_index_skips_unchanged_replaces_changed_and_prunes(tmp_path, encoder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(GUIDE)
    (docs / "bees.md").write_text("# Bees\n\nHoney bees live in colonies.\n")
    (docs / "jaws.txt").write_text("Jaws is a 1975 thriller about a shark.")
    (docs / "films.jsonl").write_text(json.dumps({"id": "meg", "title": "The Meg", "text": "A 2018 film."}) + "\n")
    counting = CountingEncoder(encoder)
    store = FaissStore(counting)

    first = index_paths(store, [docs])
    assert first.counts() == {"new": 4, "changed": 0, "unchanged": 0, "removed": 0}
    assert counting.count == len(store) == 8 and first.n_encode == 8

    again = index_paths(store, [docs])
    assert again.counts() == {"new": 0, "changed": 0, "unchanged": 4, "removed": 0}
    assert counting.count == 8 and again.n_encode == 0 and not again.writes  # nothing encoded, nothing written

    # guide.md shrinks from 5 chunks to 2 (one section kept word for word), jaws.txt is deleted, a file is added
    (docs / "guide.md").write_text("# Guide\n\nLatentrag retrieves passages.\n\n## Install\n\nUse uv.\n")
    (docs / "jaws.txt").unlink()
    (docs / "meg.md").write_text("# The Meg\n\nA giant shark film.\n")
    plan = plan_index(store, [docs])
    assert plan.counts() == {"new": 1, "changed": 1, "unchanged": 2, "removed": 0}
    assert plan.missing == [str(docs / "jaws.txt")]  # reported, kept: prune was not asked
    plan = index_paths(store, [docs], prune=True)
    assert plan.counts() == {"new": 1, "changed": 1, "unchanged": 2, "removed": 1}
    assert counting.count == 8 + 2  # the unchanged intro reuses its stored vector: Install + meg.md encoded
    guide = str(docs / "guide.md")
    bees, meg = str(docs / "bees.md"), str(docs / "meg.md")
    assert _ids_by_source(store) == {guide: {f"{guide}#0", f"{guide}#1"}, bees: {bees},
                                     str(docs / "films.jsonl"): {"meg"}, meg: {meg}}
    assert set(plan.delete_ids) == {f"{guide}#{i}" for i in (2, 3, 4)} | {str(docs / "jaws.txt")}
    hit = store.get([f"{guide}#1"])[0]
    assert hit.text == "Guide\nInstall\nUse uv." and hit.metadata["source_sha256"] and hit.metadata["chunker"]
    intro = store.get([f"{guide}#0"])[0].text
    np.testing.assert_allclose(store.vectors([f"{guide}#0"])[0], encoder.encode([intro])[0], atol=1e-5)

    # new chunk settings re-chunk every file
    plan = plan_index(store, [docs], splitter=TokenTextSplitter(chunk_size=100, overlap=10))
    assert plan.counts() == {"new": 0, "changed": 4, "unchanged": 0, "removed": 0}


def test_a_store_without_ids_gets_everything_upserted(tmp_path, encoder):
    class NoListing:  # a store that cannot enumerate its documents
        def __init__(self):
            self.inner = FaissStore(encoder)
            self.encoder, self.dim = encoder, encoder.dim

        def upsert(self, *a, **kw):
            return self.inner.upsert(*a, **kw)

        def delete(self, ids):
            return self.inner.delete(ids)

    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    store = NoListing()
    for _ in range(2):
        plan = index_paths(store, [tmp_path])
        assert plan.counts()["new"] == 1 and not plan.listable and "cannot list" in plan.summary()
    assert len(store.inner) == 1
    with pytest.raises(InvalidInputError, match="prune needs a store that can list its ids"):
        plan_index(store, [tmp_path], prune=True)


def test_chunk_ids_must_be_unique_across_files(tmp_path, encoder):
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x", "text": "one"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "x", "text": "two"}) + "\n")
    with pytest.raises(InvalidInputError, match=r"chunk id 'x' appears in both .*a\.jsonl' and .*b\.jsonl'"):
        plan_index(FaissStore(encoder), [tmp_path])
