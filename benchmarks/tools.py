"""Tool retrieval on ToolBench (StableToolBench G1-G3, 2,479 APIs), APIBench (HuggingFace 936 APIs,
TensorFlow Hub 696) and BFCL v4 (multiple, live_multiple, parallel_multiple, simple_python: every
candidate function of every query, ~1.2k schemas; parallel_multiple queries need 2-4 tools): the
baselines (descriptions only, the mean-blend recipe, a logistic-regression head), the first stage, the
learned stage and its parts, and multi-intent fusion.

    python benchmarks/tools.py [--select] [--plot] [--seed 0] [--sets toolbench bfcl ...] [--costs run|skip|only]

Protocol: each set's queries are split (seeded) into usage examples (50%), dev (25%) and test (25%).
Multi-tool requests: the set's own (``multi_R@5``: ToolBench, BFCL) and, on every set, pairs of two
real held-out single-tool requests of different tools joined with a connective ("A Also, B", "A and b",
"A; B", ...; ``composed_R@5``). Reported on the test split: recall@1/5 of the gold tools (micro), NDCG@5,
multi_R@5, composed_R@5, ms per query (warm query embeddings).

``--select`` is the model selection, on the dev splits only: every learned-stage configuration of a small
grid (parts, head penalty, epochs) with each multi-intent fusion rule, scored per set by the mean of
R@1, R@5 and the multi-tool recall@5 (the mean of multi_R@5 and composed_R@5 where both exist); the
configuration with the best mean over the four sets is the shipped default, and a leave-one-set-out
choice (best on the other three sets' dev) is reported on each set's test split, as a check that the
choice carries to a catalogue it was not selected on. The baselines' own settings (the blend weight, the
head's weight decay) are chosen on dev too. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
from _common import data_root, plot_path, report

from latentrag.retrievers.tool_fit import FitConfig, with_parts
from latentrag.retrievers.tool_index import BlendWeights, ToolIndex
from latentrag.retrievers.tools import ToolRetriever

Queries = list[tuple[str, list[str]]]
CONNECTIVES = ("{a} Also, {b}", "{a} and {l}", "{a}; {b}", "{a} Then {b}", "{a}, and {l}", "{a} {b}")
INTENT_MODES: tuple[bool | str, ...] = (False, "max", "cover")


def _tool_id(*parts: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", ".".join(parts)).strip("_")[:120]


def toolbench() -> tuple[list[dict[str, Any]], Queries]:
    """OpenAI-schema tools and (query, [gold tool ids]) pairs from StableToolBench."""
    tools: dict[str, dict[str, Any]] = {}
    queries: Queries = []
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


def apibench(name: str = "huggingface") -> tuple[list[dict[str, Any]], Queries]:
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


def bfcl() -> tuple[list[dict[str, Any]], Queries]:
    """BFCL v4: the union of the candidate functions (first schema seen per name) and, per query, its
    user turns and the distinct functions of its ground-truth calls."""
    folder = data_root() / "tools" / "bfcl"
    tools: dict[str, dict[str, Any]] = {}
    queries: Queries = []
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


SETS = {"toolbench": toolbench, "apibench_hf": apibench, "apibench_tf": lambda: apibench("tensorflow"), "bfcl": bfcl}


def split(queries: list[Any], seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    q = list(queries)
    random.Random(seed).shuffle(q)
    a, b = len(q) // 2, (3 * len(q)) // 4
    return q[:a], q[a:b], q[b:]


def composed(queries: Queries, seed: int, n_max: int = 200) -> Queries:
    """Multi-tool requests made of two real single-tool requests of different tools, joined by a connective
    (up to ``n_max``; a request may appear in a few pairs when the split has fewer than ``2 n_max``)."""
    singles = [(q.strip(), g) for q, g in queries if len(g) == 1 and q.strip()]
    rng = random.Random(seed)
    out: Queries = []
    seen: set[tuple[str, str]] = set()
    for _ in range(4):
        order = singles[:]
        rng.shuffle(order)
        for (a, ga), (b, gb) in zip(order[0::2], order[1::2], strict=False):
            if len(out) >= n_max:
                return out
            if ga == gb or (a, b) in seen:
                continue
            seen.add((a, b))
            form = CONNECTIVES[len(out) % len(CONNECTIVES)]
            a_ = a if a[-1] in ".?!" or " and " in form or ", and" in form else a + "."
            out.append((form.format(a=a_, b=b, l=b[:1].lower() + b[1:]), ga + gb))
    return out


# ---------------------------------------------------------------------------------------------- metrics
def ranked_ids(r: Any, queries: Queries, k: int = 5) -> list[list[str]]:
    out: list[list[str]] = []
    for i in range(0, len(queries), 64):
        out.extend([h.id for h in hs] for hs in r.retrieve_batch([q for q, _ in queries[i : i + 64]], k))
    return out


def ms_per_query(r: Any, queries: Queries, k: int = 5) -> float:
    """One request at a time, warm query embeddings."""
    t0 = time.perf_counter()
    for q, _ in queries:
        r.retrieve(q, k)
    return round((time.perf_counter() - t0) * 1000 / max(1, len(queries)), 3)


def recall(hits: list[list[str]], queries: Queries, k: int) -> float:
    found = sum(len(set(g) & set(h[:k])) for (_, g), h in zip(queries, hits, strict=True))
    return round(100 * found / max(1, sum(len(g) for _, g in queries)), 2)


def ndcg5(hits: list[list[str]], queries: Queries) -> float:
    total = 0.0
    for (_, gold), ids in zip(queries, hits, strict=True):
        dcg = sum(1 / np.log2(i + 2) for i, t in enumerate(ids[:5]) if t in gold)
        total += dcg / sum(1 / np.log2(i + 2) for i in range(min(5, len(gold))))
    return round(100 * total / max(1, len(queries)), 2)


def evaluate(r: Any, ev: dict[str, Queries], timed: bool = False) -> dict[str, float]:
    """R@1, R@5, NDCG@5 on the split's requests, multi_R@5 on its multi-tool ones, composed_R@5."""
    hits = ranked_ids(r, ev["all"])
    out = {"R@1": recall(hits, ev["all"], 1), "R@5": recall(hits, ev["all"], 5), "NDCG@5": ndcg5(hits, ev["all"])}
    if ev["multi"]:
        out["multi_R@5"] = recall(ranked_ids(r, ev["multi"]), ev["multi"], 5)
    out["composed_R@5"] = recall(ranked_ids(r, ev["composed"]), ev["composed"], 5)
    if timed:
        out["ms_per_query"] = ms_per_query(r, ev["all"])
    return out


