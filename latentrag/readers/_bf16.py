"""bf16 matrix products inside an fp32 causal LM (the LM's ``"bf16-mixed"`` precision).

Every linear layer except the attention's query/key/value projections keeps its weight in
bfloat16 and multiplies in bfloat16 (fp32 accumulation, as the CPU's bf16 dot-product instructions do); its
input is rounded to bfloat16 on the way in and its output returned in fp32. Everything between the products
stays fp32: the residual stream, the norms, the attention softmax and the key/value cache. The LM head
multiplies in bf16 too, but recomputes in fp32 each logit that could be the largest, so the token it picks
is the fp32 head's (:class:`Bf16GreedyHead`). The products are where a prompt's time goes, and the fp32 stream
between them keeps far more greedy answers equal to the fp32 model's than casting the whole model does.

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


class Bf16GatedMLP(nn.Module):
    """A gated MLP (``down(act(gate(x)) * up(x))``: Llama, Mistral, Qwen, SmolLM) whose three products are
    :class:`Bf16Linear`, with fewer conversions and the same numbers: the input is rounded to bf16 once for
    both the gate and up products, and the up output (bf16, as every bf16 product's is) is multiplied into the
    fp32 activation as it is read, not copied to fp32 first. Its output equals three separate
    :class:`Bf16Linear`'s exactly (``tests/test_xrag.py``). (Running the activation and the gating product
    in bf16 saved a little more, but cost 2 of 100 same answers on a HotpotQA dev set.)"""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.gate_proj: Bf16Linear = mlp.gate_proj  # type: ignore[assignment]
        self.up_proj: Bf16Linear = mlp.up_proj  # type: ignore[assignment]
        self.down_proj: Bf16Linear = mlp.down_proj  # type: ignore[assignment]
        self.act_fn: nn.Module = mlp.act_fn  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.to(torch.bfloat16)
        hidden = self.act_fn(F.linear(xb, self.gate_proj.weight).float())
        hidden.mul_(F.linear(xb, self.up_proj.weight))  # fp32 times the bf16 up output, converted as it is read
        return F.linear(hidden.to(torch.bfloat16), self.down_proj.weight).to(x.dtype)


def _gated_mlp(module: nn.Module) -> bool:
    """``module`` is a gated MLP of three bias-free :class:`Bf16Linear` with an activation."""
    parts = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return hasattr(module, "act_fn") and all(isinstance(p, Bf16Linear) and p.bias is None for p in parts)


class Bf16GreedyHead(nn.Module):
    """The LM head at bf16's cost with fp32's greedy choice: logits whose argmax is the fp32 head's.

    Reading the head's weight is most of a decoding step's time in a small LM (SmolLM2: 49,152 x 576 fp32,
    113 MB per token). This head multiplies in bf16 (half the bytes), bounds each logit's error from the
    rounding of the input, the weight and the output (``|x . w - bf16(x) . bf16(w)| <= (2u + u^2) |x| |w|``,
    ``u = 2^-8``, Cauchy-Schwarz with the fp32 rows' norms, plus the output's rounding and a margin for the
    fp32 sums), and recomputes in fp32 every logit that could still be the largest: those whose upper bound
    reaches the best lower bound. Every other logit is provably below the fp32 maximum, so the argmax over the
    returned row is the fp32 head's (up to the order of the fp32 sums). The other entries are the bf16
    estimates: these logits serve greedy decoding, not probabilities. Rows beyond :attr:`max_rows` (a whole
    prompt's logits) take the fp32 product, as does a head with a bias.
    """

    max_rows = 16

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = head.in_features, head.out_features
        self.weight = head.weight  # the fp32 head, shared with the fp32 model
        self.bias = head.bias
        self.register_buffer("weight_bf16", head.weight.detach().to(torch.bfloat16), persistent=False)
        self.register_buffer("row_norms", head.weight.detach().float().norm(dim=1), persistent=False)
        u = 2.0**-8
        self.slack = 2 * (2 * u + u * u + self.in_features * 2.0**-24)  # twice the bound, for safety

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.bias is not None or flat.shape[0] > self.max_rows:
            return F.linear(x, self.weight, self.bias)
        flat = flat.float()
        approx = F.linear(flat.to(torch.bfloat16), self.weight_bf16).float()
        bound = (self.slack * flat.norm(dim=1, keepdim=True)) * self.row_norms + 2.0**-7 * approx.abs()
        floor = (approx - bound).max(dim=1, keepdim=True).values
        rows, cols = torch.nonzero(approx + bound >= floor, as_tuple=True)
        approx[rows, cols] = (flat[rows] * self.weight[cols].float()).sum(dim=1)
        return approx.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


#: Names of the attention's input projections across Hugging Face causal LMs (Llama, Mistral, Qwen, Gemma,
#: SmolLM: q/k/v_proj; Phi-3: qkv_proj; Falcon: query_key_value; MPT: Wqkv): these stay fp32.
FP32_PROJECTIONS = frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "Wqkv"})


def bf16_products(model: Any) -> Any:
    """Swap every ``nn.Linear`` of ``model`` for a :class:`Bf16Linear`, in place, except its output embedding
    (the LM head, which becomes a :class:`Bf16GreedyHead`) and the attention's input projections
    (:data:`FP32_PROJECTIONS`), and each gated MLP so built for a :class:`Bf16GatedMLP`; returns ``model``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head and name not in FP32_PROJECTIONS:
                setattr(parent, name, Bf16Linear(child))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _gated_mlp(child):
                setattr(parent, name, Bf16GatedMLP(child))
    if isinstance(head, nn.Linear) and head.bias is None and hasattr(model, "set_output_embeddings"):
        model.set_output_embeddings(Bf16GreedyHead(head))
    return model
