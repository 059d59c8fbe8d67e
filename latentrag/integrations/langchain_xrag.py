"""``XRAGChatModel``: a LangChain chat model on a local frozen LM that reads ``<xrag:KEY>`` passages as soft tokens.

Put :class:`~latentrag.compressors.XRAGCompressor` (through ``LangChainCompressor``) after a retriever:
each document's text becomes a marker, the prompt template formats the documents as usual, and this
model swaps each marker for the passage's projected soft tokens. When the prompt ends with
``Question: ...`` the reader's trained prompt is rebuilt around it. Prompts without markers are
answered as plain chat. ``mode="text"`` reads the passages as text instead (the uncompressed
baseline), ``mode="mixed"`` the first ``text_passages`` marked passages (the best-ranked) as text and the
rest as soft tokens, ``mode="none"`` ignores them.

The prompt is the text of the system and human messages, in order (earlier AI turns are dropped: the
default LM is a 135M model tuned for short answers). When the passages sit in one message (say the
system message) and the question in the last human message, the question is read from there.
``usage_metadata`` counts LM positions, a soft token counting one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from latentrag._optional import require

require("langchain_core", "langchain")

from langchain_core.callbacks import CallbackManagerForLLMRun  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from latentrag.errors import InvalidInputError  # noqa: E402


class XRAGChatModel(BaseChatModel):
    """xRAG on a local frozen LM as a LangChain chat model (see the module docs).

    ``reader`` is an :class:`~latentrag.compressors.XRAGReader` (``None``: the default LM and projector,
    loaded once per process on first use and shared). ``ainvoke``/``astream`` run in a worker thread, so
    the event loop never blocks.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reader: Any = None
    mode: str = "xrag"
    max_new_tokens: int = 32
    #: ``mode="mixed"``: how many of the first (best-ranked) marked passages stay text; None: the reader's default
    text_passages: int | None = None

    @property
    def _llm_type(self) -> str:
        return "latentrag-xrag"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "max_new_tokens": self.max_new_tokens, "text_passages": self.text_passages}

    def _reader(self) -> Any:
        if self.reader is None:
            from latentrag.readers.xrag import default_reader

            self.reader = default_reader()
        return self.reader

    @staticmethod
    def _prompt(messages: list[BaseMessage]) -> str:
        from latentrag.readers.xrag import MARKER_RE, QUESTION_RE

        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if not humans:
            msg = "XRAGChatModel needs a human message holding the question (and the <xrag:KEY> passages)."
            raise InvalidInputError(msg)
        parts = [str(m.text) for m in messages if isinstance(m, (SystemMessage, HumanMessage))]
        last = str(humans[-1].text)
        if len(parts) > 1 and not MARKER_RE.search(last) and not QUESTION_RE.search(last):
            context = "\n\n".join(parts[:-1]) if parts[-1] == last else "\n\n".join(parts)
            return f"{context}\n\nQuestion: {last.strip()}"
        return "\n\n".join(parts)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        answer = self._reader().complete(self._prompt(messages), mode=kwargs.get("mode", self.mode),
                                         max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
                                         text_passages=kwargs.get("text_passages", self.text_passages))
        usage = {"input_tokens": answer.prompt_tokens, "output_tokens": answer.new_tokens,
                 "total_tokens": answer.prompt_tokens + answer.new_tokens}
        message = AIMessage(content=_cut(answer.text, stop), usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text = ""
        for piece in self._reader().stream_complete(self._prompt(messages), mode=kwargs.get("mode", self.mode),
                                                    max_new_tokens=kwargs.get("max_new_tokens",
                                                                              self.max_new_tokens),
                                                    text_passages=kwargs.get("text_passages", self.text_passages)):
            if stop and any(s in text + piece for s in stop):
                piece = _cut(text + piece, stop)[len(text) :]
                if piece:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
                return
            text += piece
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


def _cut(text: str, stop: list[str] | None) -> str:
    for s in stop or []:
        if s in text:
            text = text[: text.index(s)]
    return text