def objective(m: dict[str, float]) -> float:
    """Per-set selection score: mean of R@1, R@5 and the multi-tool recall@5."""
    multi = [m[key] for key in ("multi_R@5", "composed_R@5") if key in m]
    return (m["R@1"] + m["R@5"] + sum(multi) / len(multi)) / 3


# ---------------------------------------------------------------------------------------------- baselines
class MeanBlendBaseline:
    """The common recipe: one vector per tool, normalize(alpha * description + (1 - alpha) * mean of its
    example embeddings) (the description alone for a tool with no examples), ranked by cosine."""

    def __init__(self, r: ToolRetriever, alpha: float) -> None:
        vec = alpha * r._index.desc + (1 - alpha) * r._index.means()  # means() is the description for cold tools
        self.vecs = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
        self.names, self.encoder = r.tool_names, r.encoder

    def retrieve(self, query: str, k: int) -> list[Any]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: list[str], k: int) -> list[list[Any]]:
        from latentrag import Hit

        s = self.encoder.encode(queries) @ self.vecs.T
        return [[Hit(self.names[i], "", float(row[i])) for i in np.argsort(-row)[:k]] for row in s]


class LogisticHeadBaseline:
    """A logistic-regression head over example and description embeddings (Tool2Vec's MLC on frozen
    embeddings): tools ranked by their logit for the request embedding."""

    def __init__(self, r: ToolRetriever, weight_decay: float) -> None:
        from latentrag.models.tool_mlc import train_logistic_head

        t0 = time.perf_counter()
        self.head = train_logistic_head(r._index, weight_decay=weight_decay, epochs=100)
        self.train_s = time.perf_counter() - t0
        self.names, self.encoder = r.tool_names, r.encoder

    def retrieve(self, query: str, k: int) -> list[Any]:
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: list[str], k: int) -> list[list[Any]]:
        from latentrag import Hit

        s = self.head.logits(self.encoder.encode(queries))
        return [[Hit(self.names[i], "", float(row[i])) for i in np.argsort(-row)[:k]] for row in s]


