"""The command line (index, query, demo), the tiktoken splitter, file ingestion and the examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentrag import InvalidInputError
from latentrag.cli import main as cli
from latentrag.ingest import chunk_records, iter_files, read_documents
from latentrag.tokens import TokenTextSplitter, count_tokens, get_encoding

REPO = Path(__file__).resolve().parents[1]


def test_tiktoken_works_offline_and_splitter_respects_size():
    assert count_tokens("hello world") == 2
    assert get_encoding("cl100k_base") is get_encoding("cl100k_base")
    text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(200))
    chunks = TokenTextSplitter(chunk_size=50, overlap=10).split(text)
    assert len(chunks) > 10
    assert all(count_tokens(c.text) <= 50 for c in chunks)
    assert chunks[0].text.rstrip().endswith(".")  # cut at a sentence boundary
    joined = "".join(c.text for c in chunks)
    assert "Sentence number 199" in joined and "Sentence number 0 " in joined
    with pytest.raises(InvalidInputError, match=re.escape("overlap must be an int in [0, chunk_size=50), got 50")):
        TokenTextSplitter(chunk_size=50, overlap=50)
    with pytest.raises(InvalidInputError, match="unknown tiktoken encoding 'nope'"):
        get_encoding("nope")


def test_ingest_files_and_errors(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nSome markdown text.")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "x1", "title": "T", "text": "body", "lang": "en"}) + "\n")
    (tmp_path / "skip.bin").write_bytes(b"\0")
    files = list(iter_files([tmp_path]))
    assert [f.name for f in files] == ["a.md", "b.jsonl"]
    recs = [r for f in files for r in read_documents(f)]
    assert recs[1].id == "x1" and recs[1].text == "T: body" and recs[1].metadata["lang"] == "en"
    long = tmp_path / "long.txt"
    long.write_text("word " * 1000)
    chunks = list(chunk_records(read_documents(long), TokenTextSplitter(chunk_size=100, overlap=0)))
    assert len(chunks) >= 9 and chunks[1].id == f"{long}#1" and chunks[1].metadata["chunk"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    with pytest.raises(InvalidInputError, match=re.escape(f"{bad}:1 has no string 'text' field")):
        list(read_documents(bad))
    with pytest.raises(InvalidInputError, match="does not exist"):
        list(iter_files([tmp_path / "missing"]))


def test_cli_index_then_query(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "jaws.txt").write_text("Jaws is a 1975 thriller about a shark, directed by Steven Spielberg.")
    (docs / "bees.md").write_text("Honey bees live in colonies and make honey from nectar.")
    store = tmp_path / "store"
    assert cli(["index", str(docs), "--store", str(store)]) == 0
    assert "indexed 2 chunks from 2 files" in capsys.readouterr().out
    assert cli(["query", "Who made the shark movie?", "--store", str(store), "--k", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["id"].endswith("jaws.txt") and len(out["hits"]) == 1
    # re-indexing updates in place (upsert), so the count stays at 2
    assert cli(["index", str(docs), "--store", str(store)]) == 0
    assert "(2 total)" in capsys.readouterr().out
    assert cli(["query", "x", "--store", str(tmp_path / "nope")]) == 2
    assert "no store at" in capsys.readouterr().err


def test_demo_runs_offline(tmp_path):
    env = {**os.environ, "LATENTRAG_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "latentrag.cli", "demo"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "== Dense retrieval" in res.stdout
    assert re.search(r"Q: Who directed the film about a giant shark\?.*\n\s+\d\.\d+\s+jaws", res.stdout)
    assert (tmp_path / "demo-store" / "CURRENT").is_file()
    m = re.search(r"ToolRetriever: (\d+) standard-library functions", res.stdout)
    assert m and int(m.group(1)) >= 200
    assert re.search(r"'Show the three largest invoices'\n.*\n\s+with usage examples: \['heapq_nlargest'", res.stdout)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "examples").glob("*.py")))
def test_examples_run(script):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, str(REPO / "examples" / script)], capture_output=True, text=True,
                         env=env, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip()
