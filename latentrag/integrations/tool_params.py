"""The OpenAI function parameters of a LangChain tool, by LangChain's own converter. Kept in
``integrations/`` so the framework-free core (``retrievers/tool_schema.py``) never imports LangChain; the core
calls :func:`tool_parameters` only for objects that already are LangChain tools."""

from __future__ import annotations

from typing import Any


def tool_parameters(tool: Any) -> dict[str, Any] | None:
    """``convert_to_openai_tool(tool)``'s parameters, or ``None`` when langchain-core cannot convert it."""
    try:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        params = convert_to_openai_tool(tool)["function"].get("parameters")
    except Exception:  # langchain-core missing or an exotic schema: the caller falls back to the pydantic schema
        return None
    return params if isinstance(params, dict) else None
