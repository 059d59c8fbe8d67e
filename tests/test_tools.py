"""Tool retrieval: schema normalisation (OpenAI, MCP, LangChain, LlamaIndex), Tool2Vec usage vectors,
the learned stage (refiner + MLC head) and its background refits, online updates, persistence and
pickling, multi-intent fusion, multi-turn selection and both agent integrations."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import threading

import numpy as np
import pytest

from latentrag import EncoderMismatchError, InvalidInputError, StoreError
from latentrag.retrievers.tool_index import ToolIndex
from latentrag.retrievers.tools import ToolRetriever


def _fn(name: str, description: str, **params: str) -> dict:
    props = {p: {"type": "string", "description": d} for p, d in params.items()}
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": props}}}


TOOLS = [
    _fn("get_weather", "Current weather conditions for a city.", city="city name"),
    _fn("get_forecast", "Weather forecast for the next days in a city.", city="city name", days="number of days"),
    {"name": "send_email", "description": "Send an e-mail message to a recipient.",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}},
    {"name": "create_calendar_event", "description": "Create an event in the user's calendar.",
     "inputSchema": {"type": "object", "properties": {"title": {"type": "string"}, "start": {"type": "string"}}}},
    _fn("convert_currency", "Convert an amount between two currencies at today's rate.", amount="", to="", src=""),
    _fn("stock_price", "Latest trading price of a stock ticker.", ticker="stock symbol"),
    _fn("translate_text", "Translate text into another language.", text="", target_language=""),
    _fn("search_flights", "Find flights between two airports on a date.", origin="", destination="", date=""),
    _fn("book_hotel", "Reserve a hotel room in a city for given dates.", city="", check_in="", nights=""),
    _fn("play_music", "Play a song, album or playlist on the speaker.", query="what to play"),
    _fn("set_timer", "Start a countdown timer.", minutes=""),
    _fn("order_food", "Order a meal for delivery from a restaurant.", restaurant="", items=""),
]
EXAMPLES = [
    ("Do I need an umbrella in Oslo right now?", ["get_weather"]),
    ("Is it sunny in Rome at the moment?", ["get_weather"]),
    ("How hot is it in Cairo today?", ["get_weather"]),
    ("Will it snow in Denver this weekend?", ["get_forecast"]),
    ("What will the temperature be in Lima on Friday?", ["get_forecast"]),
    ("Rain expected in London over the next three days?", ["get_forecast"]),
    ("Drop a note to Anna saying I'm late", ["send_email"]),
    ("Let Bob know the report is ready by mail", ["send_email"]),
    ("Mail the invoice to accounting", ["send_email"]),
    ("How many yen is 50 dollars?", ["convert_currency"]),
    ("What's 200 euros in pounds?", ["convert_currency"]),
    ("Change 1000 pesos to dollars", ["convert_currency"]),
    ("How is Apple trading?", ["stock_price"]),
    ("What's TSLA at right now?", ["stock_price"]),
    ("Price of Nvidia shares", ["stock_price"]),
    ("Put on some jazz", ["play_music"]),
    ("I want to hear Bohemian Rhapsody", ["play_music"]),
    ("Play my workout playlist", ["play_music"]),
    ("Fly me from Boston to Denver next Tuesday and get a room there", ["search_flights", "book_hotel"]),
]


@pytest.fixture(scope="module")
def tools_retriever(encoder):
    return ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=3, refiner=True)


def test_accepts_every_schema_form_and_names_are_ids(encoder):
    from langchain_core.tools import StructuredTool
    from llama_index.core.tools import FunctionTool

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    lc = StructuredTool.from_function(add, name="lc_add")
    li = FunctionTool.from_defaults(fn=add, name="li_add", description="Add two integers (LlamaIndex).")
    r = ToolRetriever.from_tools([*TOOLS[:4], lc, li], encoder=encoder, k=6)
    kinds = {s.name: s.kind for s in r.specs()}
    assert kinds == {"get_weather": "openai", "get_forecast": "openai", "send_email": "openai",
                     "create_calendar_event": "mcp", "lc_add": "langchain", "li_add": "llama_index"}
    hits = r.retrieve("sum of two numbers", k=2)
    assert {h.id for h in hits} == {"lc_add", "li_add"}
    assert hits[0].metadata["schema"]["function"]["parameters"]["properties"].keys() >= {"a", "b"}
    assert r.select("sum of two numbers", k=2)[0] in (lc, li)  # the original objects come back


def test_bad_tools_and_examples_are_clear_errors(encoder):
    dup = re.escape("duplicate tool name 'get_weather' at tools[0] and tools[1]")
    with pytest.raises(InvalidInputError, match=dup):
        ToolRetriever.from_tools([TOOLS[0], TOOLS[0]], encoder=encoder)
    with pytest.raises(InvalidInputError, match="names unknown tool 'fly'; known tools are"):
        ToolRetriever.from_tools(TOOLS, examples=[("book a flight", ["fly"])], encoder=encoder)
    with pytest.raises(InvalidInputError, match="has no usable 'name'"):
        ToolRetriever.from_tools([{"description": "no name"}], encoder=encoder)
    with pytest.raises(InvalidInputError, match="tools must be a list of tools, got dict"):
        ToolRetriever.from_tools(TOOLS[0], encoder=encoder)


def test_demo_toolbox_is_hundreds_of_valid_stdlib_schemas(encoder):
    from latentrag.demos.tools import EXAMPLES as DEMO_EXAMPLES
    from latentrag.demos.tools import stdlib_tools

    tools = stdlib_tools()
    names = [t["function"]["name"] for t in tools]
    assert len(tools) >= 200 and len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) for n in names)  # OpenAI's function-name rule
    gcd = next(t["function"] for t in tools if t["function"]["name"] == "math_gcd")
    assert "common divisor" in gcd["description"].lower()
    r = ToolRetriever.from_tools(tools, examples=DEMO_EXAMPLES, encoder=encoder, k=3)
    assert len(r) == len(tools)
    assert r.retrieve("is 2028 a leap year?")[0].id == "calendar_isleap"


def test_description_only_fallback_works(encoder):
    r = ToolRetriever.from_tools(TOOLS, encoder=encoder, k=1)
    assert r.retrieve("translate this sentence into German")[0].id == "translate_text"
    assert r.retrieve("start a 10 minute countdown")[0].id == "set_timer"


def test_usage_examples_fix_what_descriptions_miss(encoder, tools_retriever):
    desc_only = ToolRetriever.from_tools(TOOLS, encoder=encoder, k=1)
    queries = {"Should I bring a jacket to Paris tonight?": "get_weather", "How's Microsoft doing on the market?":
               "stock_price", "Tell Carol by mail that lunch moved": "send_email"}
    with_examples = sum(tools_retriever.retrieve(q, k=1)[0].id == t for q, t in queries.items())
    without = sum(desc_only.retrieve(q, k=1)[0].id == t for q, t in queries.items())
    assert with_examples >= 2 and with_examples > without


def test_refiner_is_trained_and_changes_scores(tools_retriever, encoder):
    assert tools_retriever.refiner is not None and tools_retriever.refiner.parts == ["adapter", "refiner", "mlc"]
    # "auto" fits the learned stage from 20 examples on; 19 are too few
    assert ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, refiner="auto").refiner is None
    assert ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder).refiner is None  # default is auto
    q = tools_retriever.encoder.encode(["How's Microsoft doing on the market?"])
    base = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=tools_retriever.encoder, refiner=False)
    a = tools_retriever.score_rows(q, 3)[0]
    b = base.score_rows(q, 3)[0]
    assert a[0][0] == b[0][0] == tools_retriever._row["stock_price"]
    assert not np.allclose(a[1], b[1])


def test_leave_one_out_features():
    idx = ToolIndex(2)
    idx.add_tools(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    idx.add_examples(np.array([[0.6, 0.8], [0.8, 0.6]], np.float32), [[0], [0]])
    q = np.array([0.6, 0.8], np.float32)
    full = idx.features(q, np.array([0]), top_m=2)[0]
    loo = idx.features(q, np.array([0]), top_m=2, exclude=0)[0]
    assert full[2] == pytest.approx(1.0)  # its own example is the best match
    assert loo[2] == pytest.approx(0.96)  # left out: only the other example remains
    assert loo[1] == pytest.approx(0.96)  # and the mean is that example alone


def test_online_updates_without_rebuild(encoder):
    r = ToolRetriever.from_tools(TOOLS[:3], encoder=encoder, k=1)
    r.add_tools([_fn("lookup_recipe", "Find a cooking recipe for a dish.", dish="")])
    assert r.retrieve("how do I make lasagna")[0].id == "lookup_recipe"
    r.add_examples([("what's for dinner tonight, something with pasta", ["lookup_recipe"])])
    assert r.examples[-1][1] == ["lookup_recipe"]
    r.remove_tools(["lookup_recipe"])
    assert "lookup_recipe" not in r and r.examples == []
    with pytest.raises(InvalidInputError, match="unknown tool 'nope'"):
        r.remove_tools(["nope"])


def test_batch_async_and_k(tools_retriever):
    qs = ["Is it sunny in Madrid?", "Play some Beatles"]
    batch = [[h.id for h in hs] for hs in tools_retriever.retrieve_batch(qs)]
    assert batch == [[h.id for h in tools_retriever.retrieve(q)] for q in qs]
    assert batch[1][0] == "play_music" and len(batch[0]) == 3
    assert len(tools_retriever.retrieve("x y", k=100)) == len(TOOLS)  # k is clamped to the tool count


async def test_aretrieve(tools_retriever):
    hits = await tools_retriever.aretrieve("How many dollars is 30 euros?", k=1)
    assert hits[0].id == "convert_currency"


def test_multi_turn_keeps_recent_tools(encoder):
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=1, keep_turns=1, refiner=False)
    names = r.select_names("and tomorrow?", history=["What's the weather in Oslo now?"])
    assert "get_weather" in names and len(names) == 2


def test_select_offers_as_many_tools_as_the_request_needs(encoder, tmp_path):
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=5)
    q = "Is it raining in Paris at the moment?"
    hits = r.retrieve(q)
    assert len(hits) == 5 and all(0.0 <= h.metadata["p_needed"] <= 1.0 for h in hits)
    assert hits[0].metadata["p_needed"] > hits[-1].metadata["p_needed"]
    one = r.select_names(q)
    two = r.select_names("Order a pizza from the Italian place, and also play some relaxing jazz")
    assert one[0] in {"get_weather", "get_forecast"} and len(one) < 5
    assert {"order_food", "play_music"} <= set(two) and len(two) >= 2
    assert len(r.select_names(q, k=1)) == 1
    fixed = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=5, adaptive_count=False)
    assert len(fixed.select_names(q)) == 5
    assert "count=fixed" in repr(fixed) and "count=adaptive" in repr(r)
    fixed.save(tmp_path / "f")
    assert ToolRetriever.load(tmp_path / "f").adaptive_count is False
    with pytest.raises(InvalidInputError, match="adaptive_count must be True or False, got 'yes'"):
        ToolRetriever(encoder, adaptive_count="yes")


def test_save_load_roundtrip(tools_retriever, tmp_path):
    tools_retriever.save(tmp_path / "t")
    again = ToolRetriever.load(tmp_path / "t", tools=TOOLS)
    q = "Send a mail to the landlord"
    assert [h.id for h in again.retrieve(q)] == [h.id for h in tools_retriever.retrieve(q)]
    assert again.refiner is not None and again.select(q, k=1)[0] is TOOLS[2]
    np.testing.assert_allclose([h.score for h in again.retrieve(q)], [h.score for h in tools_retriever.retrieve(q)],
                               rtol=1e-5)
    with pytest.raises(StoreError, match="no saved ToolRetriever"):
        ToolRetriever.load(tmp_path / "missing")


def test_load_with_another_encoder_is_refused(tools_retriever, tmp_path):
    from latentrag.encoders import BaseEncoder

    class Other(BaseEncoder):
        name, dim = "other", 8

        def _encode_batch(self, texts):
            return np.ones((len(texts), 8), np.float32)

    tools_retriever.save(tmp_path / "t")
    with pytest.raises(EncoderMismatchError, match="built with encoder 'sentence-transformers/all-MiniLM-L6-v2'"):
        ToolRetriever.load(tmp_path / "t", encoder=Other())


# ---------------------------------------------------------------------------------------------- frameworks
def test_langchain_middleware_narrows_the_tools_offered(tools_retriever):
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import StructuredTool

    from latentrag.integrations.langchain import ToolSelectionMiddleware

    offered: list[list[str]] = []

    class Recording(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            offered.append([t.name if hasattr(t, "name") else t["function"]["name"] for t in tools])
            return self

    def noop() -> str:
        return "ok"

    lc_tools = [StructuredTool.from_function(noop, name=s.name, description=s.description)
                for s in tools_retriever.specs()]
    model = Recording(messages=iter([AIMessage(content="done")]))
    agent = create_agent(model, tools=lc_tools, middleware=[
        ToolSelectionMiddleware(tools_retriever, max_tools=2, always_include=["set_timer"])])
    agent.invoke({"messages": [{"role": "user", "content": "What's the weather like in Oslo right now?"}]})
    # the weather request needs one tool: fewer than max_tools are offered, plus the always-included one
    assert offered and offered[-1][0] == "get_weather" and 2 <= len(offered[-1]) <= 3 and "set_timer" in offered[-1]
    with pytest.raises(InvalidInputError, match="always_include names tools the agent does not have"):
        mw = ToolSelectionMiddleware(tools_retriever, always_include=["fly_to_mars"])
        create_agent(Recording(messages=iter([AIMessage(content="x")])), tools=lc_tools, middleware=[mw]).invoke(
            {"messages": [{"role": "user", "content": "hi"}]})


async def test_llama_index_object_retriever(tools_retriever):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.llms import MockLLM
    from llama_index.core.objects.base import ObjectRetriever

    from latentrag.integrations.llama_index import LlamaIndexToolRetriever

    oret = LlamaIndexToolRetriever(tools_retriever, k=2)
    assert isinstance(oret, ObjectRetriever)
    got = oret.retrieve("convert 20 dollars to euros")
    assert got[0] is TOOLS[4] and 1 <= len(got) <= 2
    got_async = await oret.aretrieve("convert 20 dollars to euros")
    assert got_async[0] is TOOLS[4]
    agent = FunctionAgent(tool_retriever=oret, llm=MockLLM())  # pydantic accepts the subclass
    assert agent.tool_retriever is oret


def test_cli_train_tools(tmp_path, capsys):
    import json

    from latentrag.cli import main as cli

    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    (tmp_path / "ex.jsonl").write_text("\n".join(json.dumps({"query": q, "tools": t}) for q, t in EXAMPLES))
    assert cli(["train", "tools", "--tools", str(tmp_path / "tools.json"), "--examples", str(tmp_path / "ex.jsonl"),
                "--out", str(tmp_path / "out"), "--refiner", "on"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"tools": 12, "examples": 19, "refiner": True, "out": str(tmp_path / "out")}
    assert ToolRetriever.load(tmp_path / "out").retrieve("Is it sunny in Rome?", k=1)[0].id == "get_weather"


def test_logistic_head_learns_the_example_labels(tools_retriever):
    from latentrag.models.tool_mlc import train_logistic_head

    head = train_logistic_head(tools_retriever._index, epochs=100)
    names = tools_retriever.tool_names
    logits = head.logits(tools_retriever.encoder.encode([q for q, _ in EXAMPLES]))
    top1 = [names[int(i)] for i in logits.argmax(axis=1)]
    assert sum(t in tools for t, (_, tools) in zip(top1, EXAMPLES, strict=True)) >= 17  # fits its 19 examples
    assert logits.shape == (len(EXAMPLES), len(TOOLS))


def test_split_intents_and_max_fusion():
    from latentrag.retrievers.tool_intents import fuse_max, split_intents

    assert split_intents("Find the sum of multiples of 3 below 100. Also find the product of the first five "
                         "primes.") == ["Find the sum of multiples of 3 below 100",
                                        "Also find the product of the first five primes"]
    assert split_intents("Get the weather in Paris and also book a table for two") == [
        "Get the weather in Paris", "book a table for two"]
    assert split_intents("What is the weather in Paris and London?") == []  # one request
    assert split_intents("Hi. Weather?") == []  # fragments under 3 words are not requests
    rows, scores = fuse_max([(np.array([4, 2, 7]), np.array([0.9, 0.5, 0.4], np.float32)),
                             (np.array([7, 1]), np.array([0.8, 0.3], np.float32))], k=3, part_margin=0.0)
    assert rows.tolist() == [4, 7, 2] and np.allclose(scores, [0.9, 0.8, 0.5])
    # a part's score counts part_margin less: a near tie goes to the whole request's tool
    rows, _ = fuse_max([(np.array([4, 2]), np.array([0.9, 0.5], np.float32)),
                        (np.array([2]), np.array([0.91], np.float32))], k=2, part_margin=0.02)
    assert rows.tolist() == [4, 2]


def test_multi_intent_request_gets_both_tools(encoder, tmp_path):
    q = "Order a pizza from the Italian place, and also play some relaxing jazz"
    on = ToolRetriever.from_tools(TOOLS, encoder=encoder, k=2)
    off = ToolRetriever.from_tools(TOOLS, encoder=encoder, k=2, multi_intent=False)
    assert on.multi_intent and not off.multi_intent
    assert {h.id for h in on.retrieve(q)} == {"order_food", "play_music"}
    assert "play_music" not in {h.id for h in off.retrieve(q)}
    # batched and single agree, with precomputed request vectors too; the option survives save/load
    assert [[h.id for h in hs] for hs in on.retrieve_batch([q, "Put on a song"])][0] == [h.id for h in on.retrieve(q)]
    # caller-given request vectors (maybe another model's) are used alone: no parts are encoded
    vec = encoder.encode([q])
    assert [h.id for h in on._retrieve_batch([q], 2, vec)[0]] == [h.id for h in off.retrieve(q)]
    on.save(tmp_path / "t")
    assert ToolRetriever.load(tmp_path / "t").multi_intent
    off.save(tmp_path / "u")
    assert not ToolRetriever.load(tmp_path / "u").multi_intent


# ---------------------------------------------------------------------------------------------- learned stage
def _apibench_tf(data_dir):
    """APIBench TensorFlow Hub (the shared tool set with the most examples per tool): tools and requests."""
    folder = data_dir / "tools" / "gorilla_apibench"
    tools, by_call = {}, {}
    for line in (folder / "tensorflowhub_api.jsonl").read_text(encoding="utf-8").splitlines():
        a = json.loads(line)
        tid = re.sub(r"[^0-9A-Za-z_.-]+", "_", a["api_name"]).strip("_")[:64]
        if tid not in tools:
            tools[tid] = {"name": tid, "description": f"{a.get('functionality', '')}: {a.get('description', '')}",
                          "parameters": {"type": "object", "properties": {}}}
            by_call[a["api_call"]] = tid
    queries = []
    for line in (folder / "tensorflow_eval.json").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        text = e["code"].split("###Output")[0].replace("###Instruction:", "").strip()
        if e["api_data"]["api_call"] in by_call and text:
            queries.append((text, [by_call[e["api_data"]["api_call"]]]))
    return list(tools.values()), queries


def test_learned_stage_ranks_held_out_requests_at_least_as_well(encoder, data_dir):
    import random

    tools, queries = _apibench_tf(data_dir)
    random.Random(0).shuffle(queries)
    train, held_out = queries[:280], queries[280:430]
    r = ToolRetriever.from_tools(tools, examples=train, encoder=encoder, k=5, refiner=False, multi_intent=False)
    assert r.refiner is None

    def ranks():  # 1-based rank of the gold tool in the top 5, 6 when absent
        hits = r.retrieve_batch([q for q, _ in held_out], 5)
        return np.array([next((i + 1 for i, h in enumerate(hs) if h.id == g[0]), 6)
                         for (_, g), hs in zip(held_out, hits, strict=True)])

    first = ranks()
    r.fit()  # the defaults: refiner + MLC head
    assert r.refiner is not None and r.refiner.info["n_examples"] == 280
    learned = ranks()

    def mrr(x):
        return np.mean(np.where(x <= 5, 1.0 / x, 0.0))

    # measured: R@1 0.63 -> 0.70, MRR@5 0.74 -> 0.78, R@5 0.89 -> 0.89 (one request of 150 either way)
    assert np.mean(learned == 1) >= np.mean(first == 1) + 0.03 and mrr(learned) >= mrr(first) + 0.01
    assert np.mean(learned <= 5) >= np.mean(first <= 5) - 0.02
    # and the default build (refiner="auto", 280 examples) is that learned stage
    assert ToolRetriever.from_tools(tools, examples=train, encoder=encoder).refiner is not None


def test_fit_options_and_validation(encoder):
    from latentrag.retrievers.tool_fit import FitConfig

    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, refiner=False)
    with pytest.raises(InvalidInputError, match=r"unknown options \['epoch'\]"):
        r.fit(epoch=3)
    with pytest.raises(InvalidInputError, match="config must be a FitConfig"):
        r.fit({"mlc": False})  # type: ignore[arg-type]
    r.fit(mlc=False, epochs=5)
    assert r.refiner is not None and r.refiner.parts == ["adapter", "refiner"] and r.fit_config.epochs == 5
    r.fit(FitConfig(refiner=False, adapter=False))
    assert r.refiner is not None and r.refiner.parts == ["mlc"]
    r.fit(validate=True)  # kept only if it beats the first stage on a held-out fifth: either way, consistent
    assert r.refiner is None or r.refiner.info["holdout_mrr"]["learned"] > r.refiner.info["holdout_mrr"]["first_stage"]
    empty = ToolRetriever.from_tools(TOOLS, encoder=encoder)
    with pytest.raises(InvalidInputError, match="fit\\(\\) needs usage examples"):
        empty.fit()


def test_updates_refit_in_the_background_without_blocking_queries(encoder, monkeypatch):
    import latentrag.retrievers.tool_fit as tool_fit

    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=3, refiner=True)
    assert not r.fit_pending and r.refiner is not None and r.refiner.info["n_examples"] == len(EXAMPLES)
    release, started = threading.Event(), threading.Event()
    real_fit = tool_fit.fit_stage

    def slow_fit(*args, **kwargs):
        started.set()
        assert release.wait(30)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tool_fit, "fit_stage", slow_fit)
    r.add_examples([("Is it cloudy in Bergen?", ["get_weather"])])
    assert started.wait(30) and r.fit_pending
    # the refit is blocked, queries are not: they use the previous fit
    assert r.retrieve("Should I take an umbrella in Oslo?")[0].id == "get_weather"
    r.add_tools([_fn("lookup_recipe", "Find a cooking recipe for a dish.", dish="")])
    assert r.refiner.names == r.tool_names  # the head got a (zero) row for the new tool at once
    assert r.retrieve("how do I make lasagna", k=1)[0].id == "lookup_recipe"
    r.remove_tools(["order_food"])
    assert r.refiner.names == r.tool_names and len(r.refiner.mlc) == len(TOOLS)
    release.set()
    assert r.wait_for_fit(60) and not r.fit_pending
    # the last refit saw every update: 20 examples, the recipe tool in, order_food out
    assert r.refiner.info["n_examples"] == len(EXAMPLES) + 1 and r.refiner.info["n_tools"] == len(TOOLS)
    assert r.retrieve("How many yen is 80 dollars?", k=1)[0].id == "convert_currency"


def test_refit_policy(encoder):
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder)  # auto: 19 < 20 examples
    assert r.refiner is None and not r.fit_pending
    r.add_examples([("Is it foggy in San Francisco?", ["get_weather"])])  # 20: the background fit starts
    assert r.wait_for_fit(60) and r.refiner is not None
    off = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES * 2, encoder=encoder, refiner=False)
    off.add_examples([("Is it foggy in San Francisco?", ["get_weather"])])
    assert off.refiner is None and not off.fit_pending and off.wait_for_fit(1)
    with pytest.raises(InvalidInputError, match="refiner must be 'auto', True or False"):
        ToolRetriever.from_tools(TOOLS, encoder=encoder, refiner="yes")


def test_learned_stage_save_load_roundtrip_and_stale_flag(tools_retriever, encoder, tmp_path, monkeypatch):
    tools_retriever.save(tmp_path / "t")
    again = ToolRetriever.load(tmp_path / "t", tools=TOOLS)
    assert again.refiner.parts == tools_retriever.refiner.parts and not again.fit_pending
    qs = ["Send a mail to the landlord", "What's the forecast for Rome this week? Also convert 20 euros to yen"]
    for q in qs:
        a, b = again.retrieve(q), tools_retriever.retrieve(q)
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
    manifest = json.loads(next((tmp_path / "t").glob("v-*/manifest.json")).read_text())
    assert manifest["learned"]["parts"] == ["adapter", "refiner", "mlc"] and manifest["learned"]["rank"] == 16
    assert "learned.safetensors" in manifest["checksums"]
    # the adapter comes back bit for bit: identical adapted vectors and scores
    a, b = again.refiner.adapter, tools_retriever.refiner.adapter
    assert a.delta_norm() > 0 and np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)
    q = encoder.encode(qs)
    for (ra, sa), (rb, sb) in zip(again.score_rows(q, 5), tools_retriever.score_rows(q, 5), strict=True):
        assert np.array_equal(ra, rb) and np.array_equal(sa, sb)
    # a retriever saved while its refit was due loads stale and refits lazily, on its first query
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, refiner=True)
    monkeypatch.setattr(r, "_schedule_refit", lambda: None)
    r.add_examples([("Is it cloudy in Bergen?", ["get_weather"])])
    assert r.fit_pending
    r.save(tmp_path / "s")
    monkeypatch.undo()
    loaded = ToolRetriever.load(tmp_path / "s")
    assert loaded.fit_pending and loaded.refiner.info["n_examples"] == len(EXAMPLES)
    loaded.retrieve("Is it sunny in Rome?")
    assert loaded.wait_for_fit(60) and loaded.refiner.info["n_examples"] == len(EXAMPLES) + 1


class HashEncoder:
    """A tiny picklable encoder (hashed bag of words), so the retriever's own pickling is tested alone."""

    name, dim = "test-hash-bow", 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_pickle_roundtrip_keeps_the_learned_stage():
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=HashEncoder(), k=3, refiner=True)
    state = r.__getstate__()
    assert "_lock" not in state and state["_worker"] is None
    again = pickle.loads(pickle.dumps(r))
    assert isinstance(again._lock, type(threading.RLock())) and again._lock is not r._lock
    q = "What's 200 euros in pounds?"
    assert [(h.id, round(h.score, 5)) for h in again.retrieve(q)] == [(h.id, round(h.score, 5)) for h in r.retrieve(q)]
    again.add_examples([("Price of Apple shares today", ["stock_price"])])  # a working copy: lock and refits
    assert again.wait_for_fit(60) and again.refiner.info["n_examples"] == len(EXAMPLES) + 1
    assert r.refiner.info["n_examples"] == len(EXAMPLES)


