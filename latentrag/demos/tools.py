"""Demo section: pick the right tools for a request out of a few hundred real function schemas.

The toolbox is built on the spot from the Python standard library that every user has: each public
function of a set of modules becomes an OpenAI function schema (name, the first paragraph of its
docstring, and its parameters from ``inspect.signature``). Nothing is downloaded or shipped.
"""

from __future__ import annotations

import importlib
import inspect
import time
from typing import Any, TextIO

from latentrag.retrievers.tools import ToolRetriever

MODULES = (
    "math", "cmath", "statistics", "textwrap", "os.path", "shutil", "json", "re", "difflib", "hashlib",
    "base64", "urllib.parse", "zlib", "gzip", "calendar", "heapq", "bisect", "html", "unicodedata", "ipaddress",
    "uuid", "secrets", "glob", "fnmatch", "binascii", "platform", "random",
)

#: A few real usage examples: with them the tool's vector also knows how people ask for it (Tool2Vec).
EXAMPLES = [
    ("How many ways can I pick 3 people out of 10?", ["math_comb"]),
    ("number of combinations of 5 cards from a 52-card deck", ["math_comb"]),
    ("Make a password reset token I can put in a link", ["secrets_token_urlsafe"]),
    ("generate an unguessable session id for a URL", ["secrets_token_urlsafe"]),
    ("Is 10.0.0.300 a real IP address?", ["ipaddress_ip_address"]),
    ("check that this string is a valid IPv4 or IPv6 address", ["ipaddress_ip_address"]),
    ("Free space left on the disk?", ["shutil_disk_usage"]),
    ("how full is my hard drive", ["shutil_disk_usage"]),
    ("the 5 biggest orders from this list", ["heapq_nlargest"]),
    ("top 10 highest scores", ["heapq_nlargest"]),
    ("which operating system is this running on", ["platform_system"]),
    ("are we on Windows or Linux?", ["platform_system"]),
]
REQUESTS = [
    "Show the three largest invoices",
    "Is the server running macOS?",
    "In how many ways can a committee of 4 be chosen from 12 members?",
    "Give me a secure random token for an invite link",
    "Is 2028 a leap year?",
]


def _schema(name: str, fn: Any) -> dict[str, Any] | None:
    doc = inspect.getdoc(fn)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if not doc:
        return None
    props: dict[str, Any] = {}
    required = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        props[p.name] = {"type": "string", "description": f"argument {p.name}"}
        if p.default is p.empty:
            required.append(p.name)
    description = doc.split("\n\n")[0].replace("\n", " ").strip()
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": required}}}


def stdlib_tools(modules: tuple[str, ...] = MODULES) -> list[dict[str, Any]]:
    """OpenAI function schemas for the public, documented functions of ``modules``."""
    tools, seen = [], set()
    for mod_name in modules:
        mod = importlib.import_module(mod_name)
        for attr in sorted(dir(mod)):
            fn = getattr(mod, attr)
            if attr.startswith("_") or not (inspect.isfunction(fn) or inspect.isbuiltin(fn) or inspect.ismethod(fn)):
                continue
            name = f"{mod_name.replace('.', '_')}_{attr}"
            schema = _schema(name, fn)
            if schema is not None and name not in seen:
                seen.add(name)
                tools.append(schema)
    return tools


def run(store: Any, out: TextIO) -> None:
    """``store`` is unused: the toolbox is its own index. One retriever answers twice: from the tool
    descriptions alone, then with the usage examples added (the same index ``from_tools(tools,
    examples=EXAMPLES)`` builds, without encoding every description a second time)."""
    tools = stdlib_tools()
    t0 = time.perf_counter()
    retriever = ToolRetriever.from_tools(tools, k=3)
    build_s = time.perf_counter() - t0
    plain = {q: [h.id for h in retriever.retrieve(q)] for q in REQUESTS}
    t0 = time.perf_counter()
    retriever.add_examples(EXAMPLES)
    examples_ms = (time.perf_counter() - t0) * 1000
    print(f"\n== Tool selection (ToolRetriever: {len(tools)} standard-library functions as OpenAI schemas, "
          f"{len(EXAMPLES)} usage examples, k=3; indexed in {build_s:.1f} s, examples added in "
          f"{examples_ms:.0f} ms) ==", file=out)
    for q in REQUESTS:
        t0 = time.perf_counter()
        hits = retriever.retrieve(q)
        ms = (time.perf_counter() - t0) * 1000
        offered = ", ".join(f"{h.id} (p_needed {h.meta['p_needed']:.2f})" for h in retriever.offer(hits))
        print(f"  {q!r}\n    descriptions only:   {plain[q]}\n"
              f"    with usage examples: {[h.id for h in hits]}  [{ms:.1f} ms, no LLM call]\n"
              f"    select() offers:     {offered}", file=out)
