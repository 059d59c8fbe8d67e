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
    # a compressed index that re-scores with the exact vectors; --rerank needs a compressed index
    assert cli(["index", str(docs), "--store", str(tmp_path / "pq"), "--index", "ivfpq", "--rerank", "50"]) == 0
    from latentrag import FaissStore

    saved = FaissStore.load(tmp_path / "pq")
    assert saved.index_type == "ivfpq" and saved.rerank == 50
    capsys.readouterr()
    assert cli(["index", str(docs), "--store", str(tmp_path / "bad"), "--rerank", "50"]) == 2
    assert "rerank=50 applies to the compressed index types" in capsys.readouterr().err


def _summary(out: str) -> dict[str, int]:
    m = re.search(r"(\d+) new, (\d+) changed, (\d+) unchanged, (\d+) removed files; (\d+) chunks encoded, "
                  r"(\d+) deleted \((\d+) total\)", out)
    assert m, out
    return dict(zip(["new", "changed", "unchanged", "removed", "encoded", "deleted", "total"],
                    map(int, m.groups()), strict=True))


def test_cli_reindex_is_incremental(tmp_path, capsys, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n## Part A\n\nFirst part of note {i}.\n\n"
                                          f"## Part B\n\nA lighthouse keeper counts the ships.\n")
    store = tmp_path / "store"
    assert cli(["index", str(docs), "--store", str(store)]) == 0
    assert _summary(capsys.readouterr().out) == {"new": 4, "changed": 0, "unchanged": 0, "removed": 0,
                                                 "encoded": 8, "deleted": 0, "total": 8}
    version = (store / "CURRENT").read_text()

    import latentrag.encoders

    def no_model(*a, **kw):
        raise AssertionError("an unchanged re-index must not load the encoder")

    with monkeypatch.context() as m:
        m.setattr(latentrag.encoders, "load_encoder", no_model)
        assert cli(["index", str(docs), "--store", str(store)]) == 0
    assert _summary(capsys.readouterr().out) == {"new": 0, "changed": 0, "unchanged": 4, "removed": 0,
                                                 "encoded": 0, "deleted": 0, "total": 8}
    assert (store / "CURRENT").read_text() == version  # not re-saved

    (docs / "note0.md").write_text("# Note 0\n\n## Part A\n\nFirst part of note 0.\n")  # one section left
    (docs / "note1.md").unlink()
    (docs / "note9.md").write_text("# Note 9\n\nA new note.\n")
    assert cli(["index", str(docs), "--store", str(store)]) == 0
    captured = capsys.readouterr()
    assert _summary(captured.out) == {"new": 1, "changed": 1, "unchanged": 2, "removed": 0,
                                      "encoded": 1, "deleted": 2, "total": 8}  # note0's Part A vector is reused
    assert "1 indexed file(s) are gone from disk" in captured.err and "--prune" in captured.err
    assert cli(["index", str(docs), "--store", str(store), "--prune"]) == 0
    assert _summary(capsys.readouterr().out) == {"new": 0, "changed": 0, "unchanged": 4, "removed": 1,
                                                 "encoded": 0, "deleted": 2, "total": 6}
    assert cli(["query", "Who counts ships at the lighthouse?", "--store", str(store), "--k", "1", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert hit["metadata"]["section"] == "Part B" and re.match(r"Note \d\nPart B\nA lighthouse", hit["text"])
    assert hit["metadata"]["title"] == hit["text"].split("\n")[0] and hit["metadata"]["source"].endswith(".md")


def test_cli_embedding_progress_bar(tmp_path, capsys):
    (tmp_path / "many.jsonl").write_text("".join(json.dumps({"text": f"Short fact number {i}."}) + "\n"
                                                 for i in range(201)))
    assert cli(["index", str(tmp_path / "many.jsonl"), "--store", str(tmp_path / "store")]) == 0
    captured = capsys.readouterr()
    assert "201 chunks encoded" in captured.out
    assert re.search(r"embed: 100%.*201/201.* chunks/s", captured.err)
    (tmp_path / "few.jsonl").write_text(json.dumps({"text": "One more fact."}) + "\n")
    assert cli(["index", str(tmp_path / "few.jsonl"), "--store", str(tmp_path / "store")]) == 0
    assert "chunks/s" not in capsys.readouterr().err  # no bar for small runs


def test_cli_store_that_is_a_file_or_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    target = tmp_path / "notes.txt"
    target.write_text("not a store")
    for argv in (["index", str(tmp_path / "a.md"), "--store", str(target)], ["query", "x", "--store", str(target)]):
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--store {str(target)!r} is a regular file" in err
        assert "expected a store folder" in err and "Traceback" not in err
    assert target.read_text() == "not a store"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.md").write_text("# B\n\nbeta\n")
    assert cli(["index", str(tmp_path / "a.md"), "--store", str(docs)]) == 2
    err = capsys.readouterr().err
    assert f"--store {str(docs)!r} is an existing folder that is not a latentrag store" in err
    assert sorted(p.name for p in docs.iterdir()) == ["b.md"]  # nothing written into it
    assert cli(["index", str(tmp_path / "a.md"), "--store", str(target / "sub")]) == 2
    assert f"is inside the regular file {str(target)!r}" in capsys.readouterr().err
    assert cli(["index", str(tmp_path / "missing.md"), "--store", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a store inside the indexed folder is not indexed itself
    assert cli(["index", str(docs), "--store", str(docs / "store")]) == 0
    assert cli(["index", str(docs), "--store", str(docs / "store")]) == 0
    assert "indexed 0 chunks from 1 files" in capsys.readouterr().out.splitlines()[-1]


def test_cli_version_and_help(capsys):
    from importlib.metadata import version

    from latentrag.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        cli(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"latentrag {version('latentrag')}"
    parser = build_parser()
    top = parser.format_help()
    assert "``" not in top and "index" in top and "examples:" in top
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in [("latentrag", parser), *subparsers.items()]:
        text = "".join(sub.format_help().split())  # compared without whitespace: argparse wraps lines
        for action in sub._actions:
            if action.dest in ("help", "version") or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            shown = "".join(action.help.split())
            assert shown in text and ("default" in shown.lower() or action.required
                                      or f"{shown}(default:{action.default})" in text), (name, action.dest)


def test_cli_query_explain_runs_once_and_json_is_a_node_list(store, tmp_path, capsys, monkeypatch):
    from latentrag.retrievers.multihop import MultiHopRetriever

    store.save(tmp_path / "s")
    runs = []
    original = MultiHopRetriever._run
    monkeypatch.setattr(MultiHopRetriever, "_run", lambda self, *a: runs.append(1) or original(self, *a))
    question = "Where was the director of Jaws born?"
    assert cli(["query", question, "--store", str(tmp_path / "s"), "--k", "3", "--explain", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(runs) == 1 and len(out["hits"]) == 3 and out["hops_run"] >= 1
    nodes = out["tree"]
    assert isinstance(nodes, list) and nodes
    assert {"id", "hop", "parent", "via", "status", "score", "path_score", "question_sim", "rank"} <= set(nodes[0])
    seen: set[str] = set()
    for n in nodes:  # parents come first
        assert (n["hop"] == 1) == (n["parent"] is None) or n["via"] == "link"
        assert n["parent"] is None or n["parent"] in seen
        seen.add(n["id"])
    ranked = sorted((n for n in nodes if n["rank"]), key=lambda n: n["rank"])
    assert [n["id"] for n in ranked][:3] == [h["id"] for h in out["hits"]]
    runs.clear()
    assert cli(["query", question, "--store", str(tmp_path / "s"), "--k", "3", "--explain"]) == 0
    assert len(runs) == 1 and f"Q: {question}" in capsys.readouterr().out


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