def test_pickle_roundtrip_with_the_default_encoder(tools_retriever):
    blob = pickle.dumps(tools_retriever)
    again = pickle.loads(blob)
    assert [h.id for h in again.retrieve("Play some Beatles")] == [h.id for h in tools_retriever.retrieve(
        "Play some Beatles")]


def test_cover_fusion_covers_every_part(encoder):
    from latentrag.retrievers.tool_intents import fuse_cover

    whole = (np.array([4, 5, 6, 2]), np.array([0.9, 0.85, 0.84, 0.5], np.float32))
    part_a = (np.array([5, 4]), np.array([0.95, 0.7], np.float32))
    part_b = (np.array([2, 9]), np.array([0.6, 0.55], np.float32))
    rows, scores = fuse_cover([whole, part_a, part_b], k=3)
    assert rows.tolist() == [5, 4, 2]  # each part's best and the whole's, by fused score; max fusion: 5, 4, 6
    assert np.allclose(scores, [0.93, 0.9, 0.58])
    assert fuse_cover([whole, part_a, part_b], k=2)[0].tolist() == [5, 4]  # fewer slots than parts: best first
    for refiner in (False, True):
        r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, k=2, refiner=refiner)
        q = "Order a pizza from the Italian place, and also play some relaxing jazz"
        assert {h.id for h in r.retrieve(q)} == {"order_food", "play_music"}
    assert ToolRetriever(encoder, multi_intent="max").multi_intent == "max"
    with pytest.raises(InvalidInputError, match="multi_intent must be True, False or one of"):
        ToolRetriever(encoder, multi_intent="sum")


