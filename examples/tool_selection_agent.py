"""Tool selection for a LangChain agent: out of many registered tools, the model is offered only the
few that a ToolRetriever picks for the request (descriptions + usage examples, no LLM call).

A fake chat model stands in for the LLM so the script runs offline; it prints which tools it was offered,
and the middleware reports them too: the agent state's ``offered_tools`` and a ``latentrag.tools_offered``
event. With ``keep_turns=1`` a follow-up ("and tomorrow?") keeps the previous turn's tools.

    python examples/tool_selection_agent.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from latentrag.integrations.langchain import ToolSelectionMiddleware
from latentrag.retrievers import ToolRetriever


@tool
def get_weather(city: str) -> str:
    """Current weather conditions for a city."""
    return f"Sunny in {city}"


@tool
def send_email(to: str, body: str) -> str:
    """Send an e-mail to a recipient."""
    return "sent"


@tool
def stock_price(ticker: str) -> str:
    """Latest trading price of a stock ticker."""
    return "123.4"


@tool
def play_music(query: str) -> str:
    """Play a song, album or playlist."""
    return "playing"


@tool
def set_timer(minutes: int) -> str:
    """Start a countdown timer."""
    return "started"


class ShowOfferedTools(GenericFakeChatModel):
    def bind_tools(self, tools, **kwargs):
        print("model offered:", [t.name for t in tools])
        return self


def main() -> None:
    tools = [get_weather, send_email, stock_price, play_music, set_timer]
    retriever = ToolRetriever.from_tools(tools, examples=[
        ("Do I need an umbrella in Oslo?", ["get_weather"]), ("How is Apple trading?", ["stock_price"]),
        ("Tell Anna by mail that I'm late", ["send_email"]), ("Put on some jazz", ["play_music"]),
    ])
    middleware = ToolSelectionMiddleware(retriever, max_tools=2, keep_turns=1)
    print(middleware)
    agent = create_agent(ShowOfferedTools(messages=iter([AIMessage(content="ok")] * 2)), tools=tools,
                         middleware=[middleware])
    result = agent.invoke({"messages": [{"role": "user", "content": "Should I take a jacket to Paris tonight?"}]})
    print("offered_tools:", result["offered_tools"])
    result = agent.invoke({"messages": [*result["messages"], {"role": "user", "content": "And play some jazz"}]})
    print("offered_tools after a follow-up:", result["offered_tools"])


if __name__ == "__main__":
    main()
