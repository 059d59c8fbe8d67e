"""``LlamaIndexToolRetriever``: a :class:`~latentrag.retrievers.tools.ToolRetriever` as a LlamaIndex
``ObjectRetriever``, so agents accept it as ``tool_retriever``.

Node ids are the tool names (stable across processes, unlike LlamaIndex's ``hash()``-based ids), the
objects returned are the original tools, and ``aretrieve`` runs the retrieval in a worker thread.
"""

from __future__ import annotations

from typing import Any

from latentrag._optional import require

require("llama_index.core", "llama-index")

from llama_index.core.objects.base import ObjectRetriever  # noqa: E402
from llama_index.core.schema import QueryBundle  # noqa: E402

from latentrag.integrations.llama_index import LlamaIndexRetriever  # noqa: E402


class _ToolNodeMapping:
    """Node -> tool by the node id (the tool name)."""

    def __init__(self, tools: Any) -> None:
        self.tools = tools

    def from_node(self, node: Any) -> Any:
        return self.tools.get_tool(node.node_id)


class LlamaIndexToolRetriever(ObjectRetriever):
    """Retrieve the best ``k`` tools (the original tool objects) for a query.

    >>> # agent = FunctionAgent(tool_retriever=LlamaIndexToolRetriever(tool_retriever, k=3), llm=llm)
    """

    def __init__(self, tool_retriever: Any, k: int | None = None, node_postprocessors: list[Any] | None = None) -> None:
        mapping: Any = _ToolNodeMapping(tool_retriever)
        super().__init__(LlamaIndexRetriever(tool_retriever, k=k), mapping, node_postprocessors=node_postprocessors)
        self.tool_retriever = tool_retriever

    async def aretrieve(self, str_or_query_bundle: Any) -> list[Any]:
        qb = str_or_query_bundle
        if isinstance(qb, str):
            qb = QueryBundle(query_str=qb)
        nodes = await self._retriever.aretrieve(qb)
        for pp in self._node_postprocessors:
            nodes = await pp.apostprocess_nodes(nodes, query_bundle=qb)
        return [self._object_node_mapping.from_node(n.node) for n in nodes]