def test_count_model_rule_and_version_check():
    from latentrag.errors import ModelLoadError
    from latentrag.models.tool_count import ToolCount, shipped_count

    m = ToolCount((0.0,) * 7, 0.0, 0.4)
    assert m.count(np.array([0.9, 0.5, 0.39, 0.1]), n_parts=0, k=5) == 2
    assert m.count(np.array([0.1, 0.1]), n_parts=0, k=5) == 1  # never an empty offer
    assert m.count(np.array([0.9, 0.1, 0.1, 0.1]), n_parts=3, k=5) == 3  # one per detected part
    assert m.count(np.array([0.9, 0.1, 0.1, 0.1]), n_parts=3, k=2) == 2  # capped by k
    p = shipped_count().probabilities(np.array([0.9, 0.5, 0.49, 0.3, 0.2, 0.1]), 0)
    assert p[5] == 0.0 and p[0] > p[1] > p[4]  # the model reads five positions; a clear winner stands out
    with pytest.raises(ModelLoadError, match="refit them with"):
        ToolCount.from_dict({"features": ["gap"], "width": 5, "weight": [1.0], "bias": 0.0, "threshold": 0.5})


def test_query_adapter_is_the_identity_before_training_and_checks_its_input(encoder):
    from latentrag.models.tool_adapter import QueryAdapter
    from latentrag.retrievers.tool_fit import FitConfig, with_parts

    q = encoder.encode(["Is it sunny in Rome?", "Mail the invoice to accounting"])
    a = QueryAdapter.identity(int(encoder.dim), rank=16)
    assert a.rank == 16 and a.delta_norm() == 0.0 and not a.u.any() and a.v.any()
    np.testing.assert_allclose(a.apply(q), q, atol=1e-6)  # U = 0: the request vector unchanged
    np.testing.assert_allclose(a.apply(q[0]), q[0], atol=1e-6)
    with pytest.raises(InvalidInputError, match=r"query embedding has shape \(2, 10\).*dim 384"):
        a.apply(q[:, :10])
    with pytest.raises(InvalidInputError, match="rank must be an integer from 1 to dim \\(384\\), got 0"):
        QueryAdapter.identity(int(encoder.dim), rank=0)
    with pytest.raises(InvalidInputError, match="U and V of one shape"):
        QueryAdapter(np.zeros((384, 4)), np.zeros((384, 5)))
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        QueryAdapter(np.full((384, 4), np.nan), np.zeros((384, 4)))
    with pytest.raises(InvalidInputError, match="FitConfig.rank must be a positive integer, got -3"):
        FitConfig(rank=-3)
    with pytest.raises(InvalidInputError, match="FitConfig.adapter_l2 must be a finite number >= 0, got nan"):
        FitConfig(adapter_l2=float("nan"))
    with pytest.raises(InvalidInputError, match=r"unknown learned-stage part\(s\) \['adapterr'\]"):
        with_parts(FitConfig(), "adapterr+mlc")
    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, refiner=False)
    with pytest.raises(InvalidInputError, match="FitConfig.rank is 400, more than the embedding dimension 384"):
        r.fit(with_parts(FitConfig(rank=400), "adapter"))


