"""xRAG as a compressor: :class:`XRAGCompressor` attaches each hit's retrieval embedding (reused from the
store when present) and replaces the text by a short marker, ``<xrag:KEY>``. An xRAG-aware LLM (the
LangChain chat model or the LlamaIndex LLM in ``latentrag.integrations``, both reading through an
:class:`~latentrag.readers.xrag.XRAGReader`) swaps each marker it meets in a prompt for the soft tokens, so
the compressor fits unchanged into ``ContextualCompressionRetriever`` or ``RetrieverQueryEngine``. Markers
are content-addressed keys into a bounded registry (:mod:`latentrag.readers.registry`) that compressor
and reader share.

The reader itself lives in :mod:`latentrag.readers`; its names stay importable from here.
"""

from __future__ import annotations

from latentrag.compressors.base import BaseCompressor
from latentrag.encoders import Encoder, default_encoder, load_encoder
from latentrag.errors import check_positive_int
from latentrag.models.projector import shipped_tokens_per_doc
from latentrag.readers.registry import MARKER_RE, REGISTRY, SoftContextRegistry, marker, split_markers
from latentrag.readers.xrag import (
    MODES,
    QUESTION_RE,
    Answer,
    XRAGReader,
    check_passages,
    default_reader,
    passage_inputs,
    passage_vectors,
)
from latentrag.tokens import count_tokens
from latentrag.types import Hit

__all__ = [
    "MARKER_RE", "MODES", "QUESTION_RE", "REGISTRY", "Answer", "SoftContextRegistry", "XRAGCompressor", "XRAGReader",
    "check_passages", "default_reader", "passage_inputs", "passage_vectors", "split_markers",
]


class XRAGCompressor(BaseCompressor):
    """Turn each hit into a ``<xrag:KEY>`` marker that an xRAG-aware LLM swaps for soft tokens.

    The hit's retrieval embedding (reused from the store when the hit carries it, else encoded) goes
    into the in-process :data:`REGISTRY` under a content key and onto ``hit.vector``; the text becomes
    the marker (``replace_text=False`` keeps the text and only registers). ``metadata`` gains
    ``xrag_key``, ``original_text``, ``xrag_tokens`` (LM positions the passage will take) and
    ``text_tokens`` (tiktoken count of the text it replaces). These keys are listed in
    ``llm_hidden_keys``, so the LlamaIndex adapter keeps them out of LLM prompts.
    """

    llm_hidden_keys = ("xrag_key", "original_text", "xrag_tokens", "text_tokens")

    def __init__(self, encoder: Encoder | str | None = None, *, tokens_per_doc: int | None = None,
                 replace_text: bool = True, registry: SoftContextRegistry | None = None) -> None:
        self.encoder = default_encoder() if encoder is None else load_encoder(encoder)
        if tokens_per_doc is None:  # the shipped projector's (only recorded in the metadata)
            tokens_per_doc = shipped_tokens_per_doc()
        self.tokens_per_doc = check_positive_int("tokens_per_doc", tokens_per_doc)
        self.replace_text = replace_text
        self.registry = REGISTRY if registry is None else registry

    def _compress(self, query: str, hits: list[Hit]) -> list[Hit]:
        out = []
        for h, vec in zip(hits, passage_vectors(hits, self.encoder), strict=True):
            key = self.registry.put(vec, h.text)
            meta = {**h.meta, "xrag_key": key, "original_text": h.text, "xrag_tokens": self.tokens_per_doc,
                    "text_tokens": count_tokens(h.text)}
            out.append(h.copy(text=marker(key) if self.replace_text else h.text, metadata=meta, vector=vec))
        return out
