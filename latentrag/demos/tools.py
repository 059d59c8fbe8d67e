"""Demo section: pick the right tools for a request out of a toolbox, from descriptions and usage examples."""

from __future__ import annotations

import time
from typing import TextIO

from latentrag.retrievers.tools import ToolRetriever


def _fn(name: str, description: str) -> dict[str, str]:
    return {"name": name, "description": description}


TOOLS = [
    _fn("get_weather", "Current weather conditions for a city."),
    _fn("get_forecast", "Weather forecast for the coming days."),
    _fn("send_email", "Send an e-mail to a recipient."),
    _fn("create_event", "Create a calendar event."),
    _fn("convert_currency", "Convert an amount between currencies."),
    _fn("stock_price", "Latest price of a stock ticker."),
    _fn("translate_text", "Translate text into another language."),
    _fn("search_flights", "Find flights between two airports."),
    _fn("book_hotel", "Reserve a hotel room."),
    _fn("play_music", "Play a song or playlist."),
    _fn("set_timer", "Start a countdown timer."),
    _fn("order_food", "Order a meal for delivery."),
]
EXAMPLES = [
    ("Do I need an umbrella in Oslo right now?", ["get_weather"]),
    ("How hot is it in Cairo today?", ["get_weather"]),
    ("Is it cold outside in Chicago?", ["get_weather"]),
    ("Will it snow in Denver this weekend?", ["get_forecast"]),
    ("Tell Anna by mail that I'm late", ["send_email"]),
    ("Let the team know the demo moved to Friday", ["send_email"]),
    ("Write to my landlord about the broken heater", ["send_email"]),
    ("How is Apple trading?", ["stock_price"]),
    ("Put on some jazz", ["play_music"]),
]
REQUESTS = ["Should I take a jacket to Paris tonight?", "What's Nvidia at right now?",
            "Let Bob know the report is ready"]


def run(out: TextIO) -> None:
    print("\n== Tool selection (ToolRetriever, 12 tools, 9 usage examples, k=2) ==", file=out)
    plain = ToolRetriever.from_tools(TOOLS, k=2)
    t2v = ToolRetriever.from_tools(TOOLS, examples=EXAMPLES, k=2)
    for q in REQUESTS:
        t0 = time.perf_counter()
        picked = [h.id for h in t2v.retrieve(q)]
        ms = (time.perf_counter() - t0) * 1000
        print(f"  {q!r}\n    descriptions only: {[h.id for h in plain.retrieve(q)]}\n"
              f"    with usage examples: {picked}  [{ms:.1f} ms, no LLM call]", file=out)