def test_query_adapter_pulls_example_requests_toward_their_tools(encoder):
    from latentrag.retrievers.tool_fit import FitConfig, adapter_targets, fit_adapter, with_parts

    r = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, encoder=encoder, refiner=False, multi_intent=False)
    idx = r._index
    targets = adapter_targets(idx, r.weights)

    def margin(x):  # own tool's target cosine minus the best other tool's, averaged over the examples
        s = x @ targets.T
        own = np.array([s[i, g].max() for i, g in enumerate(idx.example_tools)])
        for i, g in enumerate(idx.example_tools):
            s[i, g] = -np.inf
        return float(np.mean(own - s.max(axis=1)))

    loose = fit_adapter(idx, r.weights, FitConfig(adapter_l2=1.0, adapter_epochs=200))
    assert loose.delta_norm() > 0.5
    assert margin(loose.apply(idx.examples)) > margin(idx.examples) + 0.05
    # the penalty is per example: with 19 examples the default keeps the adapter near the identity
    tight = fit_adapter(idx, r.weights, FitConfig())
    assert tight.delta_norm() < loose.delta_norm() / 2
    # in the retriever: the adapter alone is a learned stage, shown in repr, refitted with new examples
    r.fit(with_parts(FitConfig(), "adapter"))
    assert r.refiner.parts == ["adapter"] and "learned=adapter (adapter rank 16)" in repr(r)
    assert "rank=16" in repr(r.refiner)
    r.refit_policy = True
    r.add_examples([("Is it cloudy in Bergen?", ["get_weather"])])
    assert r.wait_for_fit(60) and r.refiner.parts == ["adapter"]
    assert r.refiner.info["n_examples"] == len(EXAMPLES) + 1


