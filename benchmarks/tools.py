"""Tool retrieval on ToolBench (StableToolBench G1-G3, 2,479 APIs) and APIBench (HuggingFace, 936 APIs):
description-only retrieval vs Tool2Vec usage vectors vs Tool2Vec + the trained refiner.

    python benchmarks/tools.py [--plot] [--seed 0]

Protocol: each set's queries are split (seeded) into usage examples (50%), dev (25%) and test (25%).
The tools are indexed with ``ToolRetriever.from_tools``; the description-only baseline gets no examples.
Reported: recall@k of the gold tools (micro) on the test split, ms per query, and the ratio to the
baseline. ``--select`` grid-searches the blend weights on the dev split (never on test).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from typing import Any

import numpy as np
from _common import data_root, plot_path, report

from latentrag.retrievers.tool_index import BlendWeights
from latentrag.retrievers.tools import ToolRetriever


def _tool_id(*parts: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", ".".join(parts)).strip("_")[:120]


def toolbench() -> tuple[list[dict[str, Any]], list[tuple[str, list[str]]]]:
    """OpenAI-schema tools and (query, [gold tool ids]) pairs from StableToolBench."""
    tools: dict[str, dict[str, Any]] = {}
    queries: list[tuple[str, list[str]]] = []
    for path in sorted((data_root() / "tools" / "stabletoolbench").glob("G*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            for api in rec["api_list"]:
                tid = _tool_id(api["tool_name"], api["api_name"])
                params = {p["name"]: {"type": "string", "description": p.get("description", "")}
                          for p in api.get("required_parameters", []) + api.get("optional_parameters", [])}
                desc = f"{api['tool_name']} ({api.get('category_name', '')}): {api.get('api_description') or ''}"
                tools.setdefault(tid, {"name": tid, "description": desc.strip(),
                                       "parameters": {"type": "object", "properties": params}})
            gold = [_tool_id(t, a) for t, a in rec["relevant APIs"]]
            gold = [g for g in gold if g in tools]
            if gold:
                queries.append((rec["query"], gold))
    return list(tools.values()), queries


def apibench(name: str = "huggingface") -> tuple[list[dict[str, Any]], list[tuple[str, list[str]]]]:
    """APIBench API corpus as tools and its eval instructions as queries."""
    folder = data_root() / "tools" / "gorilla_apibench"
    tools: dict[str, dict[str, Any]] = {}
    api_file = {"huggingface": "huggingface_api.jsonl", "tensorflow": "tensorflowhub_api.jsonl"}[name]
    by_call: dict[str, str] = {}
    for line in (folder / api_file).read_text(encoding="utf-8").splitlines():
        a = json.loads(line)
        tid = _tool_id(a["api_name"])
        if tid in tools:
            continue
        desc = f"{a.get('functionality', '')} ({a.get('domain', '')}): {a.get('description', '')}"
        tools[tid] = {"name": tid, "description": desc.strip(), "parameters": {"type": "object", "properties": {}}}
        by_call[a["api_call"]] = tid
    queries = []
    for line in (folder / f"{name}_eval.json").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        text = e["code"].split("###Output")[0].replace("###Instruction:", "").strip()
        tid = by_call.get(e["api_data"]["api_call"])
        if tid and text:
            queries.append((text, [tid]))
    return list(tools.values()), queries


def split(queries: list[Any], seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    q = list(queries)
    random.Random(seed).shuffle(q)
    a, b = len(q) // 2, (3 * len(q)) // 4
    return q[:a], q[a:b], q[b:]


def recall_at(r: ToolRetriever, queries: list[tuple[str, list[str]]], k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    hits = [[h.id for h in hs] for hs in (r.retrieve(q, k) for q, _ in queries)]
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(queries))
    found = sum(len(set(g) & set(h)) for (_, g), h in zip(queries, hits, strict=True))
    return 100 * found / sum(len(g) for _, g in queries), ms


def scaling(base: ToolRetriever, queries: list[str], sizes: tuple[int, ...] = (100, 1000, 10000),
            per_tool: int = 5) -> dict[str, float]:
    """Selection cost beyond query encoding (ms per query) at ``sizes`` tools with ``per_tool`` examples
    each: ToolBench's real description vectors, tiled with small noise to reach the size."""
    from latentrag.retrievers.tool_index import ToolIndex

    rng = np.random.default_rng(0)
    desc = base._index.desc
    q = base.encoder.encode(queries)
    out = {}
    for n in sizes:
        vecs = desc[np.arange(n) % len(desc)] + 0.02 * rng.standard_normal((n, desc.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        r = ToolRetriever(base.encoder, k=5)
        r._index = ToolIndex(desc.shape[1])
        r._index.add_tools(vecs)
        ex = np.repeat(vecs, per_tool, axis=0) + 0.1 * rng.standard_normal((n * per_tool, desc.shape[1])).astype(
            np.float32)
        r._index.add_examples(ex / np.linalg.norm(ex, axis=1, keepdims=True),
                              [[i // per_tool] for i in range(n * per_tool)])
        r.score_rows(q[:1], 5)
        t0 = time.perf_counter()
        for row in q:
            r.score_rows(row[None, :], 5)
        out[f"{n}_tools_ms"] = round((time.perf_counter() - t0) * 1000 / len(q), 3)
    return out


def mlc_arm(r: ToolRetriever, queries: list[tuple[str, list[str]]], ks: list[int]) -> dict[str, float]:
    """Recall of the MLC head alone (tools ranked by their logit), trained on the same usage examples."""
    from latentrag.models.tool_mlc import train_mlc

    t0 = time.perf_counter()
    head = train_mlc(r._index)
    out: dict[str, float] = {"train_s": round(time.perf_counter() - t0, 2)}
    logits = head.logits(r.encoder.encode([q for q, _ in queries]))
    names = r.tool_names
    for k in sorted({1, *ks}):
        top = np.argsort(-logits, axis=1)[:, :k]
        found = sum(len(set(g) & {names[j] for j in row}) for (_, g), row in zip(queries, top, strict=True))
        out[f"R@{k}"] = round(100 * found / sum(len(g) for _, g in queries), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--select", action="store_true", help="grid-search the blend weights on the dev split")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    res: dict[str, Any] = {"baseline": "description-only ToolRetriever.from_tools(tools)", "sets": {}}
    sets = (("toolbench", toolbench), ("apibench_hf", apibench), ("apibench_tf", lambda: apibench("tensorflow")))
    for set_name, loader in sets:
        tools, queries = loader()
        examples, dev, test = split(queries, args.seed)
        base = ToolRetriever.from_tools(tools, k=5)
        t2v = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner=False)
        assert base.refiner is None
        t0 = time.perf_counter()
        refined = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner=True)
        fit_s = time.perf_counter() - t0
        default = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner="auto")  # held-out gate
        row: dict[str, Any] = {"n_tools": len(tools), "n_examples": len(examples), "n_test": len(test),
                               "refiner_build_s": round(fit_s, 1), "auto_kept_refiner": default.refiner is not None}
        for q, _ in test:  # time retrieval on warm query embeddings, so the ratios compare the tool stage
            default.encoder.encode([q])
        if args.select:
            grid = {}
            for wd in (0.1, 0.25, 0.4):
                for wm in (0.2, 0.35, 0.5):
                    w = BlendWeights(desc=wd, mean=wm, max=(1 - wd - wm) / 2, top=(1 - wd - wm) / 2)
                    r = ToolRetriever.from_tools(tools, examples=examples, k=5, weights=w, refiner=False)
                    grid[f"desc={wd},mean={wm}"] = round(recall_at(r, dev, 5)[0], 2)
            row["dev_grid_R@5"] = grid
        arms = (("description", base), ("tool2vec", t2v), ("tool2vec_refiner", refined), ("refiner_auto", default))
        row["mlc"] = mlc_arm(t2v, test, args.k)
        for label, r in arms:
            for k in sorted({1, *args.k}):
                rec, ms = recall_at(r, test, k)
                row.setdefault(label, {})[f"R@{k}"] = round(rec, 2)
                row[label]["ms_per_query"] = round(ms, 3)
            row.setdefault(label, {})["dev_R@5"] = round(recall_at(r, dev, 5)[0], 2)
        for label in ("tool2vec", "tool2vec_refiner", "refiner_auto"):
            row[label]["R@5_gain_points"] = round(row[label]["R@5"] - row["description"]["R@5"], 2)
            row[label]["latency_ratio"] = round(row[label]["ms_per_query"] / row["description"]["ms_per_query"], 2)
        res["sets"][set_name] = row
        if set_name == "toolbench":
            res["selection_ms_beyond_encoding"] = scaling(base, [q for q, _ in test[:200]])
    report("tools", res)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4))
        labels = ["description", "tool2vec", "tool2vec_refiner"]
        width = 0.25
        for i, label in enumerate(labels):
            vals = [res["sets"][s][label]["R@5"] for s in res["sets"]]
            ax.bar(np.arange(len(vals)) + i * width, vals, width, label=label)
        ax.set_xticks(np.arange(len(res["sets"])) + width, list(res["sets"]))
        ax.set_ylabel("recall@5 of gold tools (%), test split")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_path("tools"), dpi=120)


if __name__ == "__main__":
    main()
