"""Moved to :mod:`latentrag.readers.lm`; this name stays importable."""

from latentrag.readers.lm import DEFAULT_LM_NAME, LanguageModel, cache_dir, load_lm

__all__ = ["DEFAULT_LM_NAME", "LanguageModel", "cache_dir", "load_lm"]
