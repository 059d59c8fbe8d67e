"""Shared helpers for the benchmarks: data location, timing, the one-JSON-line report and plots."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentrag.training.multihop import untitled_store as untitled  # noqa: F401  (re-exported for the benchmarks)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def data_root() -> Path:
    """``$LATENTRAG_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("LATENTRAG_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not root.is_dir():
        sys.exit(f"benchmark data not found at {root}; set LATENTRAG_DATA to the shared data folder.")
    return root


def best_of(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Minimum wall time of ``repeats`` runs of ``fn`` (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def report(name: str, metrics: dict[str, Any], save: bool = True) -> None:
    """Print one JSON line and keep a copy in ``benchmarks/results/<name>.json``."""
    line = json.dumps({"benchmark": name, **metrics, "machine": machine()}, sort_keys=False)
    print(line)
    if save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(line + "\n", encoding="utf-8")


def plot_path(name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}.png"


def sentence_transformers_cross_encoder(reranker: Any) -> Any:
    """``sentence_transformers.CrossEncoder`` on the same weights and tokenizer as a torch
    ``CrossEncoderReranker`` (the baseline of the speed figures)."""
    import tempfile

    from sentence_transformers import CrossEncoder
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        reranker.loaded.model.save_pretrained(tmp)
        # token_type_ids named explicitly: PreTrainedTokenizerFast drops them by default, and the model
        # (trained with segment ids) then scores other pairs (logits off by up to 0.9)
        PreTrainedTokenizerFast(tokenizer_object=reranker.loaded.tokenizer, model_max_length=reranker.max_length,
                                model_input_names=["input_ids", "token_type_ids", "attention_mask"],
                                cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                unk_token="[UNK]", mask_token="[MASK]").save_pretrained(tmp)
        return CrossEncoder(tmp, max_length=reranker.max_length, device="cpu")