# ---------------------------------------------------------------------------------------------- selection
def grid() -> dict[str, FitConfig]:
    """The learned-stage configurations tried on dev (``none`` is the first stage alone; ``al2`` the query
    adapter's penalty, in examples)."""
    base = FitConfig()
    out = {"none": with_parts(base, "none"), "refiner,ep=200": replace(with_parts(base, "refiner"), epochs=200),
           "mlc,l2=0.001,ep=200": replace(with_parts(base, "mlc"), epochs=200)}
    for epochs in (60, 200):
        for l2 in (3e-4, 1e-3, 3e-3):
            out[f"both,l2={l2},ep={epochs}"] = replace(with_parts(base, "both"), l2=l2, epochs=epochs)
    for al2 in (300.0, 3000.0):
        out[f"adapter,al2={al2:g}"] = replace(with_parts(base, "adapter"), adapter_l2=al2)
    for epochs in (60, 200):
        for al2 in (100.0, 300.0, 1000.0):
            out[f"adapter+both,l2=0.001,ep={epochs},al2={al2:g}"] = replace(
                with_parts(base, "adapter+refiner+mlc"), l2=1e-3, epochs=epochs, adapter_l2=al2)
    return out


def fit_as(r: ToolRetriever, cfg: FitConfig) -> ToolRetriever:
    """``r`` with its learned stage refitted to ``cfg`` (none when ``cfg`` switches both parts off)."""
    if cfg.refiner or cfg.mlc or cfg.adapter:
        r.fit(cfg)
    else:
        r.refiner = None
    return r


def with_intent(r: ToolRetriever, mode: bool | str) -> ToolRetriever:
    r.multi_intent = mode
    return r


