"""``XRAGLLM``: a LlamaIndex ``CustomLLM`` on a local frozen LM that reads ``<xrag:KEY>`` passages as soft tokens.

Use it with ``LlamaIndexPostprocessor(compressor=XRAGCompressor())`` in a ``RetrieverQueryEngine``:
the postprocessor turns each node's text into a marker, the response synthesizer formats the
context as usual, and this LLM swaps each marker for the passage's soft tokens (the query after
``Query:`` rebuilds the reader's trained prompt). ``mode="text"`` reads the passages as text,
``mode="mixed"`` the first ``text_passages`` marked passages as text and the rest as soft tokens, ``mode="none"``
ignores them. Use ``response_mode="compact"`` (the default) so one call sees all passages.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from latentrag._optional import require

require("llama_index.core", "llama-index")

from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402


class XRAGLLM(CustomLLM):
    """xRAG on a local frozen LM as a LlamaIndex LLM (``reader=None``: the default LM and projector,
    loaded once per process on first use and shared)."""

    mode: str = Field(default="xrag", description="xrag | text | mixed | none")
    max_new_tokens: int = Field(default=32, description="tokens generated at most")
    text_passages: int | None = Field(default=None, description="mixed mode: best-ranked passages kept as text")
    _reader: Any = PrivateAttr(default=None)

    def __init__(self, reader: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reader = reader

    @classmethod
    def class_name(cls) -> str:
        return "LatentRagXRAGLLM"

    def reader(self) -> Any:
        if self._reader is None:
            from latentrag.readers.xrag import default_reader

            self._reader = default_reader()
        return self._reader

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=self.max_new_tokens, is_chat_model=False,
                           model_name=f"xrag:{self.reader().lm.name}")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = self.reader().complete(prompt, mode=kwargs.get("mode", self.mode),
                                        max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
                                        text_passages=kwargs.get("text_passages", self.text_passages))
        return CompletionResponse(text=answer.text, additional_kwargs={
            "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.new_tokens})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> Generator[CompletionResponse, None, None]:
        text = ""
        for piece in self.reader().stream_complete(prompt, mode=kwargs.get("mode", self.mode),
                                                   max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
                                                   text_passages=kwargs.get("text_passages", self.text_passages)):
            text += piece
            yield CompletionResponse(text=text, delta=piece)
