"""Tool retrieval on ToolBench (StableToolBench G1-G3, 2,479 APIs), APIBench (HuggingFace 936 APIs,
TensorFlow Hub 696) and BFCL v4 (multiple, live_multiple, parallel_multiple, simple_python: every
candidate function of every query, ~1.3k schemas; parallel_multiple queries need 2-4 tools):
description-only retrieval vs Tool2Vec usage vectors vs Tool2Vec + the trained refiner vs the MLC head.

    python benchmarks/tools.py [--plot] [--seed 0] [--sets toolbench bfcl ...]

Protocol: each set's queries are split (seeded) into usage examples (50%), dev (25%) and test (25%).
The tools are indexed with ``ToolRetriever.from_tools``; the description-only baseline gets no examples.
Reported: recall@1/3/5/10 of the gold tools (micro) and NDCG@5 (binary gain) on the test split,
recall@5 on its multi-tool queries alone (``multi_R@5``, where a set has them), ms per query, and
the ratio to the baseline. ``--select`` grid-searches the blend weights on the dev split (never on test).
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


def bfcl() -> tuple[list[dict[str, Any]], list[tuple[str, list[str]]]]:
    """BFCL v4: the union of the candidate functions (first schema seen per name) and, per query, its
    user turns and the distinct functions of its ground-truth calls."""
    folder = data_root() / "tools" / "bfcl"
    tools: dict[str, dict[str, Any]] = {}
    queries: list[tuple[str, list[str]]] = []
    for name in ("multiple", "live_multiple", "parallel_multiple", "simple_python"):
        answers = {}
        for line in (folder / "possible_answer" / f"BFCL_v4_{name}.json").read_text(encoding="utf-8").splitlines():
            a = json.loads(line)
            answers[a["id"]] = list(dict.fromkeys(fn for call in a["ground_truth"] for fn in call))
        for line in (folder / f"BFCL_v4_{name}.json").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            for fn in rec["function"]:
                params = dict(fn.get("parameters") or {})
                params["type"] = "object"  # BFCL writes "dict"
                tools.setdefault(fn["name"], {"name": fn["name"], "description": fn.get("description", ""),
                                              "parameters": params})
            text = " ".join(m["content"] for turn in rec["question"] for m in turn if m.get("role") == "user")
            gold = [g for g in answers.get(rec["id"], []) if g in tools]
            if text.strip() and gold:
                queries.append((text.strip(), gold))
    return list(tools.values()), queries


def split(queries: list[Any], seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    q = list(queries)
    random.Random(seed).shuffle(q)
    a, b = len(q) // 2, (3 * len(q)) // 4
    return q[:a], q[a:b], q[b:]


def recall_at(r: Any, queries: list[tuple[str, list[str]]], k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    hits = [[h.id for h in hs] for hs in (r.retrieve(q, k) for q, _ in queries)]
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(queries))
    found = sum(len(set(g) & set(h)) for (_, g), h in zip(queries, hits, strict=True))
    return 100 * found / sum(len(g) for _, g in queries), ms


def ndcg_at(r: Any, queries: list[tuple[str, list[str]]], k: int = 5) -> float:
    """Mean NDCG@k with gain 1 for each gold tool (x100)."""
    total = 0.0
    for q, gold in queries:
        ids = [h.id for h in r.retrieve(q, k)]
        dcg = sum(1 / np.log2(i + 2) for i, t in enumerate(ids) if t in gold)
        ideal = sum(1 / np.log2(i + 2) for i in range(min(k, len(gold))))
        total += dcg / ideal
    return 100 * total / max(1, len(queries))


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


class MeanBlendBaseline:
    """The common 30-line recipe: one vector per tool, normalize(description + mean of its example
    embeddings) (the description alone for a tool with no examples), ranked by cosine."""

    def __init__(self, r: ToolRetriever) -> None:
        vec = r._index.desc + r._index.means()  # means() is the description itself for a tool with no examples
        self.vecs = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
        self.names, self.encoder = r.tool_names, r.encoder

    def retrieve(self, query: str, k: int) -> list[Any]:
        from latentrag import Hit

        s = self.vecs @ self.encoder.encode([query])[0]
        return [Hit(self.names[i], "", float(s[i])) for i in np.argsort(-s)[:k]]


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
    ap.add_argument("--k", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--select", action="store_true", help="grid-search the blend weights on the dev split")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--sets", nargs="+", default=["toolbench", "apibench_hf", "apibench_tf", "bfcl"])
    ap.add_argument("--name", default="tools", help="results/NAME.json")
    args = ap.parse_args()
    res: dict[str, Any] = {"baseline": "description-only ToolRetriever.from_tools(tools)", "sets": {}}
    sets = {"toolbench": toolbench, "apibench_hf": apibench, "apibench_tf": lambda: apibench("tensorflow"),
            "bfcl": bfcl}
    for set_name in args.sets:
        loader = sets[set_name]
        tools, queries = loader()
        examples, dev, test = split(queries, args.seed)
        # the arms without multi-intent fusion isolate each stage; "default" and "description_default" are
        # exactly what users get: ToolRetriever.from_tools(tools, [examples=...,] k=5)
        base = ToolRetriever.from_tools(tools, k=5, multi_intent=False)
        t2v = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner=False, multi_intent=False)
        assert base.refiner is None
        t0 = time.perf_counter()
        refined = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner=True, multi_intent=False)
        fit_s = time.perf_counter() - t0
        default = ToolRetriever.from_tools(tools, examples=examples, k=5)
        desc_default = ToolRetriever.from_tools(tools, k=5)
        row: dict[str, Any] = {"n_tools": len(tools), "n_examples": len(examples), "n_test": len(test),
                               "refiner_build_s": round(fit_s, 1), "auto_kept_refiner": default.refiner is not None}
        for q, _ in test:  # time retrieval on warm query embeddings, so the ratios compare the tool stage
            default.encoder.encode([q])
        if args.select:
            grid = {}
            for wd in (0.1, 0.25, 0.4):
                for wm in (0.2, 0.35, 0.5):
                    w = BlendWeights(desc=wd, mean=wm, max=(1 - wd - wm) / 2, top=(1 - wd - wm) / 2)
                    r = ToolRetriever.from_tools(tools, examples=examples, k=5, weights=w, refiner=False,
                                                  multi_intent=False)
                    grid[f"desc={wd},mean={wm}"] = round(recall_at(r, dev, 5)[0], 2)
            row["dev_grid_R@5"] = grid
        arms = (("description", base), ("mean_blend", MeanBlendBaseline(t2v)), ("tool2vec", t2v),
                ("tool2vec_refiner", refined), ("default", default), ("description_default", desc_default))
        row["mlc"] = mlc_arm(t2v, test, args.k)
        multi = [(q, g) for q, g in test if len(g) > 1]
        row["n_test_multi_tool"] = len(multi)
        for label, r in arms:
            for k in sorted({1, *args.k}):
                rec, ms = recall_at(r, test, k)
                row.setdefault(label, {})[f"R@{k}"] = round(rec, 2)
                row[label]["ms_per_query"] = round(ms, 3)
            row[label]["NDCG@5"] = round(ndcg_at(r, test, 5), 2)
            if multi:
                row[label]["multi_R@5"] = round(recall_at(r, multi, 5)[0], 2)
            row.setdefault(label, {})["dev_R@5"] = round(recall_at(r, dev, 5)[0], 2)
        for label in ("mean_blend", "tool2vec", "tool2vec_refiner", "default", "description_default"):
            row[label]["R@5_gain_points"] = round(row[label]["R@5"] - row["description"]["R@5"], 2)
            row[label]["latency_ratio"] = round(row[label]["ms_per_query"] / row["description"]["ms_per_query"], 2)
        res["sets"][set_name] = row
        if set_name == "toolbench":
            res["selection_ms_beyond_encoding"] = scaling(base, [q for q, _ in test[:200]])
    report(args.name, res)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4))
        labels = ["description", "tool2vec", "tool2vec_refiner", "default"]
        width = 0.2
        for i, label in enumerate(labels):
            vals = [res["sets"][s][label]["R@5"] for s in res["sets"]]
            ax.bar(np.arange(len(vals)) + i * width, vals, width, label=label)
        ax.set_xticks(np.arange(len(res["sets"])) + 1.5 * width, list(res["sets"]))
        ax.set_ylabel("recall@5 of gold tools (%), test split")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_path(args.name), dpi=120)


if __name__ == "__main__":
    main()
