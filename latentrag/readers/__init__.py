"""Readers: answering from retrieved passages with a frozen local LM (:class:`XRAGReader`), the LM loader
(:mod:`latentrag.readers.lm`), the prompt format (:mod:`latentrag.readers.prompt`) and the marker registry
(:mod:`latentrag.readers.registry`). Names load lazily, so importing this package imports no torch."""

from __future__ import annotations

from latentrag._lazy import lazy_exports

_LAZY = {
    "XRAGReader": "latentrag.readers.xrag:XRAGReader",
    "Answer": "latentrag.readers.xrag:Answer",
    "default_reader": "latentrag.readers.xrag:default_reader",
    "load_lm": "latentrag.readers.lm:load_lm",
    "LanguageModel": "latentrag.readers.lm:LanguageModel",
    "SoftContextRegistry": "latentrag.readers.registry:SoftContextRegistry",
    "REGISTRY": "latentrag.readers.registry:REGISTRY",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, _LAZY, __all__)
