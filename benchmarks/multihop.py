"""Multi-hop retrieval on the shared dev sets: DenseRetriever vs MultiHopRetriever (shipped TreeHop
weights, defaults) vs an Iter-RetGen-style LLM query-rewrite loop with the local SmolLM2-135M.

    python benchmarks/multihop.py [--plot] [--llm-questions 60]
    python benchmarks/multihop.py --sweep     # the dev grid the link defaults were chosen on

Corpus: the union of every dev pool and gold passage (deduplicated), one shared FaissStore. Recall is
TreeHop's protocol: gold passages matched by title, micro-averaged. Latency is end to end per query
(query encoding included), one query at a time, on the same machine in the same run. Ablations of
the default run beside it, one hop kind at a time: ``first_stage_only`` (``n_hops=1``: the hybrid hop 1
alone), ``treehop_only`` (``links=False, hop_network=True``: the hop network alone over the same first
stage), ``multihop_with_hop_network`` (the default plus the hop network's children), and over a dense
first stage (what a store that cannot list its documents gets): ``dense_first_stage_treehop`` (the hop
network alone, on there by default) and ``dense_first_stage_links`` (links, network off). The default
(``hop_network="auto"``) follows title/entity links and runs the hop network only after a dense first
stage, as these rows measure. The LLM loop is
slow (seconds per question), so it runs on the first ``--llm-questions`` questions of each set and the
other two retrievers are also reported on that same subset. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import data_root, plot_path, report, untitled

from latentrag.encoders import default_encoder
from latentrag.retrievers import DenseRetriever, MultiHopRetriever
from latentrag.retrievers.links import TitleLinks
from latentrag.training.multihop import DevSet, DiskEmbeddingCache, evaluate, load_dev, recall


class IterRetGen:
    """Iter-RetGen (Shao et al. 2023) in miniature: retrieve, let the LM write a short answer from the
    passages, retrieve again with question + generation, and merge (first-round passages first)."""

    def __init__(self, store: Any, k: int, rounds: int = 2, max_new_tokens: int = 32) -> None:
        from latentrag.readers.lm import load_lm

        self.store, self.k, self.rounds, self.max_new_tokens = store, k, rounds, max_new_tokens
        self.lm = load_lm()
        self.dense = DenseRetriever(store, k=5)

    def _generate(self, question: str, passages: list[str]) -> str:
        import torch

        tok = self.lm.tokenizer
        context = "\n".join(f"- {p[:300]}" for p in passages)
        messages = [{"role": "user", "content": f"Passages:\n{context}\n\nQuestion: {question}\n"
                     "Answer briefly, naming the people, places or works involved."}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = self.lm.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    def retrieve(self, question: str) -> list[Any]:
        merged: dict[str, Any] = {}
        query = question
        for r in range(self.rounds):
            hits = self.dense.retrieve(query)
            for h in hits:
                merged.setdefault(h.id, h)
            if r < self.rounds - 1:  # the last round's generation is the answer, not retrieval cost
                query = f"{question} {self._generate(question, [h.text for h in hits])}"
        return list(merged.values())[: self.k]


def timed(fn: Any, questions: list[str]) -> tuple[list[list[Any]], float]:
    """Hits and mean ms per query, one query at a time."""
    out = []
    t0 = time.perf_counter()
    for q in questions:
        out.append(fn(q))
    return out, (time.perf_counter() - t0) * 1000 / max(1, len(questions))


def via_counts(r: Any, sets: dict[str, DevSet]) -> dict[str, dict[str, float]]:
    """Per hop kind (``via``: dense, hop, link, entity, dense+link): share of all hits and of gold hits."""
    total: dict[str, int] = {}
    gold: dict[str, int] = {}
    n_hits = n_gold = 0
    for ds in sets.values():
        for hits, g in zip(r._retrieve_batch(ds.questions, 10, ds.vectors), ds.gold, strict=True):
            for h in hits:
                via = h.metadata["via"]
                total[via] = total.get(via, 0) + 1
                n_hits += 1
                if h.metadata["key"] in g:
                    gold[via] = gold.get(via, 0) + 1
                    n_gold += 1
    return {via: {"share_of_hits": round(total[via] / n_hits, 3), "share_of_gold_found": round(
        gold.get(via, 0) / max(1, n_gold), 3)} for via in sorted(total)}


def subset(ds: DevSet, n: int) -> DevSet:
    return DevSet(ds.name, ds.questions[:n], ds.vectors[:n], ds.gold[:n])


def sweep(store: Any, sets: dict[str, DevSet], ks: list[int]) -> None:
    """Mean dev recall over the link settings (cached question vectors, no latency)."""
    grid = []
    for bonus in (0.2, 0.3, 0.5, 0.8):
        for link_from in (2, 3, 5):
            for dense_keep in (0.3, 0.5):
                r = MultiHopRetriever(store, link_bonus=bonus, link_from=link_from, dense_keep=dense_keep)
                res = evaluate(r, sets, ks)
                rec: dict[str, Any] = {}
                for k in ks:
                    rec[f"R@{k}"] = {n: res[n][f"R@{k}"] for n in sets}
                    rec[f"mean_R@{k}"] = round(float(np.mean(list(rec[f"R@{k}"].values()))), 2)
                grid.append({"link_bonus": bonus, "link_from": link_from, "dense_keep": dense_keep, **rec})
    best = max(grid, key=lambda g: sum(g[f"mean_R@{k}"] for k in ks))
    report("multihop_sweep", {"split": "dev", "criterion": f"sum of mean R@{ks}", "best": best, "grid": grid})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--latency-questions", type=int, default=300, help="questions per set timed one by one")
    ap.add_argument("--llm-questions", type=int, default=30, help="questions per set for the LLM baseline (0: skip)")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="only the dev grid of link_bonus x link_from x dense_keep")
    args = ap.parse_args()
    enc = default_encoder()
    store, sets = load_dev(data_root(), DiskEmbeddingCache(enc))
    if args.sweep:
        sweep(store, sets, args.ks)
        return
    # Latency is timed on new questions: an encoder without the embedding cache (same model and name).
    store.encoder = default_encoder(cache_size=0)
    store.encoder.encode(["warm-up"])
    res: dict[str, Any] = {"n_passages": len(store), "n_questions": {n: len(d.questions) for n, d in sets.items()},
                           "baseline": "DenseRetriever at the same k", "by_k": {}}
    for k in args.ks:
        arms = {"dense": DenseRetriever(store, k=k), "multihop": MultiHopRetriever(store, k=k),
                "first_stage_only": MultiHopRetriever(store, k=k, n_hops=1),
                "treehop_only": MultiHopRetriever(store, k=k, links=False, hop_network=True),
                "multihop_with_hop_network": MultiHopRetriever(store, k=k, hop_network=True),
                "dense_first_stage_treehop": MultiHopRetriever(store, k=k, first_stage="dense", links=False),
                "dense_first_stage_links": MultiHopRetriever(store, k=k, first_stage="dense", hop_network=False)}
        row: dict[str, Any] = {label: {} for label in arms}
        qs = [q for ds in sets.values() for q in ds.questions[: args.latency_questions]]
        for label, r in arms.items():
            # Recall on the whole set (batched, cached question vectors: same hits as one-by-one).
            row[label].update({name: res[f"R@{k}"] for name, res in evaluate(r, sets, (k,)).items()})
            row[label]["ms_per_query"] = round(timed(r.retrieve, qs)[1], 2)
        d_ms, m_ms = row["dense"]["ms_per_query"], row["multihop"]["ms_per_query"]
        row["recall_gain_points"] = {n: round(row["multihop"][n] - row["dense"][n], 2) for n in sets}
        row["hop_network_gain_points"] = {  # what the network's children add over the same run without them
            "over_hybrid_first_stage": {n: round(row["treehop_only"][n] - row["first_stage_only"][n], 2) for n in sets},
            "over_the_default": {n: round(row["multihop_with_hop_network"][n] - row["multihop"][n], 2) for n in sets},
            "over_dense": {n: round(row["dense_first_stage_treehop"][n] - row["dense"][n], 2) for n in sets}}
        row["latency_ratio_multihop_vs_dense"] = round(m_ms / d_ms, 2)
        res["by_k"][str(k)] = row
    # Untitled arm: the same passages without titles (title links cannot fire; entity links use the subject
    # each passage opens with), and what each hop kind adds (hits by their metadata "via").
    bare = untitled(store, DiskEmbeddingCache(enc))
    res["untitled"] = {}
    for k in args.ks:
        arms = {"dense": DenseRetriever(bare, k=k), "multihop": MultiHopRetriever(bare, k=k),
                "multihop_no_entity_links": MultiHopRetriever(bare, k=k, links=TitleLinks(bare, infer_subjects=False)),
                "multihop_with_hop_network": MultiHopRetriever(bare, k=k, hop_network=True),
                "first_stage_only": MultiHopRetriever(bare, k=k, n_hops=1)}
        row = {label: {n: v[f"R@{k}"] for n, v in evaluate(r, sets, (k,)).items()} for label, r in arms.items()}
        row["gain_points_multihop_vs_dense"] = {n: round(row["multihop"][n] - row["dense"][n], 2) for n in sets}
        res["untitled"][str(k)] = row
    res["hits_by_hop_kind_k10"] = {f"{corpus}{tag}": via_counts(MultiHopRetriever(s, k=10, hop_network=net), sets)
                                   for corpus, s in (("titled", store), ("untitled", bare))
                                   for tag, net in (("", "auto"), ("_with_hop_network", True))}
    if args.llm_questions:
        # The LLM loop's hits do not depend on k (two rounds of 5, merged), so it runs once.
        small = {n: subset(ds, args.llm_questions) for n, ds in sets.items()}
        iter_rg = IterRetGen(store, k=max(args.ks))
        iter_rg.retrieve("warm-up question")
        llm_hits = {n: timed(iter_rg.retrieve, ds.questions) for n, ds in small.items()}
        llm_row: dict[str, Any] = {"questions_per_set": args.llm_questions}
        for k in args.ks:
            dense, multi = DenseRetriever(store, k=k), MultiHopRetriever(store, k=k)
            for label, r in (("dense", dense), ("multihop", multi)):
                rec, ms = {}, []
                for name, ds in small.items():
                    hits, t = timed(r.retrieve, ds.questions)
                    rec[name] = round(100 * recall(hits, ds.gold, k), 2)
                    ms.append(t)
                llm_row.setdefault(str(k), {})[label] = {**rec, "ms_per_query": round(float(np.mean(ms)), 2)}
            rec = {n: round(100 * recall(h, small[n].gold, k), 2) for n, (h, _) in llm_hits.items()}
            llm_ms = float(np.mean([t for _, t in llm_hits.values()]))
            row = llm_row[str(k)]
            row["iter_retgen_smollm2"] = {**rec, "ms_per_query": round(llm_ms, 2)}
            row["latency_ratio_multihop_vs_iter_retgen"] = round(row["multihop"]["ms_per_query"] / llm_ms, 4)
        res["llm_rewrite_subset"] = llm_row
    report("multihop", res)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.8))
        for k in args.ks:
            row = res["by_k"][str(k)]
            for label, marker in (("dense", "o"), ("multihop", "s")):
                mean_r = np.mean([row[label][n] for n in sets])
                ax.scatter(row[label]["ms_per_query"], mean_r, marker=marker, s=50, label=f"{label} k={k}")
            if "llm_rewrite_subset" in res:
                sub = res["llm_rewrite_subset"][str(k)]["iter_retgen_smollm2"]
                ax.scatter(sub["ms_per_query"], np.mean([sub[n] for n in sets]), marker="^", s=50,
                           label=f"Iter-RetGen (SmolLM2) k={k}, subset")
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (2 CPU cores, log)")
        ax.set_ylabel("mean recall of gold passages (%)")
        ax.set_title(f"Multi-hop dev sets, {len(store)} passages")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot_path("multihop"), dpi=120)


if __name__ == "__main__":
    main()
