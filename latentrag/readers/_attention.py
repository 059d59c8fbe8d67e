"""Causal attention for a single prompt's prefill that starts after stored positions or writes a static cache.

transformers runs SDPA with ``is_causal=True`` (its kernel skips the key blocks above the diagonal) only when
the prompt's queries cover every key. The reader's prefill does not: the template's opening comes from stored
states (:meth:`~latentrag.readers.xrag.XRAGReader._reuse_prefix`) and a static cache holds room for the answer,
so transformers passes an explicit mask and the kernel computes every block, masked ones included. For one
unpadded prompt the mask is plain causal, so :func:`causal_prefill` lets attention run the square causal kernel
instead: zero queries stand in for the stored positions (their output rows are dropped) and the keys are cut at
the prompt's end. Same result; on the shipped LM's 5-passage text prompts attention is about a quarter of the
prefill in bf16-mixed, and the causal kernel does it about 1.3x faster.

Registered with transformers' attention interface as :data:`IMPLEMENTATION`; every call outside a
:func:`causal_prefill` block (decoding steps, batches, other callers of the model) is transformers' own SDPA.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

#: The name this attention is registered under (a model opts in with :func:`install`).
IMPLEMENTATION = "latentrag_causal_prefill"
_plan: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("latentrag_prefill", default=None)


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = _plan.get()
    if plan is not None:
        start, width = plan
        if query.shape[0] == 1 and query.shape[2] == width - start > 1 and key.shape[2] >= width:
            import torch

            if start:  # stand-ins for the stored positions: causal, so they change no real row
                query = torch.cat([query.new_zeros(1, query.shape[1], start, query.shape[3]), query], dim=2)
            out, weights = sdpa_attention_forward(module, query, key[:, :, :width], value[:, :, :width], None,
                                                  **{**kwargs, "is_causal": True})
            return out[:, start:], weights  # (batch, positions, heads, head size)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def install(model: Any) -> bool:
    """Switch ``model`` (a transformers causal LM on SDPA attention, no sliding window) to this attention; returns
    whether it did. Models on other attention, older transformers, or with a sliding window are left as they are."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", False):
        return False
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:  # transformers < 4.48 has no attention interface
        return False
    AttentionInterface.register(IMPLEMENTATION, _attention)
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # masks as SDPA's
    for sub in model.modules():  # transformers sets one config object per (sub)model
        sub_config = getattr(sub, "config", None)
        if sub_config is not None and getattr(sub_config, "_attn_implementation", None) == "sdpa":
            sub_config._attn_implementation = IMPLEMENTATION
    return True


def installed(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == IMPLEMENTATION


@contextlib.contextmanager
def causal_prefill(start: int, width: int) -> Iterator[None]:
    """Within this block, one unpadded prompt's prefill of positions ``start..width-1`` (the earlier ones already
    in the cache) runs causal attention over keys ``0..width-1``."""
    token = _plan.set((start, width))
    try:
        yield
    finally:
        _plan.reset(token)
