"""Fit the shipped reranker's score (:mod:`latentrag.models.late_interaction`) on labelled candidate lists.

    latentrag train late-interaction [--out DIR] [--max-pairs 3000] [--data DIR]
        [--tune-epochs 2] [--tune-lr 2e-5] [--tune-scale 1.25] [--tune-layers 1]
        [--hold SOURCE,...] [--scan-scales S,...] [--fold-reports FILE,...]

First the last transformer layer of the shipped MiniLM is fine-tuned for MaxSim (``--tune-epochs 0`` skips
it): the five layers below stay frozen, so their output for every text is computed once (cached) and each
step runs one layer. The loss is listwise: per labelled list, up to 8 positives and 24 negatives, a softmax
over ``maxsim / 0.02`` against the gain ``2^label - 1``. The layer starts as the shipped one, so step 0
reproduces the untuned score; AdamW, warm-up then linear decay, seed 0. What is saved is
``shipped + scale * (tuned - shipped)`` (``--tune-scale``, 1.25: chosen on each DL fold, see
``--scan-scales``) as ``last_layer.safetensors`` (fp16), and every later part (cosine, MaxSim) is computed
with it. ``--tune-layers 2`` tunes the top two layers instead (measured: it overfits). ``--hold``
leaves sources out of the tuning and of the mix fit and reports them (a fold; write it to another
``--out``); with ``--scan-scales`` such a run also scores the held sources at each of those scales (the top
layers rerun from their cached inputs, the mix refitted per scale). The fold reports of such runs go into the
shipped config with ``--fold-reports``.

Data: the seven labelled sources of ``latentrag train reranker-fusion`` (TREC DL20 and DL21 BM25 top-100 with
graded qrels, WikiQA and TrecQA train, Vaswani, NovelEval, the multi-hop training questions with their gold
and pool passages), at most ``--max-pairs`` candidate pairs per non-DL source. The shipped MiniLM computes
the token states of every query and candidate once (cached under the latentrag cache folder); from them come
the bi-encoder cosine (mean pooling) and MaxSim, and BM25 comes from the shipped document frequencies.

The mix weights ``a * z(cosine) + b * z(maxsim) + c * z(bm25)`` are a grid search maximising the mean over
sources of nDCG@10 (each source weighted equally, so no single set decides). Selection is leave-one-source-out:
each source is scored with the weights fitted on the other six, and those are the figures reported
(``config.json`` ``report``); the shipped weights are fitted on all seven. SciFact and the outside TREC DL
queries are never used.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentrag.training.multihop import cache_root, data_root
from latentrag.training.reranker import ndcg_at_k

GRID_COSINE = (0.0, 0.5, 1.0)
GRID_MAXSIM = (1.0, 2.0, 3.0, 5.0)
GRID_BM25 = (0.0, 0.1, 0.2, 0.3)
TUNE_TEMPERATURE = 0.02
TUNE_POSITIVES, TUNE_NEGATIVES = 8, 24
#: The saved layer is ``shipped + TUNE_SCALE * (tuned - shipped)``: chosen on each DL fold separately (both
#: picked 1.25 of the scales 0 to 2 scanned; the model card has the figures).
TUNE_SCALE = 1.25


def _cached_rows(path: Path | None, todo: list[str], compute: Callable[[], dict[str, np.ndarray]]
                 ) -> dict[str, np.ndarray]:
    """One (tokens, dim) array per text of ``todo``: from the .npz at ``path`` when it is there, else from
    ``compute()``, then written there atomically (all rows concatenated, with their offsets)."""
    if path is not None and path.exists():
        with np.load(path) as z:
            flat, offsets = z["flat"], z["offsets"]
        return {t: flat[offsets[i] : offsets[i + 1]] for i, t in enumerate(todo)}
    rows = compute()
    if path is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, flat=np.concatenate([rows[t] for t in todo]),
                 offsets=np.cumsum([0, *[len(rows[t]) for t in todo]]))
        tmp.replace(path)
    return rows


def _cache_key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:12]


def cached_states(encoder: Any, texts: Sequence[str], cache: Path | None, salt: str = "") -> dict[str, np.ndarray]:
    """Token states (fp16) of every distinct text, from ``encoder.token_states``, cached as one .npz
    (``salt``: what else decides them, e.g. a hash of the encoder's weight overrides)."""
    todo = sorted(set(texts))

    def compute() -> dict[str, np.ndarray]:
        rows: list[np.ndarray] = []
        for start in tqdm(range(0, len(todo), 512), desc="token states", unit="chunk"):
            rows += [s.astype(np.float16) for s in encoder.token_states(todo[start : start + 512])]
        return dict(zip(todo, rows, strict=True))

    key = _cache_key(encoder.name, str(encoder.path), *([salt] if salt else []), todo)
    return _cached_rows(None if cache is None else cache / f"states-{key}.npz", todo, compute)


def last_layer_inputs(texts: Sequence[str], cache: Path | None, layers: int = 1) -> tuple[Any, dict[str, np.ndarray]]:
    """The shipped MiniLM (Hugging Face ``BertModel``, fp32) and, per distinct text, the input of its top
    ``layers`` layers (fp16, the frozen layers run in bf16), cached as one .npz."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from latentrag.encoders import _shipped_minilm_path

    folder = _shipped_minilm_path()
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    todo = sorted(set(texts))

    def compute() -> dict[str, np.ndarray]:
        tok = AutoTokenizer.from_pretrained(folder)
        body = AutoModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
        lengths = [len(ids) for ids in tok(todo, truncation=True, max_length=256)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        rows: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), 64), desc="last-layer inputs", unit="batch"):
                batch = [todo[i] for i in order[start : start + 64]]
                enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = body(**enc, output_hidden_states=True).hidden_states[-1 - layers]
                hidden = hidden.float().numpy().astype(np.float16)
                for k, (text, n) in enumerate(zip(batch, enc["attention_mask"].sum(1).tolist(), strict=True)):
                    rows[text] = hidden[k, : int(n)]
        return rows

    what = ("last-layer-inputs",) if layers == 1 else ("top-layer-inputs", layers)  # layers=1: the key of old caches
    path = None if cache is None else cache / f"inputs-{_cache_key(*what, folder, todo)}.npz"
    return model, _cached_rows(path, todo, compute)


def top_stack(model: Any, layers: int) -> tuple[Any, Callable[[str], str]]:
    """A copy (fp32) of ``model``'s top ``layers`` layers as one ``ModuleList``, and the map from its
    parameter names ("0.attention...") to their ``BertModel`` names ("encoder.layer.N.attention...")."""
    import copy

    import torch

    first = len(model.encoder.layer) - layers
    stack = torch.nn.ModuleList(copy.deepcopy(model.encoder.layer[first:])).float()

    def bert_name(key: str) -> str:
        i, rest = key.split(".", 1)
        return f"encoder.layer.{first + int(i)}.{rest}"

    return stack, bert_name


def run_stack(stack: Any, inputs: dict[str, np.ndarray], texts: list[str]) -> tuple[Any, Any]:
    """The top layers ``stack`` over the cached inputs of ``texts`` (padded, under bf16 autocast): their
    output states (fp32, padded) and the padding mask."""
    import torch

    xs = [torch.from_numpy(inputs[t].astype(np.float32)) for t in texts]
    x = torch.zeros(len(xs), max(len(v) for v in xs), xs[0].shape[1])
    mask = torch.zeros(x.shape[:2])
    for i, v in enumerate(xs):
        x[i, : len(v)], mask[i, : len(v)] = v, 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for layer in stack:
            out = layer(x, attention_mask=(1.0 - mask[:, None, None, :]) * -1e4)
            x = out[0] if isinstance(out, tuple) else out
    return x.float(), mask


def top_layer_states(model: Any, inputs: dict[str, np.ndarray], tensors: dict[str, np.ndarray],
                     layers: int = 1) -> dict[str, np.ndarray]:
    """Token states of every text in ``inputs`` with the top ``layers`` layers of ``model`` replaced by
    ``tensors`` (``BertModel`` names), computed from the cached inputs: a quick way to score a variant of the
    tuned layers (``--scan-scales``) without running the whole encoder again."""
    import torch

    stack, bert_name = top_stack(model, layers)
    stack.eval()
    own = {bert_name(k): k for k in stack.state_dict()}
    stack.load_state_dict({own[k]: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()})
    todo = sorted(inputs, key=lambda t: len(inputs[t]))
    rows: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(todo), 64):
            batch = todo[start : start + 64]
            states, mask = run_stack(stack, inputs, batch)
            for i, (text, n) in enumerate(zip(batch, mask.sum(1).tolist(), strict=True)):
                rows[text] = states[i, : int(n)].numpy()
    return rows


def tune_last_layer(model: Any, inputs: dict[str, np.ndarray], rows: list[tuple[str, list[str], list[float]]],
                    *, epochs: float, lr: float, seed: int = 0, layers: int = 1) -> dict[str, np.ndarray]:
    """Fine-tune ``model``'s top ``layers`` layers for MaxSim on ``rows`` (see the module docstring;
    ``inputs`` holds the input of the lowest of them); returns their tensors under their ``BertModel`` names."""
    import random

    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = random.Random(seed)
    stack, bert_name = top_stack(model, layers)
    stack.train()

    train = [r for r in rows if any(y > 0 for y in r[2]) and any(y <= 0 for y in r[2])]
    steps = int(epochs * len(train))
    opt = torch.optim.AdamW(stack.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / max(steps, 1)))
    order: list[int] = []
    for _ in tqdm(range(steps), desc="tune last layer", unit="list"):
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        query, texts, labels = train[order.pop()]
        pos = [i for i, y in enumerate(labels) if y > 0]
        neg = [i for i, y in enumerate(labels) if y <= 0]
        pick = rng.sample(pos, min(TUNE_POSITIVES, len(pos))) + rng.sample(neg, min(TUNE_NEGATIVES, len(neg)))
        states, mask = run_stack(stack, inputs, [query, *[texts[i] for i in pick]])
        q = F.normalize(states[0, : int(mask[0].sum())], dim=-1)
        d = F.normalize(states[1:], dim=-1)
        sims = torch.einsum("qh,bth->bqt", q, d) + (mask[1:, None, :] - 1) * 10
        maxsim = sims.max(-1).values.mean(-1)
        gain = 2 ** torch.tensor([float(labels[i]) for i in pick]) - 1
        loss = -(gain / gain.sum() * torch.log_softmax(maxsim / TUNE_TEMPERATURE, 0)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return {bert_name(k): v.detach().float().contiguous().numpy() for k, v in stack.state_dict().items()}


def extrapolate(model: Any, tuned: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """``shipped + scale * (tuned - shipped)`` per tensor (``model``: the shipped ``BertModel``): 1 is the
    tuned layer itself, 0 the shipped one, above 1 a step further along the fine-tuning direction."""
    shipped = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return {k: (shipped[k] + scale * (v - shipped[k])).astype(np.float32) for k, v in tuned.items()}


def list_evidence(states: dict[str, np.ndarray], stats: Any, query: str, texts: list[str]) -> dict[str, np.ndarray]:
    """The three parts of the score for one list, as the reranker computes them."""
    from latentrag.models.late_interaction import maxsim, pooled_cosines

    q, docs = states[query], [states[t] for t in texts]
    return {"cosine": pooled_cosines(q, docs), "maxsim": maxsim(q, docs), "bm25": stats.bm25(query, texts)}


def lists_evidence(states: dict[str, np.ndarray], stats: Any, lists: dict[str, list[tuple[str, list[str], list[float]]]]
                   ) -> dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]]:
    """Per source, each list's evidence and labels."""
    return {s: [(list_evidence(states, stats, q, texts), np.asarray(lab, dtype=np.float32)) for q, texts, lab in rows]
            for s, rows in lists.items()}


