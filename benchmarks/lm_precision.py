"""Which of the reader LM's matrix products can run in bf16 without changing its greedy answers.

    python benchmarks/lm_precision.py [--questions 100] [--set dev_2wiki.part0] [--keep none,kv,qkv]

The fp32 ``XRAGReader`` against copies of its LM in which every linear layer but the LM head multiplies in
bf16 (``precision="bf16-mixed"``'s :class:`~latentrag.readers._bf16.Bf16Linear`) except the projections each
variant keeps in fp32 (``none``: every product, bf16-mixed before it kept q/k/v; ``kv``: the key and value
projections; ``qkv``: today's bf16-mixed; ``attn``: q, k, v and o; ``down``: the MLP's down projection;
``ends``: the first and last layer; ``shipped``: ``XRAGReader(precision="bf16-mixed")`` itself, which keeps
q/k/v and runs each gated MLP end to end in bf16, :class:`~latentrag.readers._bf16.Bf16GatedMLP`).
Counts the questions whose greedy answer (5 passages as text, up to 16
new tokens) equals fp32's, on one multi-hop dev set (gold passage plus 4 pool passages), and the time of all
answers against fp32 in the same run.
Prints one JSON line (``results/lm_precision_<set>.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace

from _common import data_root, report

VARIANTS: dict[str, Callable[[int, int, str], bool]] = {  # (layer, layers, name) -> keep in fp32
    "none": lambda i, n, name: False,
    "kv": lambda i, n, name: name in ("k_proj", "v_proj"),
    "qkv": lambda i, n, name: name in ("q_proj", "k_proj", "v_proj"),
    "attn": lambda i, n, name: name in ("q_proj", "k_proj", "v_proj", "o_proj"),
    "down": lambda i, n, name: name == "down_proj",
    "ends": lambda i, n, name: i in (0, n - 1),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--set", default="dev_2wiki.part0", help="a file of data/multihop, without .jsonl")
    ap.add_argument("--keep", default="none,kv,qkv",
                    help=f"variants, comma-separated, of {sorted(VARIANTS)} and 'shipped'")
    args = ap.parse_args()

    from torch import nn

    from latentrag.readers._bf16 import Bf16Linear
    from latentrag.readers.xrag import XRAGReader

    items: list[tuple[str, list[str]]] = []
    for line in (data_root() / "multihop" / f"{args.set}.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        ps = [f"{p.get('title') or ''}: {p['text']}" for p in (*r["gold"][:1], *r.get("pool", [])[:4])]
        if len(ps) == 5:
            items.append((r["question"], ps))
        if len(items) == args.questions:
            break
    ref = XRAGReader(precision="fp32")
    layers = ref.lm.model.model.layers
    readers = {}
    for key in args.keep.split(","):
        if key == "shipped":
            readers[key] = XRAGReader(precision="bf16-mixed", encoder=ref.encoder)
            continue
        model = copy.deepcopy(ref.lm.model)
        for i, layer in enumerate(model.model.layers):
            for parent in list(layer.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear) and not VARIANTS[key](i, len(layers), name):
                        setattr(parent, name, Bf16Linear(child))
        readers[key] = XRAGReader(lm=replace(ref.lm, model=model), encoder=ref.encoder)
    same = dict.fromkeys(readers, 0)
    spent = dict.fromkeys(["fp32", *readers], 0.0)
    for q, ps in items:
        t0 = time.perf_counter()
        want = ref.answer(q, ps, mode="text", max_new_tokens=16)
        spent["fp32"] += time.perf_counter() - t0
        for key, reader in readers.items():
            t0 = time.perf_counter()
            same[key] += reader.answer(q, ps, mode="text", max_new_tokens=16) == want
            spent[key] += time.perf_counter() - t0
    report(f"lm_precision_{args.set}", {
        "set": args.set, "questions": len(items), "variants": list(readers),
        "same_greedy_answers": {k: f"{v}/{len(items)}" for k, v in same.items()},
        "answer_time_ratio_fp32_to_variant": {k: round(spent["fp32"] / spent[k], 2) for k in readers}})


if __name__ == "__main__":
    main()
