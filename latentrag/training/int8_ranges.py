"""Calibrate the input ranges of the shipped reranker's int8 encoder: ``latentrag train int8-ranges``.

Static int8 needs, for each linear layer of the MiniLM, the range its input is quantized over. This runs the
late-interaction score's MiniLM (the shipped weights with its fine-tuned last layer) in fp32 under torch over
calibration text, takes each layer's minimum and maximum input over the real (unpadded) tokens of every
batch, and averages them over the batches (the mean of per-batch extremes: a rare outlier widens one batch's
range, not the whole range). The result, one ``(low, high)`` per layer, is written as a safetensors file
beside the score and named in its ``config.json`` (``encoder_int8_ranges``), which
:class:`~latentrag.openvino_encoder.OpenVinoMiniLMEncoder` reads for ``precision="int8"``.

Calibration text: the queries and passages of the first ``--rows`` rows of
``rerank/pairs/msmarco_toy_triples.tsv`` (MS MARCO passages, not TREC DL's judged lists or any set the score is
evaluated on), in length-sorted batches of at most 32 texts and 4,096 tokens.

    latentrag train int8-ranges [--score DIR] [--data ROOT] [--rows 600]

The shipped ranges were written by the default command; ``benchmarks/speed.py`` measures their speed and
nDCG@10 against fp32, ``benchmarks/rerank.py`` their quality on every set (the model card has the figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentrag.training.multihop import data_root

RANGES_FILE = "int8_ranges.safetensors"
CALIBRATION_SET = "rerank/pairs/msmarco_toy_triples.tsv"


def calibration_texts(root: Path, rows: int) -> list[str]:
    """Each new query, then its passage, of the first ``rows`` rows of the calibration set."""
    path = root / CALIBRATION_SET
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        texts: list[str] = []
        seen: set[str] = set()
        for i, row in enumerate(reader):
            if i >= rows:
                break
            if row["query"] not in seen:
                seen.add(row["query"])
                texts.append(row["query"])
            texts.append(row["passage"])
    return texts


def measure_ranges(overrides: str | None, texts: Sequence[str], batch_size: int = 32,
                   max_batch_tokens: int = 4096) -> dict[str, tuple[float, float]]:
    """The mean over batches of each encoder linear layer's minimum and maximum input (unpadded tokens only),
    by ``BertModel`` module name, for the shipped MiniLM with ``overrides`` applied, in fp32."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from latentrag.encoders import _shipped_minilm_path, override_module, pad_encodings, plan_batches

    folder = Path(_shipped_minilm_path())
    body = AutoModel.from_pretrained(str(folder), attn_implementation="sdpa").eval()
    override_module(body, overrides)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.no_padding()
    encs = tok.encode_batch(list(texts))
    seen: dict[str, list[tuple[float, float]]] = {}
    real = torch.zeros(0, dtype=torch.bool)  # the batch's unpadded tokens, read by the hooks

    def hook(name: str):  # noqa: ANN202 - a torch forward pre-hook
        def record(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0][real]
            seen.setdefault(name, []).append((float(x.min()), float(x.max())))
        return record

    layers = {f"encoder.{n}": m for n, m in body.encoder.named_modules() if isinstance(m, torch.nn.Linear)}
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.inference_mode():
            for idx in plan_batches([len(e.ids) for e in encs], batch_size, max_batch_tokens, 0.05):
                ids, mask = (torch.from_numpy(a) for a in pad_encodings([encs[i] for i in idx]))
                real = mask.bool()
                body(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return {n: (float(np.mean([lo for lo, _ in v])), float(np.mean([hi for _, hi in v]))) for n, v in seen.items()}


def save_ranges(ranges: dict[str, tuple[float, float]], path: Path) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: np.asarray(v, dtype=np.float32) for k, v in ranges.items()}, str(tmp))
    tmp.chmod(0o644)  # a package file: readable by every user of an installed wheel
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    from latentrag.models.late_interaction import SHIPPED_DIR, LateInteractionScore

    ap = argparse.ArgumentParser(prog="latentrag train int8-ranges", description=__doc__.split("\n")[0])
    ap.add_argument("--score", default=str(SHIPPED_DIR), help="the late-interaction score folder to calibrate")
    ap.add_argument("--data", default=None)
    ap.add_argument("--rows", type=int, default=600, help="rows of the calibration set to read")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    score = LateInteractionScore.load(args.score)
    texts = calibration_texts(data_root(args.data), args.rows)
    ranges = measure_ranges(score.overrides, texts)
    out = Path(args.score) / RANGES_FILE
    save_ranges(ranges, out)
    score.int8_ranges = str(out)
    command = "latentrag train int8-ranges" + ("" if Path(args.score) == SHIPPED_DIR else f" --score {args.score}")
    score.meta["int8_calibration"] = {"command": f"{command} --rows {args.rows}",
                                      "set": CALIBRATION_SET, "texts": len(texts), "layers": len(ranges)}
    score.save(args.score)
    print(json.dumps({"layers": len(ranges), "texts": len(texts), "out": str(out),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