def mix_table(data: dict[str, list[tuple[dict[str, np.ndarray], np.ndarray]]], progress: bool = False
              ) -> dict[tuple[float, ...], dict[str, float]]:
    """nDCG@10 per source of every mix on the grid."""
    grid = list(itertools.product(GRID_COSINE, GRID_MAXSIM, GRID_BM25))
    return {g: {s: ndcg(data[s], dict(zip(("cosine", "maxsim", "bm25"), g, strict=True))) for s in data}
            for g in tqdm(grid, desc="grid", unit="mix", disable=not progress)}


def ndcg(rows: list[tuple[dict[str, np.ndarray], np.ndarray]], weights: dict[str, float]) -> float:
    from latentrag.models.late_interaction import LateInteractionScore

    score = LateInteractionScore(weights)
    vals = []
    for ev, labels in rows:
        order = np.argsort(-score.fuse(dict(ev)), kind="stable")
        qrels = {str(j): int(round(float(x))) for j, x in enumerate(labels) if x > 0}
        vals.append(ndcg_at_k([str(j) for j in order], qrels))
    return float(np.mean(vals)) if vals else 0.0


def grid_fit(table: dict[tuple[float, ...], dict[str, float]], sources: list[str]) -> dict[str, float]:
    best = max(table, key=lambda g: (float(np.mean([table[g][s] for s in sources])), -sum(g)))
    return dict(zip(("cosine", "maxsim", "bm25"), best, strict=True))


