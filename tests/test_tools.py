"""Tool retrieval: schema normalisation (OpenAI, MCP, LangChain, LlamaIndex), Tool2Vec usage vectors,
the refiner, online updates, persistence, multi-turn selection and both agent integrations."""

from __future__ import annotations

import re

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
    assert tools_retriever.refiner is not None
    # "auto" keeps a refiner only with 100+ examples and a held-out win; 19 examples are too few
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
    assert offered and offered[-1][0] == "get_weather" and len(offered[-1]) == 3 and "set_timer" in offered[-1]
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
    assert got[0] is TOOLS[4] and len(got) == 2
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


def test_mlc_head_learns_the_example_labels(tools_retriever):
    from latentrag.models.tool_mlc import train_mlc

    head = train_mlc(tools_retriever._index, epochs=100)
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
