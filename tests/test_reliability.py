"""Nothing lost, nothing leaked: one test per defect class an adversarial probe found (concurrent saves,
a full disk, passwords in messages, values that failed at save time, untyped crashes, bare strings,
writes during multi-hop retrieval), plus a bounded property-based suite over the public entry points:
every input gets a result or one of latentrag's typed errors, never another exception type."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_threads

from latentrag import FaissStore, InvalidInputError, StoreCorruptError, StoreError
from latentrag.errors import LatentRagError
from latentrag.masking import mask_dsn, mask_uri
from latentrag.retrievers import MultiHopRetriever, ToolRetriever

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email to someone.",
                                      "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}},
]


# ---------------------------------------------------------------- concurrent saves, two processes
SAVER = """
import sys
import numpy as np
from latentrag import FaissStore
from latentrag.retrievers import ToolRetriever
kind, path, seed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tools = [{"name": "get_weather", "description": "Current weather for a city.", "parameters": {}},
         {"name": "send_email", "description": "Send an email to someone.", "parameters": {}}]
if kind == "faiss":
    from latentrag.encoders import default_encoder
    enc = default_encoder()
    vecs = np.random.default_rng(seed).standard_normal((20, enc.dim)).astype(np.float32)
    obj = FaissStore.from_texts([f"doc {seed} {i}" for i in range(20)], ids=[f"{seed}-{i}" for i in range(20)],
                                encoder=enc, vectors=vecs)
else:
    obj = ToolRetriever.from_tools(tools)
print("ready", flush=True)
sys.stdin.readline()  # both processes start saving together
for _ in range(rounds):
    obj.save(path)
