"""``LlamaIndexToolRetriever``: a :class:`~latentrag.retrievers.tools.ToolRetriever` as a LlamaIndex
``ObjectRetriever``, so agents accept it as ``tool_retriever``.

Node ids are the tool names (stable across processes, unlike LlamaIndex's ``hash()``-based ids), the
objects returned are the original tools, and ``aretrieve`` runs the retrieval in a worker thread.

Recent turns, as :class:`~latentrag.integrations.langchain_tools.ToolSelectionMiddleware` does: a
LlamaIndex agent asks its tool retriever with the latest user message only, so a follow-up ("and
tomorrow?") would lose the tool of the turn before. With ``keep_turns`` > 0 (default: the tool retriever's
own ``keep_turns``) the tools picked for the last ``keep_turns`` earlier user messages are kept after the
current ones. The earlier messages come from ``memory`` (the agent's ``ChatMemoryBuffer``/``Memory``, the
same one passed to ``agent.run(..., memory=memory)``) or, without it, from the requests this object saw,
which suits one conversation per object (:meth:`LlamaIndexToolRetriever.reset` starts a new one).

An agent also looks a tool up by its name before calling it (``get_tools(tool_name)``): a request that is
exactly a tool's name returns that tool alone and is not taken for a user turn.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from latentrag._optional import require

require("llama_index.core", "llama-index")

from llama_index.core.objects.base import ObjectRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle  # noqa: E402

from latentrag.errors import InvalidInputError  # noqa: E402
from latentrag.integrations.llama_index import LlamaIndexRetriever, hit_to_node  # noqa: E402
from latentrag.stores.base import restore_thread_bound, split_thread_bound  # noqa: E402
from latentrag.validate import short  # noqa: E402

#: At most this many earlier requests are remembered without ``memory``.
MAX_REMEMBERED = 32


class _ToolNodeMapping:
    """Node -> tool by the node id (the tool name)."""

    def __init__(self, tools: Any) -> None:
        self.tools = tools

    def from_node(self, node: Any) -> Any:
        return self.tools.get_tool(node.node_id)


def _user_texts(messages: Any) -> list[str]:
    out = []
    for m in messages or []:
        role = getattr(getattr(m, "role", None), "value", getattr(m, "role", None))
        text = getattr(m, "content", None)
        if role == "user" and isinstance(text, str) and text.strip():
            out.append(text)
    return out


class LlamaIndexToolRetriever(ObjectRetriever):
    """Retrieve the best ``k`` tools (the original tool objects) for a query, following recent turns.

    >>> # agent = FunctionAgent(tool_retriever=LlamaIndexToolRetriever(tool_retriever, k=3), llm=llm)

    Args:
        tool_retriever: a :class:`~latentrag.retrievers.tools.ToolRetriever`.
        k: tools per turn (``similarity_top_k`` is the LlamaIndex spelling); ``None``: the retriever's ``k``.
        node_postprocessors: LlamaIndex postprocessors run over the tool nodes.
        keep_turns: earlier user turns whose tools are kept (``None``: the tool retriever's ``keep_turns``).
        memory: the agent's chat memory, read for the earlier user turns (see the module docs).
    """

    def __init__(self, tool_retriever: Any, k: int | None = None, node_postprocessors: list[Any] | None = None, *,
                 keep_turns: int | None = None, memory: Any = None, similarity_top_k: int | None = None) -> None:
        if not all(callable(getattr(tool_retriever, m, None)) for m in ("retrieve", "retrieve_batch", "get_tool")):
            msg = (f"tool_retriever must be a latentrag ToolRetriever, got {type(tool_retriever).__name__} "
                   f"({short(tool_retriever)}); build one with ToolRetriever.from_tools(tools).")
            raise InvalidInputError(msg)
        if keep_turns is not None and (isinstance(keep_turns, bool) or not isinstance(keep_turns, int)
                                       or keep_turns < 0):
            msg = f"keep_turns must be an integer >= 0 or None, got {keep_turns!r}."
            raise InvalidInputError(msg)
        if memory is not None and not callable(getattr(memory, "get_all", None)):
            msg = f"memory must be a LlamaIndex chat memory (with get_all()), got {type(memory).__name__}."
            raise InvalidInputError(msg)
        mapping: Any = _ToolNodeMapping(tool_retriever)
        inner = LlamaIndexRetriever(tool_retriever, k=k, similarity_top_k=similarity_top_k)
        super().__init__(inner, mapping, node_postprocessors=node_postprocessors)
        self._inner = inner
        self.tool_retriever = tool_retriever
        self.keep_turns = keep_turns
        self.memory = memory
        self._seen: deque[str] = deque(maxlen=MAX_REMEMBERED)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"LlamaIndexToolRetriever({self.tool_retriever!r}, k={self._inner.k}, "
                f"keep_turns={self.keep_turns}, memory={'yes' if self.memory is not None else 'no'})")

    def __getstate__(self) -> dict[str, Any]:
        return split_thread_bound(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore_thread_bound(self, state)

    @property
    def turns_kept(self) -> int:
        """How many earlier user turns are followed."""
        keep = getattr(self.tool_retriever, "keep_turns", 0) if self.keep_turns is None else self.keep_turns
        return int(keep or 0)

    def reset(self) -> None:
        """Forget the requests seen so far (a new conversation, when no ``memory`` is given)."""
        with self._lock:
            self._seen.clear()

    def history(self, query: str, messages: Any = None) -> list[str]:
        """The earlier user turns for ``query``, oldest first (at most ``turns_kept``)."""
        keep = self.turns_kept
        if not keep:
            return []
        if self.memory is not None:
            turns = _user_texts(messages if messages is not None else self.memory.get_all())
        else:
            with self._lock:
                turns = list(self._seen)
        while turns and turns[-1] == query:  # the current message, already in memory (or asked again)
            turns.pop()
        return turns[-keep:]

    def _remember(self, query: str) -> None:
        if self.memory is None:
            with self._lock:
                if not self._seen or self._seen[-1] != query:
                    self._seen.append(query)

    def _bundle(self, str_or_query_bundle: Any) -> QueryBundle:
        return QueryBundle(query_str=str_or_query_bundle) if isinstance(str_or_query_bundle, str) \
            else str_or_query_bundle

    def _by_name(self, query: str) -> list[Any] | None:
        """The tool itself when ``query`` is exactly a tool's name (the agent's look-up before a call); no
        tools for a blank request (an agent run without a user message)."""
        if not query.strip():
            return []
        if query in self.tool_retriever:
            return [self.tool_retriever.get_tool(query)]
        return None

    def _with_turns(self, nodes: list[NodeWithScore], earlier: list[str]) -> list[NodeWithScore]:
        """The current turn's tools (as many as it needs when the retriever counts adaptively), then those of
        the earlier turns followed."""
        count = getattr(self.tool_retriever, "offer_count", None)
        if count is not None:
            nodes = nodes[: count([n.node.metadata for n in nodes], self._inner.k)]
        if not earlier:
            return nodes
        offer = getattr(self.tool_retriever, "offer", lambda hits, k: list(hits[:k]))
        have = {n.node.node_id for n in nodes}
        for hits in reversed(self.tool_retriever.retrieve_batch(earlier, self._inner.k)):
            for h in offer(hits, self._inner.k):
                if h.id not in have:
                    have.add(h.id)
                    nodes.append(hit_to_node(h))
        return nodes

    def retrieve(self, str_or_query_bundle: Any) -> list[Any]:
        qb = self._bundle(str_or_query_bundle)
        named = self._by_name(qb.query_str)
        if named is not None:
            return named
        earlier = self.history(qb.query_str)
        nodes = self._with_turns(self._retriever.retrieve(qb), earlier)
        for pp in self._node_postprocessors:
            nodes = pp.postprocess_nodes(nodes, query_bundle=qb)
        self._remember(qb.query_str)
        return [self._object_node_mapping.from_node(n.node) for n in nodes]

    async def aretrieve(self, str_or_query_bundle: Any) -> list[Any]:
        qb = self._bundle(str_or_query_bundle)
        named = self._by_name(qb.query_str)
        if named is not None:
            return named
        messages = None
        if self.memory is not None and self.turns_kept and callable(getattr(self.memory, "aget_all", None)):
            messages = await self.memory.aget_all()
        earlier = self.history(qb.query_str, messages)
        nodes = await self._retriever.aretrieve(qb)
        nodes = await asyncio.to_thread(self._with_turns, nodes, earlier)
        for pp in self._node_postprocessors:
            nodes = await pp.apostprocess_nodes(nodes, query_bundle=qb)
        self._remember(qb.query_str)
        return [self._object_node_mapping.from_node(n.node) for n in nodes]