def main(argv: list[str] | None = None) -> int:
    from latentrag.encoders import default_encoder, shipped_encoder
    from latentrag.models.cross_encoder import SHIPPED_DIR as CROSS_ENCODER_DIR
    from latentrag.models.late_interaction import ENCODER_NAME, SHIPPED_DIR, LateInteractionScore
    from latentrag.models.term_stats import TermStats
    from latentrag.training.rerank_fusion import labelled_lists

    ap = argparse.ArgumentParser(prog="latentrag train late-interaction", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR))
    ap.add_argument("--data", default=None)
    ap.add_argument("--max-pairs", type=int, default=3000)
    ap.add_argument("--tune-epochs", type=float, default=2.0)
    ap.add_argument("--tune-lr", type=float, default=2e-5)
    ap.add_argument("--tune-layers", type=int, default=1, help="how many of the top layers to tune")
    ap.add_argument("--tune-scale", type=float, default=TUNE_SCALE,
                    help="shipped + scale * (tuned - shipped) is saved (1: the tuned layer as trained)")
    ap.add_argument("--scan-scales", default="", help="with --hold: comma-separated --tune-scale values to score "
                    "on the held sources (the top layers rerun from their cached inputs, the mix refitted per value)")
    ap.add_argument("--hold", default="", help="comma-separated sources left out of tuning and fitting")
    ap.add_argument("--fold-reports", default="", help="comma-separated fold-report.json files to record")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    root = data_root(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "term_df.json.gz").is_file():  # the document frequencies `train reranker-fusion` built
        shutil.copyfile(CROSS_ENCODER_DIR / "term_df.json.gz", out / "term_df.json.gz")
    stats = TermStats.load(out / "term_df.json.gz")
    lists = labelled_lists(root, args.max_pairs)
    hold = [h for h in args.hold.split(",") if h]
    unknown = sorted(set(hold) - set(lists))
    if unknown:
        msg = f"--hold names unknown sources {unknown}; the sources are {sorted(lists)}."
        raise SystemExit(msg)
    all_texts = [t for rows in lists.values() for q, texts, _ in rows for t in (q, *texts)]
    cache = cache_root() / "late_interaction"
    cache.mkdir(parents=True, exist_ok=True)
    base_states = cached_states(default_encoder(cache_size=0), all_texts, cache)
    overrides = None
    if args.tune_epochs > 0:
        from safetensors.numpy import save_file

        model, inputs = last_layer_inputs(all_texts, cache, args.tune_layers)
        tuned = tune_last_layer(model, inputs, [r for s, rows in lists.items() if s not in hold for r in rows],
                                epochs=args.tune_epochs, lr=args.tune_lr, layers=args.tune_layers)
        raw = tuned
        tuned = extrapolate(model, raw, args.tune_scale)
        overrides = out / "last_layer.safetensors"
        tmp = overrides.with_suffix(".tmp")
        save_file({k: v.astype(np.float16) for k, v in tuned.items()}, str(tmp))  # read back as fp32
        tmp.chmod(0o644)  # a package file: readable by every user of an installed wheel
        tmp.replace(overrides)
        enc = shipped_encoder(overrides=overrides, name=ENCODER_NAME)
        salt = hashlib.sha1(overrides.read_bytes()).hexdigest()
        states = cached_states(enc, all_texts, cache, salt)
    else:
        states = base_states
    data = lists_evidence(states, stats, lists)
    # the shipped MiniLM's parts: the baselines of the report
    base = data if states is base_states else lists_evidence(base_states, stats, lists)
    sources = [s for s in data if s not in hold]
    table = mix_table(data, progress=True)
    weights = grid_fit(table, sources)
    untuned = {"cosine": 1.0, "maxsim": 3.0, "bm25": 0.1}  # the mix shipped before the tuned layer
    command = (f"latentrag train late-interaction --max-pairs {args.max_pairs} --tune-epochs {args.tune_epochs} "
               f"--tune-lr {args.tune_lr}" + (f" --tune-layers {args.tune_layers}" if args.tune_layers != 1 else "")
               + f" --tune-scale {args.tune_scale}" + (f" --hold {args.hold}" if hold else ""))
    if hold:
        held = {s: {"biencoder": round(ndcg(base[s], {"cosine": 1.0}), 4),
                    "untuned_mix": round(ndcg(base[s], untuned), 4),
                    "tuned_maxsim": round(ndcg(data[s], {"maxsim": 1.0}), 4),
                    "tuned_mix": round(ndcg(data[s], weights), 4)} for s in hold}
        fold: dict[str, Any] = {"hold": hold, "weights": weights, "held_out": held, "command": command}
        if args.scan_scales and overrides is not None:
            fold["scales"] = {}
            for scale in tqdm([float(v) for v in args.scan_scales.split(",")], desc="scales", unit="scale"):
                states_s = top_layer_states(model, inputs, extrapolate(model, raw, scale), args.tune_layers)
                data_s = lists_evidence(states_s, stats, lists)
                w = grid_fit(mix_table(data_s), sources)
                fold["scales"][str(scale)] = {"weights": w, **{
                    s: {"tuned_maxsim": round(ndcg(data_s[s], {"maxsim": 1.0}), 4),
                        "tuned_mix": round(ndcg(data_s[s], w), 4)} for s in hold}}
        fold["seconds"] = round(time.perf_counter() - t0, 1)
        (out / "fold-report.json").write_text(json.dumps(fold, indent=1) + "\n")
        # a score folder of its own (CrossEncoderReranker(out)): what benchmarks/rerank.py scores the held set with
        LateInteractionScore(weights, "term_df.json.gz", {"fold": fold}, None if overrides is None else str(overrides)
                             ).save(out)
        print(json.dumps(fold))
        return 0
    folds, held_out = {}, {}
    for s in sources:
        w = grid_fit(table, [t for t in sources if t != s])
        folds[s] = w
        held_out[s] = {"biencoder": round(ndcg(base[s], {"cosine": 1.0}), 4),
                       "maxsim": round(ndcg(data[s], {"maxsim": 1.0}), 4),
                       "bm25": round(ndcg(data[s], {"bm25": 1.0}), 4),
                       "mix_without_this_source": round(ndcg(data[s], w), 4), "weights": w}
    mean = {k: round(float(np.mean([v[k] for v in held_out.values()])), 4)
            for k in ("biencoder", "maxsim", "mix_without_this_source")}
    report = {"sources": {s: {"lists": len(data[s]), "pairs": int(sum(len(lab) for _, lab in data[s]))}
                          for s in sources},
              "objective": "mean over sources of nDCG@10 (each source weighted equally)",
              "leave_one_source_out": held_out, "mean_held_out": mean, "encoder_path": str(default_encoder().path),
              "seconds": round(time.perf_counter() - t0, 1), "command": command}
    meta: dict[str, Any] = {"folds": folds, "report": report}
    if overrides is not None:
        meta["tuning"] = {"epochs": args.tune_epochs, "lr": args.tune_lr, "layers": args.tune_layers,
                          "scale": args.tune_scale, "temperature": TUNE_TEMPERATURE,
                          "positives": TUNE_POSITIVES, "negatives": TUNE_NEGATIVES, "seed": 0,
                          "folds": [json.loads(Path(f).read_text()) for f in args.fold_reports.split(",") if f]}
    LateInteractionScore(weights, "term_df.json.gz", meta, None if overrides is None else str(overrides)).save(out)
    print(json.dumps({"weights": weights, "mean_held_out": mean, "leave_one_source_out": held_out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
