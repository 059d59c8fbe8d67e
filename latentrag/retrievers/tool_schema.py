"""Tool-schema normalisation: every accepted tool form becomes one :class:`ToolSpec`.

Accepted forms (mixed freely in one list):

- OpenAI function schemas, wrapped ``{"type": "function", "function": {...}}`` or bare
  ``{"name", "description", "parameters"}``;
- MCP tool dicts ``{"name", "description", "inputSchema"}``;
- LangChain ``BaseTool`` objects (duck typed: ``name``, ``description``, ``args_schema``/``tool_call_schema``;
  converted with LangChain's own converter in :mod:`latentrag.integrations.tool_params`);
- LlamaIndex ``FunctionTool``/``BaseTool`` objects (duck typed: a ``metadata`` with ``name``, ``description``
  and ``get_parameters_dict()``).

Nothing here imports a framework at module import, and nothing ever calls a tool.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from latentrag.errors import InvalidInputError
from latentrag.validate import check_id, check_json_value, check_str

#: Longest description kept for embedding (characters); schemas keep the full text.
_EMBED_DESC_CHARS = 1000


@dataclass
class ToolSpec:
    """One tool in a neutral form: a stable ``name`` (its id), ``description``, JSON-schema ``parameters``,
    the ``kind`` of input it came from, and the original object ``tool`` (returned by ``select``)."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    kind: str = "openai"
    tool: Any = None

    @property
    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI function-calling form ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def embed_text(self) -> str:
        """The text embedded for description retrieval: readable name, description and parameter names."""
        desc = self.description.strip()[:_EMBED_DESC_CHARS]
        params = _param_names(self.parameters)
        text = f"{humanize_name(self.name)}: {desc}" if desc else humanize_name(self.name)
        if params:
            text += f" (parameters: {', '.join(params[:12])})"
        return text