print("saved", rounds, flush=True)
"""


@pytest.mark.parametrize("kind", ["faiss", "tools"])
def test_concurrent_saves_from_two_processes_serialise(kind, tmp_path):
    path = str(tmp_path / "shared")
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, kind, path, str(seed), "15"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert all(out.strip() == "saved 15" for out, _ in results)
    loaded = FaissStore.load(path) if kind == "faiss" else ToolRetriever.load(path)
    if kind == "faiss":
        assert len(loaded) == 20 and loaded.ids()[0].split("-")[0] in {"1", "2"}
    else:
        assert len(loaded.retrieve("weather in Oslo?")) == 2
    left = sorted(p.name for p in Path(path).iterdir())
    assert [n for n in left if n.startswith("v-")] == [Path(path, "CURRENT").read_text()]
    assert not [n for n in left if n.endswith(".tmp")]


def test_threads_saving_one_store_all_succeed(store, tmp_path):
    def work() -> None:
        for _ in range(10):
            store.save(tmp_path / "s")

    run_in_threads(work)  # raises the first error of any thread
    assert len(FaissStore.load(tmp_path / "s")) == len(store)


# ---------------------------------------------------------------- a full disk, and what a failed save leaves
def test_disk_full_save_leaves_previous_version_and_no_temp(store, tmp_path, monkeypatch):
    root = tmp_path / "s"
    store.save(root)
    before = (root / "CURRENT").read_text()
    store.delete(["jaws"])
    import latentrag.stores.faiss as faiss_mod

    real = faiss_mod.faiss.write_index

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faiss_mod.faiss, "write_index", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.save(root)
    assert (root / "CURRENT").read_text() == before
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert "jaws" in FaissStore.load(root)
    monkeypatch.setattr(faiss_mod.faiss, "write_index", real)
    store.save(root)  # the next save works, and the leftover-free folder holds one version
    assert "jaws" not in FaissStore.load(root)
    assert len([p for p in root.iterdir() if p.name.startswith("v-")]) == 1


def test_current_outside_the_root_and_wrong_kind(store, tmp_path):
    root = tmp_path / "s"
    store.save(root)
    (root / "CURRENT").write_text("../../etc")
    with pytest.raises(StoreCorruptError, match="not a version folder"):
        FaissStore.load(root)
    tools = ToolRetriever.from_tools(TOOLS)
    tools.save(tmp_path / "t")
    with pytest.raises(StoreCorruptError, match="latentrag.ToolRetriever"):
        FaissStore.load(tmp_path / "t")
    with pytest.raises(StoreCorruptError, match="latentrag.FaissStore"):
        ToolRetriever.load(_saved(store, tmp_path / "s2"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        store.save(tmp_path / "file")


def _saved(store: FaissStore, path: Path) -> Path:
    store.save(path)
    return path


# ---------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://postgres:Top?Secret99@/postgres?host=/tmp", "Top?Secret99"),
        ("postgresql://u:Top#Secret99@db:5432/rag", "Top#Secret99"),
        ("postgresql://u:p%40ssw0rd@db/rag", "p%40ssw0rd"),
        ("postgresql://u:a/b@c@db/rag", "a/b@c"),
        ("postgresql://u@db/rag?password=Top?Secret99&sslmode=disable", "Top?Secret99"),
        ("host=db user=u password=Top?Secret99 dbname=rag", "Top?Secret99"),
        ("host=db user=u password='Top Secret99' dbname=rag", "Top Secret99"),
        ("host=db sslpassword=Top#Secret99", "Top#Secret99"),
        ("postgresql://rag:rag@rag/rag", "rag:rag"),
    ],
)
def test_mask_dsn_every_libpq_form(dsn, secret):
    masked = mask_dsn(dsn)
    assert secret not in masked and "***" in masked


def test_mask_uri_milvus():
    assert mask_uri("http://root:Mil?vus@h:19530") == "http://root:***@h:19530"
    assert "Mil#vus" not in mask_uri("https://root:Mil#vus@h:19530/db")


def test_pgvector_connection_error_does_not_show_the_password(tmp_path):
    pytest.importorskip("psycopg")
    from latentrag.stores import PgVectorStore

    dsn = f"postgresql://postgres:Top?Secret99@/postgres?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError) as info:
        PgVectorStore(dsn, "docs")
    assert "Top?Secret99" not in str(info.value) and "***" in str(info.value)


def test_cli_error_does_not_show_the_password(tmp_path, capsys):
    from latentrag.cli import main

    rc = main(["query", "x", "--store", f"postgresql://u:Top?Secret99@/postgres?host={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Top?Secret99" not in err


# ---------------------------------------------------------------- validated at the door, not at save
def test_tool_values_that_cannot_be_saved_are_rejected_at_from_tools(tmp_path):
    loop: dict = {"type": "object"}
    loop["properties"] = {"self": loop}
    bad_tools = [
        {"name": "loop", "description": "recursive", "parameters": loop},
        {"name": "bad\udc80name", "description": "surrogate", "parameters": {}},
        {"name": "nan", "description": "x", "parameters": {"default": float("nan")}},
    ]
    for tool in bad_tools:
        with pytest.raises(InvalidInputError):
            ToolRetriever.from_tools([tool])
    assert not tmp_path.joinpath("t").exists()


def test_metadata_round_trips_unchanged_or_is_rejected(store, tmp_path):
    meta = {"s": "é", "i": 2**62, "f": 0.5, "b": False, "n": None, "l": [1, [2, {"x": "y"}]], "d": {"k": "v"}}
    store.add(["round trip"], ids=["rt"], metadatas=[meta])
    store.save(tmp_path / "s")
    assert FaissStore.load(tmp_path / "s").get(["rt"])[0].meta == meta
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidInputError, match="nested more than"):
        store.add(["deep"], ids=["deep"], metadatas=[deep])


# ---------------------------------------------------------------- bare strings and untyped crashes
def test_bare_strings_are_rejected_everywhere(store):
    from latentrag.compressors import RelevanceFilter
    from latentrag.compressors.xrag import check_passages

    tools = ToolRetriever.from_tools(TOOLS, keep_turns=2)
    with pytest.raises(InvalidInputError, match="single str"):
        tools.select("weather?", history="abc")
    with pytest.raises(InvalidInputError, match="single str"):
        RelevanceFilter.fit("ab", [0.1, 0.2], [0, 1], n_dirs=0)
    with pytest.raises(InvalidInputError, match="single str"):
        check_passages("abc")
    with pytest.raises(InvalidInputError, match="single str"):
        store.encoder.encode("abc")


@pytest.fixture(scope="module")
def reranker():
    from latentrag.compressors import CrossEncoderReranker

    return CrossEncoderReranker()


def test_reranker_inputs_are_checked(reranker, encoder):
    with pytest.raises(InvalidInputError, match="single str"):
        reranker.score("q", "abc")
    with pytest.raises(InvalidInputError, match="vectors has 1 entries but texts has 2"):
        reranker.score("q", ["a", "b"], vectors=[encoder.encode(["a"])[0]])
    with pytest.raises(InvalidInputError, match="vectors has 3 entries"):
        reranker.score("q", ["a", "b"], vectors=[None, None, None])
    a = reranker.score("who directed jaws?", ["Jaws is directed by Spielberg.", "Paris is in France."])
    b = reranker.score("who directed jaws?", ["Jaws is directed by Spielberg.", "Paris is in France."],
                       vectors=[None, None])
    assert a == pytest.approx(b, abs=1e-5) and a[0] > a[1]


def test_constructor_arguments_checked_at_construction(encoder):
    with pytest.raises(InvalidInputError, match="pq_m must be a positive integer"):
        FaissStore(encoder, index="pq", pq_m=-4)
    with pytest.raises(InvalidInputError, match="weights must be a BlendWeights"):
        ToolRetriever(encoder, weights={"desc": 0.5})


def test_langchain_compressor_rejects_strings():
    pytest.importorskip("langchain_core")
    from latentrag.compressors import TokenBudgetCompressor
    from latentrag.integrations.langchain import LangChainCompressor

    with pytest.raises(InvalidInputError, match="must be a langchain_core Document"):
        LangChainCompressor(compressor=TokenBudgetCompressor(budget_tokens=20)).compress_documents(["str"], "q")


def test_pgvector_raw_driver_errors_are_typed(pg_uri, encoder):
    from latentrag.stores import PgVectorStore

    store = PgVectorStore(pg_uri, "Case_Table", encoder=encoder)
    store.add(["a"], ids=["a"])
    with pytest.raises(InvalidInputError, match="NUL"):
        store.add(["nul \x00 inside"], ids=["b"])
    with pytest.raises(InvalidInputError, match="filter"):
        store.search(encoder.encode(["a"]), k=1, filter={"x": float("nan")})
    with pytest.raises(InvalidInputError, match="k must be"):
        store.search(encoder.encode(["a"]), k=2**63)
    other = PgVectorStore(pg_uri, "case_table", encoder=encoder)  # differs only by case: its own table
    assert len(other) == 0 and len(store) == 1
    store.drop()
    other.drop()


# ---------------------------------------------------------------- writes during multi-hop retrieval
def test_multihop_reads_one_consistent_snapshot_during_writes(store, encoder):
    retriever = MultiHopRetriever(store, k=6)
    a_text, b_text = "Ulm: Ulm is a city in Germany on the Danube.", "Ulm: Ulm is a minster town in Baden-Württemberg."
    vec_a, vec_b = encoder.encode([a_text, b_text])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                text, vec = (a_text, vec_a) if i % 2 else (b_text, vec_b)
                store.upsert([text], ids=["ulm"], vectors=vec[None, :])
                store.add([f"Filler {i}: a passage."], ids=[f"f{i}"], vectors=vec_a[None, :] * 0.5 + vec_b * 0.5)
                store.delete([f"f{i}"])
                i += 1
        except BaseException as exc:  # asserted below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            for hit in retriever.retrieve("Where was the physicist who developed relativity born?"):
                if hit.id == "ulm" and hit.vector is not None:
                    want = vec_a if hit.text == a_text else vec_b if hit.text == b_text else None
                    if want is not None:
                        np.testing.assert_allclose(hit.vector, want, atol=1e-5)
    finally:
        stop.set()
        thread.join()
    assert errors == []


# ---------------------------------------------------------------- tiktoken without llama-index
def test_token_counter_works_where_llama_index_cannot_be_imported(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'llama_index' or name.startswith('llama_index.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from latentrag.tokens import count_tokens\n"
        "print(count_tokens('hello offline world'), count_tokens('hi', 'o200k_base'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["TMPDIR"] = str(tmp_path)  # tiktoken's own default cache would be here: empty
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "1"]


def test_user_tiktoken_cache_dir_wins(tmp_path, monkeypatch):
    from latentrag import tokens

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokens.get_encoding.cache_clear()
    try:
        assert tokens.count_tokens("hello offline world") == 3  # falls back to the shipped file offline
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    finally:
        tokens.get_encoding.cache_clear()


# ---------------------------------------------------------------- property-based: typed errors only
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
SETTINGS = hypothesis.settings(max_examples=60, deadline=None, database=None,
                               suppress_health_check=list(hypothesis.HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=4))
json_like = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3), st.tuples(kids),
                                                         st.dictionaries(st.one_of(st.text(max_size=4), st.integers()),
                                                                         kids, max_size=3)), max_leaves=6)
texts = st.one_of(st.text(max_size=6), st.lists(st.one_of(st.text(max_size=12), st.integers(), st.none()), max_size=3))
id_items = st.one_of(st.text(max_size=6), st.none(), st.binary(max_size=3), st.integers())
ids = st.one_of(st.none(), st.text(max_size=4), st.lists(id_items, max_size=3))
metadatas = st.one_of(st.none(), st.lists(json_like, max_size=3), json_like)
ks = st.one_of(st.integers(min_value=-3, max_value=2**64), st.floats(), st.text(max_size=2), st.none(), st.booleans())
vectors = st.one_of(st.none(), st.just("random"), st.just("nan"), st.just("zeros"), st.just("short"))


def _vectors(kind, n: int, dim: int):
    rng = np.random.default_rng(0)
    if kind is None:
        return None
    if kind == "short":
        return rng.standard_normal((n, dim - 1))
    arr = rng.standard_normal((max(n, 1), dim)).astype(np.float32)
    if kind == "nan":
        arr[0, 0] = np.nan
    if kind == "zeros":
        arr[:] = 0
    return arr[:n] if n else arr


def _typed(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except LatentRagError:
        return None


@SETTINGS
@hypothesis.given(texts=texts, ids=ids, metadatas=metadatas, vecs=vectors, op=st.sampled_from(["add", "upsert"]))
def test_property_store_writes_typed_errors_only(encoder, tmp_path_factory, texts, ids, metadatas, vecs, op):
    store = FaissStore(encoder)
    n = len(texts) if isinstance(texts, list) else 1
    _typed(getattr(store, op), texts, ids=ids, metadatas=metadatas, vectors=_vectors(vecs, n, 384))
    # whatever was accepted can be saved and loaded unchanged
    root = tmp_path_factory.mktemp("prop")
    store.save(root)
    loaded = FaissStore.load(root)
    assert [h.meta for h in loaded.get(loaded.ids())] == [h.meta for h in store.get(store.ids())]
    assert [h.text for h in loaded.get(loaded.ids())] == [h.text for h in store.get(store.ids())]


@SETTINGS
@hypothesis.given(k=ks, flt=st.one_of(st.none(), json_like), vecs=vectors, probe=ids)
def test_property_store_reads_typed_errors_only(store, k, flt, vecs, probe):
    q = _vectors(vecs, 1, 384) if vecs is not None else np.zeros((1, 384), np.float32)
    _typed(store.search, q, k, filter=flt)
    _typed(store.get, probe)
    _typed(store.vectors, probe)
    _typed(store.delete, probe if probe is not None else [])


@SETTINGS
@hypothesis.given(tools=st.lists(st.fixed_dictionaries({"name": st.one_of(st.text(max_size=6), st.integers()),
                                                        "description": st.one_of(st.text(max_size=10), st.none()),
                                                        "parameters": json_like}), max_size=3),
                  query=st.one_of(st.text(max_size=10), st.none(), st.integers()))
def test_property_tool_retriever_typed_errors_only(encoder, tools, query):
    retriever = _typed(ToolRetriever.from_tools, tools, encoder=encoder)
    if retriever is not None:
        _typed(retriever.retrieve, query)
        json.dumps([h.meta["schema"] for h in (_typed(retriever.retrieve, "x") or [])])


@SETTINGS
@hypothesis.given(query=st.one_of(st.text(max_size=10), st.none()),
                  hit_texts=st.one_of(st.lists(st.text(max_size=40), max_size=3), st.text(max_size=5)),
                  budget=st.one_of(st.integers(min_value=-2, max_value=50), st.none()))
def test_property_token_budget_typed_errors_only(query, hit_texts, budget):
    from latentrag import Hit
    from latentrag.compressors import TokenBudgetCompressor

    comp = _typed(TokenBudgetCompressor, budget_tokens=budget)
    if comp is None:
        return
    hits = [Hit(f"h{i}", t) for i, t in enumerate(hit_texts)] if isinstance(hit_texts, list) else hit_texts
    _typed(comp.compress, query, hits)
