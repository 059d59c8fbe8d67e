"""bf16 matrix products inside an fp32 causal LM (the LM's ``"bf16-mixed"`` precision).

Every linear layer except the LM head and the attention's query/key/value projections keeps its weight in
bfloat16 and multiplies in bfloat16 (fp32 accumulation, as the CPU's bf16 dot-product instructions do); its
input is rounded to bfloat16 on the way in and its output returned in fp32. Everything between the products
stays fp32: the residual stream, the norms, the attention softmax, the key/value cache and the LM head that
picks each greedy token. The products are where a prompt's time goes, and the fp32 stream between them keeps
far more greedy answers equal to the fp32 model's than casting the whole model does.

The query/key/value projections (about 16% of a layer's products in SmolLM2) stay fp32 because they decide
most of the answers that bf16 changes: with every product in bf16, 91 of 100 greedy answers on 2Wiki dev
questions equalled fp32's; with these three kept in fp32, 98 of 100, and 96-98 of 100 on two HotpotQA dev
sets, which were not used to choose them (``benchmarks/lm_precision.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Bf16Linear(nn.Module):
    """``nn.Linear`` with a bfloat16 weight: bf16 product, input and output in the caller's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


#: Names of the attention's input projections across Hugging Face causal LMs (Llama, Mistral, Qwen, Gemma,
#: SmolLM: q/k/v_proj; Phi-3: qkv_proj; Falcon: query_key_value; MPT: Wqkv): these stay fp32.
FP32_PROJECTIONS = frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "Wqkv"})


def bf16_products(model: Any) -> Any:
    """Swap every ``nn.Linear`` of ``model`` for a :class:`Bf16Linear`, in place, except its output embedding
    (the LM head) and the attention's input projections (:data:`FP32_PROJECTIONS`); returns ``model``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head and name not in FP32_PROJECTIONS:
                setattr(parent, name, Bf16Linear(child))
    return model
