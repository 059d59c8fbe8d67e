"""``ToolSelectionMiddleware``: LangChain 1.x agent middleware that narrows ``request.tools`` to the few
tools a :class:`~latentrag.retrievers.tools.ToolRetriever` picks for the latest user message.

It only ever *removes* tools from the request: every tool it keeps was registered with the agent
(``create_agent(tools=...)``), so the agent can always execute the model's calls. Tools that the
retriever knows but the agent does not are skipped; provider tool dicts pass through untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from latentrag._optional import require

require("langchain", "langchain")

from langchain.agents.middleware import AgentMiddleware, ModelRequest  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402

from latentrag.errors import InvalidInputError, check_positive_int  # noqa: E402


def _text(message: Any) -> str:
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content).strip()
    return str(content)


class ToolSelectionMiddleware(AgentMiddleware):
    """Offer the model only the ``max_tools`` best tools for the current request (no LLM call).

    Args:
        retriever: a :class:`~latentrag.retrievers.tools.ToolRetriever` over (at least) the agent's tools.
        max_tools: tools offered per model call, besides ``always_include``.
        always_include: tool names always offered (they must be registered with the agent).
        keep_turns: also keep the tools selected for this many earlier user turns (follow-ups such as
            "and tomorrow?"); ``None`` uses the retriever's own ``keep_turns``.
    """

    def __init__(self, retriever: Any, max_tools: int = 5, always_include: Sequence[str] = (),
                 keep_turns: int | None = None) -> None:
        super().__init__()
        self.retriever = retriever
        self.max_tools = check_positive_int("max_tools", max_tools)
        if isinstance(always_include, str):
            msg = f"always_include must be a list of tool names, got the str {always_include!r}; wrap it in a list."
            raise InvalidInputError(msg)
        self.always_include = list(always_include)
        if keep_turns is not None and (isinstance(keep_turns, bool) or not isinstance(keep_turns, int)
                                       or keep_turns < 0):
            msg = f"keep_turns must be an integer >= 0 or None, got {keep_turns!r}."
            raise InvalidInputError(msg)
        self.keep_turns = keep_turns

    def select_names(self, messages: Sequence[Any]) -> list[str] | None:
        """Tool names for the conversation (``None`` when there is no user message to select on)."""
        turns = [_text(m) for m in messages if isinstance(m, HumanMessage) and _text(m).strip()]
        if not turns:
            return None
        keep = self.retriever.keep_turns if self.keep_turns is None else self.keep_turns
        names = [h.id for h in self.retriever.retrieve(turns[-1], self.max_tools)]
        if keep and len(turns) > 1:
            for hits in reversed(self.retriever.retrieve_batch(turns[-1 - keep : -1], self.max_tools)):
                names.extend(h.id for h in hits if h.id not in names)
        return names

    def narrow(self, request: ModelRequest) -> ModelRequest:
        """The request with ``tools`` narrowed to the selection (plus ``always_include``)."""
        tools = list(request.tools or [])
        base = {t.name: t for t in tools if not isinstance(t, dict)}
        missing = [n for n in self.always_include if n not in base]
        if missing:
            msg = (f"always_include names tools the agent does not have: {missing}; register them with "
                   f"create_agent(tools=...) first. Agent tools: {sorted(base)[:20]}.")
            raise InvalidInputError(msg)
        names = self.select_names(request.messages)
        if names is None or not base:
            return request
        chosen = [base[n] for n in names if n in base and n not in self.always_include]
        chosen += [base[n] for n in self.always_include]
        provider = [t for t in tools if isinstance(t, dict)]
        return request.override(tools=[*chosen, *provider])

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        return handler(self.narrow(request))

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        narrowed = await asyncio.to_thread(self.narrow, request)
        return await handler(narrowed)