def log(msg: str) -> None:
    print(f"[tools] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def label(cfg_name: str, mode: bool | str) -> str:
    return f"{cfg_name}|intent={mode}"


def select(dev_scores: dict[str, dict[str, float]], sets: list[str]) -> str:
    """The label with the best mean objective over ``sets``."""
    return max(dev_scores, key=lambda lab: (np.mean([dev_scores[lab][s] for s in sets]), lab))


# ---------------------------------------------------------------------------------------------- costs
def selection_scaling(encoder: Any, desc: np.ndarray, queries: list[str], sizes: tuple[int, ...] = (100, 1000, 10000),
                      per_tool: int = 5) -> dict[str, float]:
    """Selection cost beyond query encoding (ms per request, one at a time) at ``sizes`` tools with
    ``per_tool`` examples each, first stage alone and with a fitted learned stage: ToolBench's real
    description vectors, tiled with small noise to reach the size; the fit time is reported too."""
    from latentrag.retrievers.tool_fit import fit_stage

    rng = np.random.default_rng(0)
    q = encoder.encode(queries)
    out: dict[str, float] = {}
    for n in sizes:
        vecs = desc[np.arange(n) % len(desc)] + 0.02 * rng.standard_normal((n, desc.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        r = ToolRetriever(encoder, k=5, refiner=False)
        r._index = ToolIndex(desc.shape[1])
        r._index.add_tools(vecs)  # score_rows reads only the index
        ex = np.repeat(vecs, per_tool, axis=0) + 0.1 * rng.standard_normal((n * per_tool, desc.shape[1])).astype(
            np.float32)
        r._index.add_examples(ex / np.linalg.norm(ex, axis=1, keepdims=True),
                              [[i // per_tool] for i in range(n * per_tool)])
        for arm in ("first_stage", "learned"):
            if arm == "learned":
                t0 = time.perf_counter()
                r.refiner = fit_stage(r._index, r.weights, [str(i) for i in range(n)], FitConfig())
                out[f"fit_s_{n}_tools_{n * per_tool}_examples"] = round(time.perf_counter() - t0, 2)
            r.score_rows(q[:1], 5)
            t0 = time.perf_counter()
            for row in q:
                r.score_rows(row[None, :], 5)
            out[f"{arm}_{n}_tools_ms"] = round((time.perf_counter() - t0) * 1000 / len(q), 3)
    return out


def fit_time(desc: np.ndarray, n_tools: int = 200, n_examples: int = 3000) -> float:
    """Seconds to fit the learned stage on ``n_tools`` tools and ``n_examples`` examples (noisy copies of
    real description vectors, 15 per tool), as ``fit()`` does it (snapshot, training batch, training)."""
    from latentrag.retrievers.tool_fit import fit_stage

    rng = np.random.default_rng(1)
    vecs = desc[rng.choice(len(desc), n_tools, replace=False)]
    ex = vecs[np.arange(n_examples) % n_tools] + 0.12 * rng.standard_normal((n_examples, desc.shape[1])).astype(
        np.float32)
    index = ToolIndex(desc.shape[1])
    index.add_tools(vecs)
    index.add_examples(ex / np.linalg.norm(ex, axis=1, keepdims=True), [[i % n_tools] for i in range(n_examples)])
    t0 = time.perf_counter()
    fit_stage(index.copy(), BlendWeights(), [str(i) for i in range(n_tools)], FitConfig())
    return round(time.perf_counter() - t0, 2)


def request_latency(r: ToolRetriever, queries: list[str]) -> dict[str, float]:
    """End to end per request (encoding included: the encoder's cache is emptied before each call):
    median and p95 ms of the default, of ``multi_intent=False``, and of encoding alone."""
    cache = getattr(r.encoder, "cache", None)
    out: dict[str, float] = {}
    mode = r.multi_intent
    for arm in ("default", "multi_intent_off", "encoding_only"):
        r.multi_intent = False if arm == "multi_intent_off" else mode
        times = []
        for q in queries:
            if cache is not None:
                cache.clear()
            t0 = time.perf_counter()
            if arm == "encoding_only":
                r.encoder.encode([q])
            else:
                r.retrieve(q)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[f"{arm}_median_ms"] = round(statistics.median(times), 2)
        out[f"{arm}_p95_ms"] = round(times[int(0.95 * (len(times) - 1))], 2)
    r.multi_intent = mode
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--select", action="store_true", help="the dev-split model selection (grid x fusion rules)")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--name", default="tools", help="results/NAME.json")
    ap.add_argument("--costs", choices=["run", "skip", "only"], default="run",
                    help="the cost section (selection ms at 100-10,000 tools, fit times): run it after the sets "
                         "(default), skip it, or only run it and merge it into an existing results/NAME.json")
    args = ap.parse_args()
    if args.costs == "only":
        costs_only(args.name)
        return
    shipped = FitConfig()
    res: dict[str, Any] = {"baseline": "description-only ToolRetriever.from_tools(tools)",
                           "default_fit_config": shipped.as_dict(), "sets": {}}
    dev_scores: dict[str, dict[str, float]] = {}
    later: dict[str, tuple[ToolRetriever, dict[str, Queries]]] = {}
    keep: dict[str, Any] = {}
    for set_name in args.sets:
        log(f"{set_name}: loading")
        tools, queries = SETS[set_name]()
        examples, dev, test = split(queries, args.seed)
        evs = {name: {"all": part, "multi": [(q, g) for q, g in part if len(g) > 1],
                      "composed": composed(part, args.seed)} for name, part in (("dev", dev), ("test", test))}
        row: dict[str, Any] = {"n_tools": len(tools), "n_examples": len(examples), "n_test": len(test),
                               "n_test_multi_tool": len(evs["test"]["multi"]),
                               "n_test_composed": len(evs["test"]["composed"])}
        # exactly what users get: ToolRetriever.from_tools(tools, [examples=...,] k=5)
        t0 = time.perf_counter()
        default = ToolRetriever.from_tools(tools, examples=examples, k=5)
        row["default_build_s"] = round(time.perf_counter() - t0, 1)
        row["default_fit_s"] = (default.refiner.info.get("fit_s") if default.refiner is not None else None)
        row["default_learned_parts"] = default.refiner.parts if default.refiner is not None else []
        desc_only = ToolRetriever.from_tools(tools, k=5, multi_intent=False)
        work = ToolRetriever.from_tools(tools, examples=examples, k=5, refiner=False, multi_intent=False)
        for ev in evs.values():  # warm the query embeddings, so ms_per_query compares the tool stage
            for part in ev.values():
                if part:
                    default.retrieve_batch([q for q, _ in part])
        log(f"{set_name}: built, evaluating")
        arms: dict[str, dict[str, float]] = {}
        arms["description"] = evaluate(desc_only, evs["test"], timed=True)
        # baselines, their settings chosen on dev
        blends = {a: MeanBlendBaseline(work, a) for a in (0.3, 0.5, 0.7)}
        blend_dev = {a: objective(evaluate(b, evs["dev"])) for a, b in blends.items()}
        alpha = max(blend_dev, key=lambda a: blend_dev[a])
        arms["mean_blend"] = {**evaluate(blends[alpha], evs["test"], timed=True), "alpha_desc": alpha}
        arms["mean_blend_0.3"] = evaluate(blends[0.3], evs["test"])
        heads = {wd: LogisticHeadBaseline(work, wd) for wd in (1e-4, 1e-2)}
        head_dev = {wd: objective(evaluate(h, evs["dev"])) for wd, h in heads.items()}
        wd = max(head_dev, key=lambda x: head_dev[x])
        arms["logistic_head"] = {**evaluate(heads[wd], evs["test"], timed=True), "weight_decay": wd,
                                 "train_s": round(heads[wd].train_s, 2)}
        # the first stage and the learned parts (ablations), each with the shipped fusion rule
        mode = default.multi_intent
        for name, parts in (("first_stage", "none"), ("first_stage+adapter", "adapter"),
                            ("first_stage+refiner", "refiner"), ("first_stage+mlc", "mlc"),
                            ("first_stage+refiner+mlc", "both"), ("first_stage+adapter+refiner", "adapter+refiner"),
                            ("first_stage+adapter+mlc", "adapter+mlc"),
                            ("first_stage+adapter+refiner+mlc", "adapter+refiner+mlc")):
            arms[name] = evaluate(with_intent(fit_as(work, with_parts(shipped, parts)), mode), evs["test"],
                                  timed=True)
        arms["first_stage_no_split"] = evaluate(with_intent(fit_as(work, with_parts(shipped, "none")), False),
                                                evs["test"])
        arms["previous_default (first stage + max fusion)"] = evaluate(with_intent(work, "max"), evs["test"])
        arms["default"] = evaluate(default, evs["test"], timed=True)
        for m in (False, "max"):
            arms[f"default, multi_intent={m}"] = evaluate(with_intent(default, m), evs["test"], timed=True)
        with_intent(default, mode)
        if args.select:
            per_cfg: dict[str, float] = {}
            for cfg_name, cfg in grid().items():
                fit_as(work, cfg)
                for m in INTENT_MODES:
                    lab = label(cfg_name, m)
                    dev_scores.setdefault(lab, {})[set_name] = per_cfg[lab] = round(objective(
                        evaluate(with_intent(work, m), evs["dev"])), 3)
                log(f"{set_name}: dev {cfg_name} {[per_cfg[label(cfg_name, m)] for m in INTENT_MODES]}")
            row["dev_objective_top5"] = dict(sorted(per_cfg.items(), key=lambda kv: -kv[1])[:5])
            later[set_name] = (work, evs["test"])
        for label_, m in arms.items():
            if label_ != "description":
                m["R@5_gain_points"] = round(m["R@5"] - arms["description"]["R@5"], 2)
        row["arms"] = arms
        res["sets"][set_name] = row
        if set_name == "toolbench":
            keep["desc"] = work._index.desc.copy()
            keep["queries"] = [q for q, _ in test[:200]]
        if set_name == "bfcl":
            res["request_latency_bfcl"] = request_latency(default, [q for q, _ in test[:200]])
        keep["encoder"], keep["mode"] = default.encoder, mode
    if args.select and dev_scores:
        sets = [s for s in args.sets if all(s in v for v in dev_scores.values())]
        best = select(dev_scores, sets)
        sel: dict[str, Any] = {"chosen_on_all_dev": best, "mean_dev_objective": {
            lab: round(float(np.mean([v[s] for s in sets])), 3) for lab, v in sorted(
                dev_scores.items(), key=lambda kv: -np.mean([kv[1][s] for s in sets]))[:10]}}
        shipped_lab = label(_name_of(shipped), keep["mode"])
        sel["shipped"] = shipped_lab
        sel["shipped_is_chosen"] = shipped_lab == best
        loso = {}
        configs = grid()
        for s in sets:
            choice = select(dev_scores, [o for o in sets if o != s])
            work, test_ev = later[s]
            cfg_name, _, m = choice.partition("|intent=")
            mode_: bool | str = {"False": False}.get(m, m)
            loso[s] = {"chosen_on_other_sets_dev": choice,
                       **evaluate(with_intent(fit_as(work, configs[cfg_name]), mode_), test_ev)}
        sel["leave_one_set_out_test"] = loso
        cfg_name, _, m = best.partition("|intent=")
        mode_b: bool | str = {"False": False}.get(m, m)
        sel["chosen_on_all_dev_test"] = {s: evaluate(with_intent(fit_as(later[s][0], configs[cfg_name]), mode_b),
                                                     later[s][1]) for s in sets}
        res["selection"] = sel
    if "desc" in keep and args.costs == "run":
        res.update(cost_section(keep["encoder"], keep["desc"], keep["queries"]))
    report(args.name, res)
    if args.plot:
        plot(res, args.name)


def cost_section(encoder: Any, desc: np.ndarray, queries: list[str]) -> dict[str, Any]:
    """The cost figures: selection ms beyond encoding at 100-10,000 tools and the 200-tool fit time."""
    log("costs")
    return {"selection_ms_beyond_encoding": selection_scaling(encoder, desc, queries),
            "fit_s_200_tools_3000_examples": fit_time(desc)}


def costs_only(name: str) -> None:
    """The cost section alone, on ToolBench's description vectors and first 200 test requests, merged into
    the existing ``results/NAME.json`` (its set figures are kept as they are)."""
    from _common import RESULTS

    path = RESULTS / f"{name}.json"
    res = json.loads(path.read_text(encoding="utf-8"))
    res.pop("benchmark", None)
    res.pop("machine", None)
    tools, queries = toolbench()
    _, _, test = split(queries, 0)
    r = ToolRetriever.from_tools(tools, k=5)
    res.update(cost_section(r.encoder, r._index.desc.copy(), [q for q, _ in test[:200]]))
    res["default_fit_config"] = FitConfig().as_dict()
    report(name, res)


def _name_of(cfg: FitConfig) -> str:
    for name, c in grid().items():
        if c == cfg:
            return name
    return "custom"


def plot(res: dict[str, Any], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = ["description", "mean_blend", "logistic_head", "first_stage", "default"]
    metrics = [("R@1", "recall@1"), ("R@5", "recall@5"), ("multi", "multi-tool recall@5")]
    sets = list(res["sets"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=False)
    width = 0.16
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for i, arm in enumerate(arms):
            vals = []
            for s in sets:
                m = res["sets"][s]["arms"][arm]
                vals.append(m.get("multi_R@5", m["composed_R@5"]) if key == "multi" else m[key])
            ax.bar(np.arange(len(sets)) + i * width, vals, width, label=arm)
        ax.set_xticks(np.arange(len(sets)) + 2 * width, sets, fontsize=8)
        ax.set_title(title + (" (own multi-tool requests; composed pairs on APIBench)" if key == "multi" else ""),
                     fontsize=8)
    axes[0].set_ylabel("% of gold tools, test split")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot_path(name), dpi=120)


if __name__ == "__main__":
    main()
