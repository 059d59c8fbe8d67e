"""``ToolSelectionMiddleware``: LangChain 1.x agent middleware that narrows ``request.tools`` to the few
tools a :class:`~latentrag.retrievers.tools.ToolRetriever` picks for the latest user message.

It only ever *removes* tools from the request: every tool it keeps was registered with the agent
(``create_agent(tools=...)``), so the agent can always execute the model's calls. Tools that the
retriever knows but the agent does not are skipped; provider tool dicts pass through untouched.

It reports what it offered on every model call, in two places: a ``latentrag.tools_offered`` custom event
(``astream_events`` and callbacks see it: the tool names, the request text and the turns followed) and the
agent state field ``offered_tools`` (the names of the latest call; it is in the model node's update, so a
LangSmith trace shows it, and in the agent's output).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, NotRequired

from latentrag._optional import require

require("langchain", "langchain")

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest  # noqa: E402
from langchain.agents.middleware.types import OmitFromInput  # noqa: E402
from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402

from latentrag.errors import InvalidInputError, check_positive_int  # noqa: E402
from latentrag.validate import short  # noqa: E402

try:  # langchain >= 1.1: a model-call wrapper may return a state update with the response
    from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
    from langgraph.types import Command
except ImportError:  # pragma: no cover - older langchain 1.0: the event alone reports the tools offered
    ExtendedModelResponse = None  # type: ignore[assignment,misc]

#: The custom event dispatched on every model call.
EVENT = "latentrag.tools_offered"


class ToolSelectionState(AgentState[Any]):
    """The agent state with ``offered_tools``: the tool names offered to the latest model call."""

    offered_tools: NotRequired[Annotated[list[str], OmitFromInput]]


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

    state_schema = ToolSelectionState

    def __init__(self, retriever: Any, max_tools: int = 5, always_include: Sequence[str] = (),
                 keep_turns: int | None = None) -> None:
        super().__init__()
        if not all(callable(getattr(retriever, m, None)) for m in ("retrieve", "retrieve_batch", "select_hits")):
            msg = (f"retriever must be a latentrag ToolRetriever (retrieve, retrieve_batch and select_hits), got "
                   f"{type(retriever).__name__} ({short(retriever)}); build one with ToolRetriever.from_tools(tools).")
            raise InvalidInputError(msg)
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

    def __repr__(self) -> str:
        return (f"ToolSelectionMiddleware({self.retriever!r}, max_tools={self.max_tools}, "
                f"always_include={self.always_include!r}, keep_turns={self.keep_turns})")

    def select_names(self, messages: Sequence[Any]) -> list[str] | None:
        """Tool names for the conversation (``None`` when there is no user message to select on)."""
        hits = self.select_hits(messages)
        return None if hits is None else [h.id for h in hits]

    def select_hits(self, messages: Sequence[Any]) -> list[Any] | None:
        """The ranked tool hits offered for the conversation: the latest user turn's, then those of the
        earlier turns followed; as many as each turn needs, at most ``max_tools`` per turn, when the
        retriever counts adaptively (``ToolRetriever.offer``). ``None`` without a user message."""
        turns = [_text(m) for m in messages if isinstance(m, HumanMessage) and _text(m).strip()]
        if not turns:
            return None
        return list(self.retriever.select_hits(turns[-1], self.max_tools, history=turns[:-1],
                                               keep_turns=self.keep_turns))

    def narrow(self, request: ModelRequest) -> ModelRequest:
        """The request with ``tools`` narrowed to the selection (plus ``always_include``)."""
        return self._narrow(request)[0]

    def _narrow(self, request: ModelRequest) -> tuple[ModelRequest, list[Any]]:
        tools = list(request.tools or [])
        base = {t.name: t for t in tools if not isinstance(t, dict)}
        missing = [n for n in self.always_include if n not in base]
        if missing:
            msg = (f"always_include names tools the agent does not have: {missing}; register them with "
                   f"create_agent(tools=...) first. Agent tools: {sorted(base)[:20]}.")
            raise InvalidInputError(msg)
        hits = self.select_hits(request.messages)
        if hits is None or not base:
            return request, []
        chosen = [base[h.id] for h in hits if h.id in base and h.id not in self.always_include]
        chosen += [base[n] for n in self.always_include]
        provider = [t for t in tools if isinstance(t, dict)]
        return request.override(tools=[*chosen, *provider]), [h for h in hits if h.id in base]

    def report(self, request: ModelRequest, narrowed: ModelRequest, hits: Sequence[Any] = ()) -> dict[str, Any]:
        """What the event carries: the tools offered (in order), why (each selected tool's score and, when the
        retriever counts adaptively, ``p_needed``, its calibrated probability of being needed), how many the
        agent has, the request text and the earlier turns the selection followed."""
        turns = [_text(m) for m in request.messages if isinstance(m, HumanMessage) and _text(m).strip()]
        keep = self.retriever.keep_turns if self.keep_turns is None else self.keep_turns
        return {
            "offered": [_tool_name(t) for t in narrowed.tools or []],
            "scores": {h.id: {"score": round(float(h.score), 4),
                              **({"p_needed": h.meta["p_needed"]} if "p_needed" in h.meta else {})} for h in hits},
            "n_available": len(request.tools or []),
            "query": turns[-1] if turns else None,
            "followed_turns": turns[-1 - keep : -1] if keep and len(turns) > 1 else [],
            "always_include": list(self.always_include),
        }

    def _respond(self, response: Any, report: dict[str, Any]) -> Any:
        if ExtendedModelResponse is None:
            return response
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        if isinstance(response, ExtendedModelResponse):  # keep an inner command; ours adds the field
            return response
        return ExtendedModelResponse(model_response=response, command=Command(update={"offered_tools":
                                                                                      report["offered"]}))

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        narrowed, hits = self._narrow(request)
        report = self.report(request, narrowed, hits)
        with contextlib.suppress(RuntimeError):  # outside a LangChain run there is no trace for the event
            dispatch_custom_event(EVENT, report)
        return self._respond(handler(narrowed), report)

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        narrowed, hits = await asyncio.to_thread(self._narrow, request)
        report = self.report(request, narrowed, hits)
        with contextlib.suppress(RuntimeError):
            await adispatch_custom_event(EVENT, report)
        return self._respond(await handler(narrowed), report)


def _tool_name(tool: Any) -> str:
    if isinstance(tool, dict):
        fn = tool.get("function")
        return str(fn.get("name") if isinstance(fn, dict) else tool.get("name", tool.get("type", "?")))
    return str(getattr(tool, "name", type(tool).__name__))
