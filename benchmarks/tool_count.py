"""How many tools ``ToolRetriever.select()`` offers: the calibrated count (``adaptive_count=True``, the default)
against a fixed ``k`` (1, 3 and 5) in the same run, on the four shared tool sets (the splits of
``benchmarks/tools.py``: 50% usage examples, 25% dev, 25% test).

    python benchmarks/tool_count.py [--fit] [--plot] [--seed 0]

Per set and request kind (single-tool requests, the set's own multi-tool requests, and two single-tool requests
joined by a connective, as in ``benchmarks/tools.py``), on the test split: the mean number of tools offered, the
recall of the gold tools among them (the share of a request's tools the agent gets), precision, F2, and how often
every gold tool is offered. The retriever is ``ToolRetriever.from_tools(tools, examples=..., k=5)``.

``--fit`` refits the count model (:mod:`latentrag.models.tool_count`) on the dev splits only: a logistic model of
"this ranked tool is needed" over the scale-free features of the top five, by Newton's method, and the
probability threshold that maximises the mean F2 of the offered sets over the four sets' request kinds. Before
the final fit on all four sets, each set is left out in turn (model and threshold fitted on the other three sets'
dev) and scored on its test split; that report is kept in the weights file. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from _common import plot_path, report
from tools import SETS, composed, split

from latentrag.models.tool_count import FEATURES, WEIGHTS_PATH, WIDTH, ToolCount, count_features, shipped_count
from latentrag.retrievers.tools import ToolRetriever

KINDS = ("single", "multi", "composed")
FIXED = (1, 3, 5)
BETA = 2.0
#: One ranked request: its gold tools, the ranked ids and scores (top WIDTH) and the number of detected parts.
Ranked = tuple[list[str], list[str], np.ndarray, int]


def rank(r: ToolRetriever, queries: list[tuple[str, list[str]]]) -> list[Ranked]:
    out: list[Ranked] = []
    for i in range(0, len(queries), 64):
        chunk = queries[i : i + 64]
        for (_, gold), hits in zip(chunk, r.retrieve_batch([q for q, _ in chunk], WIDTH), strict=True):
            out.append((gold, [h.id for h in hits], np.array([h.score for h in hits]),
                        int(hits[0].metadata["intents"]) if hits else 0))
    return out


def collect(seed: int) -> dict[str, dict[str, dict[str, list[Ranked]]]]:
    """Per set, split (dev/test) and request kind, the default retriever's ranked lists."""
    data: dict[str, dict[str, dict[str, list[Ranked]]]] = {}
    for name, load in SETS.items():
        t0 = time.perf_counter()
        tools, queries = load()
        examples, dev, test = split(queries, seed)
        r = ToolRetriever.from_tools(tools, examples=examples, k=WIDTH)
        data[name] = {}
        for split_name, part in (("dev", dev), ("test", test)):
            kinds = {"single": [(q, g) for q, g in part if len(g) == 1],
                     "multi": [(q, g) for q, g in part if len(g) > 1], "composed": composed(part, seed)}
            data[name][split_name] = {kind: rank(r, qs) for kind, qs in kinds.items() if qs}
        print(f"{name}: ranked in {time.perf_counter() - t0:.0f} s", flush=True)
    return data


def scores_of(rows: list[Ranked], count: Any) -> dict[str, float]:
    """Mean offered count, recall, precision, F2 and all-found rate; ``count(row) -> n`` picks the count."""
    n, rec, prec, fb, full = [], [], [], [], []
    for row in rows:
        gold, ids = row[0], row[1]
        c = count(row)
        hit = len(set(ids[:c]) & set(gold))
        r_, p_ = hit / len(gold), hit / max(c, 1)
        n.append(c)
        rec.append(r_)
        prec.append(p_)
        fb.append(0.0 if hit == 0 else (1 + BETA**2) * r_ * p_ / (BETA**2 * p_ + r_))
        full.append(float(hit == len(gold)))
    return {"offered": round(float(np.mean(n)), 3), "recall": round(float(np.mean(rec)), 4),
            "precision": round(float(np.mean(prec)), 4), "F2": round(float(np.mean(fb)), 4),
            "all_gold_offered": round(float(np.mean(full)), 4)}