def humanize_name(name: str) -> str:
    """``"os.path_join"`` / ``"getWeatherForecast"`` -> ``"os path join"`` / ``"get weather forecast"``."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    text = re.sub(r"[^0-9A-Za-z]+", " ", text)
    return " ".join(text.lower().split())


def _param_names(parameters: dict[str, Any]) -> list[str]:
    props = parameters.get("properties") if isinstance(parameters, dict) else None
    return [humanize_name(str(p)) for p in props] if isinstance(props, dict) else []


def _describe(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


def _from_mapping(obj: dict[str, Any], index: int) -> ToolSpec:
    kind = "openai"
    body: Any = obj
    wrapped = isinstance(obj.get("function"), dict) and (obj.get("type") == "function" or "name" not in obj)
    if wrapped:
        body = obj["function"]
    if "inputSchema" in body or "input_schema" in body:
        kind = "mcp"
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        msg = (
            f"tools[{index}] has no usable 'name' (got {name!r}) in {_describe(obj)}; every tool needs a non-empty "
            "string name, e.g. {'type': 'function', 'function': {'name': 'get_weather', 'description': ...}}."
        )
        raise InvalidInputError(msg)
    desc = body.get("description") or ""
    if not isinstance(desc, str):
        msg = f"tools[{index}] ({name!r}) has a non-string description of type {type(desc).__name__}; pass text."
        raise InvalidInputError(msg)
    params = body.get("parameters")
    if params is None:
        params = body.get("inputSchema", body.get("input_schema"))
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        msg = f"tools[{index}] ({name!r}) has parameters of type {type(params).__name__}; pass a JSON-schema dict."
        raise InvalidInputError(msg)
    return ToolSpec(name=name.strip(), description=desc, parameters=copy.deepcopy(params), kind=kind, tool=obj)


def _from_llama_index(obj: Any, index: int) -> ToolSpec:
    meta = obj.metadata
    name = getattr(meta, "name", None)
    if not isinstance(name, str) or not name.strip():
        msg = f"tools[{index}] is a LlamaIndex tool without a name ({_describe(obj)}); set ToolMetadata(name=...)."
        raise InvalidInputError(msg)
    try:
        params = meta.get_parameters_dict()
    except Exception:  # noqa: BLE001 - a broken fn_schema should not hide the tool; its description still works
        params = {"type": "object", "properties": {}}
    return ToolSpec(name=name, description=str(getattr(meta, "description", "") or ""), parameters=params,
                    kind="llama_index", tool=obj)


def _from_langchain(obj: Any, index: int) -> ToolSpec:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.strip():
        msg = f"tools[{index}] is a LangChain tool without a name ({_describe(obj)}); give the tool a name."
        raise InvalidInputError(msg)
    from latentrag.integrations.tool_params import tool_parameters

    converted = tool_parameters(obj)
    params: dict[str, Any] = converted or {"type": "object", "properties": {}}
    if converted is None:  # an exotic schema: fall back to the pydantic schema
        schema = getattr(obj, "args_schema", None)
        if isinstance(schema, dict):
            params = schema
        elif schema is not None and hasattr(schema, "model_json_schema"):
            params = schema.model_json_schema()
    return ToolSpec(name=name, description=str(getattr(obj, "description", "") or ""), parameters=params,
                    kind="langchain", tool=obj)


def normalize_tool(obj: Any, index: int = 0) -> ToolSpec:
    """One tool in any accepted form -> :class:`ToolSpec`. ``index`` only improves error messages."""
    if isinstance(obj, ToolSpec):
        return obj
    if isinstance(obj, dict):
        return _from_mapping(obj, index)
    meta = getattr(obj, "metadata", None)
    if meta is not None and hasattr(meta, "name") and hasattr(meta, "get_parameters_dict"):
        return _from_llama_index(obj, index)
    if hasattr(obj, "name") and hasattr(obj, "description") and (
        hasattr(obj, "args_schema") or hasattr(obj, "tool_call_schema")
    ):
        return _from_langchain(obj, index)
    msg = (
        f"tools[{index}] has an unsupported type {type(obj).__name__} ({_describe(obj)}); pass an OpenAI function "
        "schema dict, an MCP tool dict (name, description, inputSchema), a LangChain BaseTool or a LlamaIndex tool."
    )
    raise InvalidInputError(msg)


def _checked(spec: ToolSpec, index: int) -> ToolSpec:
    """Validate a spec at the door, so that every tool accepted can be saved and loaded unchanged: a
    storable name and description, and parameters that are a JSON schema (tuples become lists)."""
    check_id(f"tools[{index}] name", spec.name)
    check_str(f"tools[{index}] description", spec.description)
    try:
        params = json.loads(json.dumps(spec.parameters, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:  # circular, NaN, or not JSON at all
        msg = (
            f"tools[{index}] ({spec.name!r}) has parameters that are not a JSON schema ({exc}); give a plain "
            "JSON-serialisable dict without self-references."
        )
        raise InvalidInputError(msg) from None
    spec.parameters = check_json_value(f"tools[{index}] parameters", params)
    return spec


def normalize_tools(tools: Any, *, allow_empty: bool = False) -> list[ToolSpec]:
    """Normalise a list of tools, rejecting a non-list, an empty list and duplicate names."""
    if isinstance(tools, (str, bytes, dict)) or not hasattr(tools, "__iter__"):
        msg = f"tools must be a list of tools, got {type(tools).__name__} ({_describe(tools)}); wrap it in a list."
        raise InvalidInputError(msg)
    specs = [_checked(normalize_tool(t, i), i) for i, t in enumerate(tools)]
    if not specs and not allow_empty:
        msg = "tools is empty; pass at least one tool (an OpenAI/MCP schema dict, LangChain or LlamaIndex tool)."
        raise InvalidInputError(msg)
    seen: dict[str, int] = {}
    for i, s in enumerate(specs):
        if s.name in seen:
            msg = (
                f"duplicate tool name {s.name!r} at tools[{seen[s.name]}] and tools[{i}]; tool names are ids and "
                "must be unique. Rename one of them or drop the duplicate."
            )
            raise InvalidInputError(msg)
        seen[s.name] = i
    return specs
