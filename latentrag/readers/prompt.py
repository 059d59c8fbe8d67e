"""Prompts with soft-token slots for xRAG, shared by the reader and the trainer.

A prompt is rendered with the LM's chat template; each document becomes either its text (``text`` mode)
or ``k`` placeholder positions (``xrag`` mode), written as token id ``-1``. :func:`embed_batch` left-pads
a batch of such id rows and scatters the projected soft tokens into the placeholder positions with one
boolean mask (row-major order = occurrence order), so batches of any size work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Id used for a soft-token slot before the embeddings are scattered in.
SLOT = -1
_MARK = "\u2063XRAGSLOT\u2063"
INSTRUCTION = "Answer the question using the background. Reply with a short answer only."
NO_CONTEXT_INSTRUCTION = "Answer the question. Reply with a short answer only."


def slot_marker() -> str:
    """The in-text stand-in for one passage's soft tokens; :func:`prompt_ids` turns it into ``SLOT`` ids."""
    return _MARK


def user_message(question: str, passages: Sequence[str] | None, n_soft_docs: int = 0) -> str:
    """The user turn: passages as text, ``n_soft_docs`` slot markers, or neither (no context)."""
    if passages or n_soft_docs:
        docs = [p.strip() for p in passages] if passages else [_MARK] * n_soft_docs
        background = "\n\n".join(docs)
        return f"{INSTRUCTION}\n\nBackground:\n{background}\n\nQuestion: {question.strip()}"
    return f"{NO_CONTEXT_INSTRUCTION}\n\nQuestion: {question.strip()}"


def prompt_ids(tokenizer: Any, user: str, tokens_per_doc: int = 1) -> list[int]:
    """Token ids of the chat prompt for ``user`` (ending with the assistant header), slot markers as ``SLOT``."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    pieces = text.split(_MARK)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([SLOT] * tokens_per_doc)
        ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Ids of an assistant answer followed by the end-of-turn token."""
    return tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [int(tokenizer.eos_token_id)]


def embed_batch(
    embed_tokens: Any, rows: Sequence[Sequence[int]], soft: torch.Tensor | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad ``rows`` and build ``(inputs_embeds, attention_mask, position_ids)``.

    ``soft`` has shape (number of SLOT ids in all rows, H), in row-major occurrence order.
    Shapes: (batch, width, H), (batch, width), (batch, width).
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    slots = ids == SLOT
    n_slots = int(slots.sum())
    emb = embed_tokens(ids.clamp_min(0))
    if n_slots:
        if soft is None or soft.shape[0] != n_slots:
            got = None if soft is None else tuple(soft.shape)
            msg = f"the prompts hold {n_slots} soft-token slots but {got} soft tokens were given."
            raise ValueError(msg)
        emb = emb.masked_scatter(slots.unsqueeze(-1), soft.to(emb.dtype))
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return emb, mask, positions


def lookup_draft(seq: Sequence[int], limit: int, longest: int = 3) -> list[int]:
    """Up to ``limit`` tokens the text itself suggests will come next (prompt lookup): the tokens that followed
    the latest earlier occurrence of ``seq``'s last ``n`` tokens, for the longest ``n`` (``longest`` down to 1)
    that occurs earlier, cut at the first soft-token slot. Empty when nothing matches or ``limit`` is 0."""
    if limit <= 0:
        return []
    for n in range(min(longest, len(seq) - 1), 0, -1):
        tail = list(seq[-n:])
        first = tail[0]
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start] == first and list(seq[start : start + n]) == tail:
                follow = list(seq[start + n : start + n + limit])
                return follow[: follow.index(SLOT)] if SLOT in follow else follow
    return []


def template_prefixes(tokenizer: Any) -> list[list[int]]:
    """The ids that every prompt of a kind begins with (the chat template's system turn and the instruction):
    one list for prompts with a background, as text or soft tokens, one for prompts without. Each stops one
    token before the first place where two prompts of its kind differ, so a merge across that boundary never
    lands inside it; a prompt still reuses one only where its own ids start with it."""
    out = []
    for probes in ([user_message("Why?", ["x."]), user_message("How?", ["y."]), user_message("Why?", None, 1)],
                   [user_message("Why?", None), user_message("How?", None)]):
        rows = [prompt_ids(tokenizer, p) for p in probes]
        n = 0
        while all(len(r) > n and r[n] == rows[0][n] for r in rows):
            n += 1
        if n > 1:
            out.append(rows[0][: n - 1])
    return out
