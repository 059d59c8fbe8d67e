"""Context compression on dev QA with gold passages (single-passage questions from the shared multi-hop dev sets).

    python benchmarks/compression.py [--n 200] [--projector DIR ...] [--skip-xrag] [--plot]

1. TokenBudgetCompressor: each question gets its gold passage plus up to 4 of its example's other
   passages (other hops, distractors), shuffled; at 25% and 50% of the input's tiktoken count, the
   share of questions whose answer string survives ("evidence retention"), for the embedding and
   lexical scorers and for head truncation of every passage to the same share (the baseline).
2. XRAGReader on the gold passage: substring accuracy in ``none``, ``text`` and ``xrag`` modes (one
   ``xrag`` row per projector given), over all questions and over the open ones (answer not yes/no:
   those need the passage), prompt tokens, total latency, and time to the first token with 5
   passages (the gold one plus 4 others; ``max_new_tokens=1``), as ratios against ``text``. Every time to
   first token includes embedding the passages.
3. Mixed reading (``--mixed-n`` questions; ``--only-mixed`` runs this alone into ``compression_mixed.json``):
   the gold passage and up to 4 or 9 pool passages ranked by the shipped encoder as a retriever would,
   read in ``none``, ``text``, ``xrag`` and ``mixed`` mode with 1 and 2 text passages: accuracy, prompt
   tokens and time to first token, as ratios against ``text``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import numpy as np
from _common import data_root, plot_path, report

from latentrag.training.multihop import expand_paths
from latentrag.training.xrag import QA, contains_answer, single_passage_qa


def dev_qa(n: int, seed: int = 0) -> list[QA]:
    root = data_root() / "multihop"
    qas = single_passage_qa(expand_paths([str(root / "dev_*.jsonl")]))
    random.Random(seed).shuffle(qas)
    return qas[:n]


def contexts(qas: list[QA], seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for q in qas:
        docs = [q.passage, *q.distractors[:4]]
        rng.shuffle(docs)
        out.append(docs)
    return out


def token_budget(qas: list[QA]) -> dict[str, Any]:
    from latentrag import Hit
    from latentrag.compressors import TokenBudgetCompressor
    from latentrag.tokens import get_encoding

    enc = get_encoding("cl100k_base")
    ctxs = contexts(qas)
    res: dict[str, Any] = {}
    for ratio in (0.25, 0.5):
        row: dict[str, Any] = {}
        kept = []
        for q, docs in zip(qas, ctxs, strict=True):
            cut = [enc.decode(enc.encode_ordinary(d)[: max(1, int(len(enc.encode_ordinary(d)) * ratio))]) for d in docs]
            kept.append(contains_answer(" ".join(cut), q.answer))
        row["head_truncation"] = {"retention": round(float(np.mean(kept)), 4)}
        for scorer in ("embedding", "lexical"):
            comp = TokenBudgetCompressor(ratio=ratio, scorer=scorer)
            kept, ms, ratios = [], [], []
            for q, docs in zip(qas, ctxs, strict=True):
                hits = [Hit(f"d{i}", d) for i, d in enumerate(docs)]
                t0 = time.perf_counter()
                out = comp.compress(q.question, hits)
                ms.append((time.perf_counter() - t0) * 1000)
                kept.append(contains_answer(" ".join(h.text for h in out), q.answer))
                total_in = sum(len(enc.encode_ordinary(d)) for d in docs)
                ratios.append(sum(h.meta["kept_tokens"] for h in out) / total_in)
            row[scorer] = {"retention": round(float(np.mean(kept)), 4), "ms": round(float(np.median(ms)), 2),
                           "kept_ratio": round(float(np.mean(ratios)), 4)}
            row[scorer]["retention_vs_head"] = round(row[scorer]["retention"] / max(row["head_truncation"]["retention"],
                                                                                   1e-9), 3)
        res[f"{int(ratio * 100)}%"] = row
    return res


def _is_open(q: QA) -> bool:
    """A question whose answer is not yes/no (those need the passage: the held-out kind)."""
    return q.answer.strip().lower() not in {"yes", "no"}


def _mode_row(reader: Any, qas: list[QA], ctxs: list[list[str]], mode: str, n_ttft: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    answers = reader.answer_batch([q.question for q in qas], [[q.passage] for q in qas], mode=mode,
                                  max_new_tokens=16, batch_size=8)
    total_ms = (time.perf_counter() - t0) * 1000 / len(qas)
    hits = [contains_answer(a.text, q.answer) for a, q in zip(answers, qas, strict=True)]
    open_hits = [h for h, q in zip(hits, qas, strict=True) if _is_open(q)]
    return {"accuracy": round(float(np.mean(hits)), 4),
            "accuracy_open": round(float(np.mean(open_hits)), 4),
            "prompt_tokens_1doc": round(float(np.mean([a.prompt_tokens for a in answers])), 1),
            "prompt_tokens_5docs": reader.prompt_tokens(qas[0].question, ctxs[0], mode),
            "ms_per_question_batched": round(total_ms, 1),
            "ttft_ms_5docs": _ttft(reader, qas, ctxs, mode, n_ttft)}


def _ttft(reader: Any, qas: list[QA], ctxs: list[list[str]], mode: str, n: int) -> float:
    """Median time to the first token with 5 passages, one question at a time, over the first ``n``: after
    one untimed warm-up call, and with the encoder's embedding cache emptied before each call (the passages
    are embedded every time, as new passages would be)."""
    reader.answer_batch([qas[0].question], [ctxs[0]], mode=mode, max_new_tokens=1)
    cache = getattr(reader.encoder, "cache", None)
    ttft = []
    for q, docs in list(zip(qas, ctxs, strict=True))[:n]:
        if cache is not None:
            cache.clear()
        t0 = time.perf_counter()
        reader.answer_batch([q.question], [docs], mode=mode, max_new_tokens=1)
        ttft.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(ttft)), 1)


def xrag(qas: list[QA], projectors: list[str | None], n_ttft: int = 20) -> dict[str, Any]:
    """``none`` and ``text`` once (they do not use the projector), then ``xrag`` for each projector."""
    from latentrag.compressors import XRAGReader

    ctxs = contexts(qas)
    readers = [XRAGReader(projector=proj) for proj in projectors]
    rows: dict[str, Any] = {mode: _mode_row(readers[0], qas, ctxs, mode, n_ttft) for mode in ("text", "none")}
    rows["n_open"] = sum(map(_is_open, qas))
    for proj, reader in zip(projectors, readers, strict=True):
        name = f"xrag k={reader.tokens_per_doc}" + (f" chunks={reader.projector.chunks}" if reader.projector.chunks
                                                     else "") + ("" if proj is None else f" ({proj})")
        rows[name] = _mode_row(reader, qas, ctxs, "xrag", n_ttft)
    for name, row in rows.items():
        if isinstance(row, dict) and name != "text":
            row["ttft_speedup_vs_text"] = round(rows["text"]["ttft_ms_5docs"] / row["ttft_ms_5docs"], 2)
            for acc in ("accuracy", "accuracy_open"):
                row[f"{acc}_vs_text"] = round(row[acc] / max(rows["text"][acc], 1e-9), 3)
    return rows


def ranked_contexts(qas: list[QA], n: int, encoder: Any) -> list[list[str]]:
    """The gold passage and up to ``n - 1`` of its question's pool passages, ranked by the shipped encoder's
    cosine to the question (as a retriever would hand them over; the gold passage is not always first)."""
    out = []
    for q in qas:
        docs = [q.passage, *q.distractors[: n - 1]]
        vecs = encoder.encode(docs)
        order = np.argsort(-(vecs @ encoder.encode([q.question])[0]), kind="stable")
        out.append([docs[i] for i in order])
    return out


def mixed(qas: list[QA], sizes: tuple[int, ...] = (5, 10), n_ttft: int = 10) -> dict[str, Any]:
    """Mixed reading against text, xrag and none with ``sizes`` ranked passages: accuracy, mean prompt tokens
    and median time to first token (one question at a time, embedding cache emptied, as in ``_ttft``)."""
    from latentrag.compressors import XRAGReader

    reader = XRAGReader()
    arms = {"none": ("none", None), "text": ("text", None), "xrag": ("xrag", None),
            "mixed, 1 text passage": ("mixed", 1), "mixed, 2 text passages": ("mixed", 2)}
    out: dict[str, Any] = {}
    for size in sizes:
        ctxs = ranked_contexts(qas, size, reader.encoder)
        gold_first = float(np.mean([c[0] == q.passage for c, q in zip(ctxs, qas, strict=True)]))
        rows: dict[str, Any] = {"mean_passages": round(float(np.mean([len(c) for c in ctxs])), 2),
                                "gold_ranked_first": round(gold_first, 3)}
        for name, (mode, n_text) in arms.items():
            answers = reader.answer_batch([q.question for q in qas], ctxs, mode=mode, max_new_tokens=16,
                                          batch_size=4, text_passages=n_text)
            hits = [contains_answer(a.text, q.answer) for a, q in zip(answers, qas, strict=True)]
            reader.answer_batch([qas[0].question], [ctxs[0]], mode=mode, max_new_tokens=1, text_passages=n_text)
            ttft = []
            for q, docs in list(zip(qas, ctxs, strict=True))[:n_ttft]:
                if getattr(reader.encoder, "cache", None) is not None:
                    reader.encoder.cache.clear()
                t0 = time.perf_counter()
                reader.answer_batch([q.question], [docs], mode=mode, max_new_tokens=1, text_passages=n_text)
                ttft.append((time.perf_counter() - t0) * 1000)
            rows[name] = {"accuracy": round(float(np.mean(hits)), 4),
                          "prompt_tokens": round(float(np.mean([a.prompt_tokens for a in answers])), 1),
                          "ttft_ms": round(float(np.median(ttft)), 1)}
        for name in arms:
            if name != "text":
                rows[name]["accuracy_vs_text"] = round(rows[name]["accuracy"] / max(rows["text"]["accuracy"], 1e-9), 3)
                rows[name]["ttft_speedup_vs_text"] = round(rows["text"]["ttft_ms"] / rows[name]["ttft_ms"], 2)
        out[f"{size}_passages"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--projector", nargs="*", default=None,
                    help="projector folders, 'default' for the shipped default (the default: only that one)")
    ap.add_argument("--skip-xrag", action="store_true")
    ap.add_argument("--mixed-n", type=int, default=100, help="questions for the mixed-reading section (0: skip)")
    ap.add_argument("--only-mixed", action="store_true", help="run only the mixed-reading section")
    ap.add_argument("--name", default="compression")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    qas = dev_qa(args.n)
    if args.only_mixed:
        report(f"{args.name}_mixed", {"n_questions": min(args.mixed_n, len(qas)),
                                      "mixed": mixed(qas[: args.mixed_n])})
        return
    metrics: dict[str, Any] = {"n_questions": len(qas), "token_budget": token_budget(qas)}
    if not args.skip_xrag:
        metrics["xrag"] = xrag(qas, [None if p == "default" else p for p in args.projector or ["default"]])
    if args.mixed_n:
        metrics["mixed"] = mixed(qas[: args.mixed_n])
    report(args.name, metrics)
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2 if "xrag" in metrics else 1, figsize=(10, 4), squeeze=False)
        tb = metrics["token_budget"]
        for i, budget in enumerate(tb):
            kinds = list(tb[budget])
            axes[0][0].bar([f"{k}\n{budget}" for k in kinds], [tb[budget][k]["retention"] for k in kinds],
                           color=f"C{i}")
        axes[0][0].set_ylabel("answer retention")
        if "xrag" in metrics:
            rows = {k: v for k, v in metrics["xrag"].items() if isinstance(v, dict)}
            for i, (name, row) in enumerate(rows.items()):
                axes[0][1].scatter([row["ttft_ms_5docs"]], [row["accuracy_open"]], label=name, color=f"C{i}")
            axes[0][1].set_xlabel("time to first token, 5 passages (ms)")
            axes[0][1].set_ylabel("accuracy (open questions: not yes/no)")
            axes[0][1].legend()
        for ax in axes[0]:
            ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        fig.savefig(plot_path(args.name), dpi=120)


if __name__ == "__main__":
    main()