def adaptive(model: ToolCount, k: int = WIDTH) -> Any:
    return lambda row: model.count(model.probabilities(row[2], row[3]), row[3], k)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (a few features, thousands of rows)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def fit(data: dict[str, Any], sets: list[str]) -> ToolCount:
    """Model on the dev lists of ``sets``, then the threshold with the best mean F2 over their request kinds."""
    feats, labels = [], []
    for s in sets:
        for rows in data[s]["dev"].values():
            for gold, ids, scores, parts in rows:
                f = count_features(scores, parts)
                feats.append(f)
                labels.append([t in gold for t in ids[: len(f)]])
    w, b = fit_logistic(np.concatenate(feats), np.concatenate(labels).astype(np.float64))
    best = (-1.0, 0.5)
    for tau in np.arange(0.05, 0.80, 0.025):
        model = ToolCount(tuple(w), b, float(tau))
        f2 = float(np.mean([scores_of(rows, adaptive(model))["F2"] for s in sets for rows in data[s]["dev"].values()]))
        best = max(best, (f2, round(float(tau), 3)))
    return ToolCount(tuple(float(v) for v in w), b, best[1], {"dev_mean_F2": round(best[0], 4)})


def table(data: dict[str, Any], model: ToolCount, sets: list[str], split_name: str = "test") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sets:
        for kind, rows in data[s][split_name].items():
            cell = {"n": len(rows), "adaptive": scores_of(rows, adaptive(model))}
            for k in FIXED:
                cell[f"fixed_k{k}"] = scores_of(rows, lambda _row, k=k: k)
            out.setdefault(s, {})[kind] = cell
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", action="store_true", help="refit the shipped count model on the dev splits")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tool_count")
    args = ap.parse_args()
    data = collect(args.seed)
    sets = list(data)
    res: dict[str, Any] = {"retriever": "ToolRetriever.from_tools(tools, examples=..., k=5)", "beta": BETA}
    if args.fit:
        loso = {}
        for held in sets:
            model = fit(data, [s for s in sets if s != held])
            loso[held] = {"threshold": model.threshold, **table(data, model, [held])[held]}
        final = fit(data, sets)
        info = {"fitted_on": "dev splits (seed 0) of toolbench, apibench_hf, apibench_tf, bfcl; default retriever",
                "command": "python benchmarks/tool_count.py --fit", "objective": f"mean F{BETA:g} of the offered set",
                "dev_mean_F2": final.info["dev_mean_F2"], "leave_one_set_out_test": loso}
        model = ToolCount(final.weight, final.bias, final.threshold, info)
        WEIGHTS_PATH.parent.mkdir(parents=True, exist_ok=True)
        WEIGHTS_PATH.write_text(json.dumps(model.as_dict(), indent=1) + "\n", encoding="utf-8")
        shipped_count.cache_clear()
        res["fitted"] = {"features": list(FEATURES), "weight": [round(v, 4) for v in model.weight],
                         "bias": round(model.bias, 4), "threshold": model.threshold}
        res["leave_one_set_out_test"] = loso
    model = shipped_count()
    res["threshold"] = model.threshold
    res["test"] = table(data, model, sets)
    report(args.name, res)
    if args.plot:
        plot(res["test"], args.name)


def plot(test: dict[str, Any], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels, arms = [], ["adaptive", *[f"fixed_k{k}" for k in FIXED]]
    cells = [(s, kind, c) for s, by_kind in test.items() for kind, c in by_kind.items()]
    x = np.arange(len(cells))
    for j, arm in enumerate(arms):
        axes[0].bar(x + j * 0.2, [c[arm]["offered"] for _, _, c in cells], 0.2, label=arm)
        axes[1].bar(x + j * 0.2, [c[arm]["recall"] for _, _, c in cells], 0.2, label=arm)
    labels = [f"{s}\n{kind}" for s, kind, _ in cells]
    for ax, title in zip(axes, ("tools offered per request", "recall of the gold tools offered"), strict=True):
        ax.set_xticks(x + 0.3, labels, fontsize=7, rotation=45)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=110)


if __name__ == "__main__":
    main()
