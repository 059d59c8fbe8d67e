"""Moved to :mod:`latentrag.readers.prompt`; these names stay importable."""

from latentrag.readers.prompt import SLOT, answer_ids, embed_batch, prompt_ids, slot_marker, user_message

__all__ = ["SLOT", "answer_ids", "embed_batch", "prompt_ids", "slot_marker", "user_message"]