def test_query_adapter_ranks_held_out_requests_better(encoder, data_dir):
    import random

    from latentrag.retrievers.tool_fit import FitConfig, with_parts

    tools, queries = _apibench_tf(data_dir)
    random.Random(0).shuffle(queries)
    train, held_out = queries[:280], queries[280:430]
    r = ToolRetriever.from_tools(tools, examples=train, encoder=encoder, k=5, refiner=False, multi_intent=False)

    def ranks():  # 1-based rank of the gold tool in the top 5, 6 when absent
        hits = r.retrieve_batch([q for q, _ in held_out], 5)
        return np.array([next((i + 1 for i, h in enumerate(hs) if h.id == g[0]), 6)
                         for (_, g), hs in zip(held_out, hits, strict=True)])

    first = ranks()
    r.fit(with_parts(FitConfig(), "adapter"))  # the adapter alone, on top of the fixed first stage
    adapted = ranks()

    def mrr(x):
        return np.mean(np.where(x <= 5, 1.0 / x, 0.0))

    # measured: R@1 0.633 -> 0.667, MRR@5 0.727 -> 0.754, R@5 0.893 -> 0.907 (150 held-out requests)
    assert np.mean(adapted == 1) >= np.mean(first == 1) + 0.02 and mrr(adapted) >= mrr(first) + 0.015
    assert np.mean(adapted <= 5) >= np.mean(first <= 5) - 0.02


def test_training_candidates_keep_every_gold_tool():
    from latentrag.retrievers.tool_fit import _candidate_rows
    from latentrag.retrievers.tool_index import BlendWeights

    idx = ToolIndex(2)
    idx.add_tools(np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]], np.float32))
    idx.add_examples(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), [[3, 1], [3, 0, 1]])
    for n_cand in (2, 3):  # a missing gold tool takes a non-gold slot, never another gold tool's
        rows = _candidate_rows(idx, idx.examples, [0, 1], BlendWeights(), n_cand)
        assert {3, 1} <= set(rows[0].tolist())
        assert len(set(rows[1].tolist()) & {3, 0, 1}) == min(3, n_cand)
