"""Train the TreeHop hop network (:class:`latentrag.models.hop.HopModel`) on multi-hop QA records.

Data: ``$LATENTRAG_DATA/multihop/train*.jsonl`` (the unified record of ``shared/data/README.md``). Every
passage is embedded once with the shipped MiniLM and cached in ``latentrag.paths.cache_dir()/multihop/``
so later runs and the benchmark reuse the vectors. The loss is InfoNCE of the next query against the passage it
should reach, with three kinds of negatives: the question's own pool, every other passage of the
batch (in-batch), and hard negatives mined from the training store (dense neighbours of the query
and of the parent passage that are not gold). Model selection uses the ``dev_*`` files only.

Command line (wired as ``latentrag train multihop``)::

    latentrag train multihop --out runs/treehop --epochs 30
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentrag.errors import InvalidInputError
from latentrag.paths import cache_dir

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
#: Hop orders that the record gives directly; every other value (``none``, ``list_order(unverified)``)
#: is inferred: the gold passage closer to the question is hop 1.
_EXACT_ORDERS = ("exact", "sf_order")


def data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The shared data folder: ``path``, else ``$LATENTRAG_DATA``, else ``../shared/data`` beside the repo."""
    if path is not None:
        return Path(path)
    env = os.environ.get("LATENTRAG_DATA")
    return Path(env) if env else (_REPO.parent / "shared" / "data")


def cache_root() -> Path:
    """Where embeddings are cached: the user cache folder, :func:`latentrag.paths.cache_dir`."""
    return cache_dir()


def format_passage(title: str | None, text: str) -> str:
    """The passage text that gets embedded and stored: ``"title: text"`` (just ``text`` without a title)."""
    text = " ".join(str(text).split())
    return f"{title}: {text}" if title else text


@dataclass
class MultiHopExample:
    """One question with its gold passages in hop order and its own non-gold pool (formatted texts)."""

    qid: str
    dataset: str
    qtype: str
    question: str
    gold: list[str]
    pool: list[str] = field(default_factory=list)
    ordered: bool = True


def expand_paths(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and glob patterns; raise if nothing matches."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(pat)))
        if not hits:
            msg = f"no data file matches {str(pat)!r}; pass --data FILE_OR_GLOB or set LATENTRAG_DATA."
            raise InvalidInputError(msg)
        out.extend(Path(h) for h in hits)
    return out


def load_examples(paths: Iterable[str | os.PathLike[str]]) -> list[MultiHopExample]:
    """Read unified multi-hop JSONL records. Gold passages are sorted by their ``hop`` field when the
    record's ``hop_order`` is ``exact``/``sf_order``; otherwise ``ordered`` is False (see :func:`infer_order`)."""
    out: list[MultiHopExample] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                r = json.loads(line)
                order = str(r.get("hop_order") or "none")
                ordered = order.startswith(_EXACT_ORDERS)
                golds = list(r.get("gold") or [])
                if ordered:
                    golds = sorted(golds, key=lambda g: (g.get("hop") is None, g.get("hop") or 0))
                gold = _unique(format_passage(g.get("title"), g["text"]) for g in golds)
                pool = [p for p in _unique(format_passage(p.get("title"), p["text"]) for p in r.get("pool") or [])
                        if p not in gold]
                if len(gold) < 1:
                    continue
                out.append(MultiHopExample(
                    qid=str(r.get("id")), dataset=str(r.get("dataset")), qtype=str(r.get("qtype") or ""),
                    question=str(r["question"]), gold=gold, pool=pool, ordered=ordered,
                ))
    return out


def load_corpus_files(root: Path) -> list[str]:
    """Extra passages (``multihop/corpus/*.json``) used only as a pool for mining hard negatives."""
    texts: list[str] = []
    for path in sorted((root / "multihop" / "corpus").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            texts.extend(format_passage(t, "".join(v) if isinstance(v, list) else str(v)) for t, v in data.items())
        else:
            texts.extend(format_passage(d.get("title"), d["text"]) for d in data)
    return _unique(texts)


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


# ---------------------------------------------------------------------------------------------- embedding cache
class DiskEmbeddingCache:
    """Text -> embedding rows in one ``.npz`` per encoder (SHA-1 keys), appended as new texts arrive."""

    def __init__(self, encoder: Any, folder: Path | None = None) -> None:
        self.encoder = encoder
        folder = folder or (cache_root() / "multihop")
        folder.mkdir(parents=True, exist_ok=True)
        tag = hashlib.sha1(f"{encoder.name}|{encoder.dim}".encode()).hexdigest()[:10]
        self.path = folder / f"emb-{tag}.npz"
        self._index: dict[str, int] = {}
        self._vecs = np.zeros((0, int(encoder.dim)), dtype=np.float32)
        if self.path.exists():
            with np.load(self.path) as z:
                keys = [str(k) for k in z["keys"]]
                self._vecs = np.asarray(z["vecs"], dtype=np.float32)
            self._index = {k: i for i, k in enumerate(keys)}

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def _save(self) -> None:
        keys = np.array(sorted(self._index, key=self._index.__getitem__))
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vecs=self._vecs)
        os.replace(tmp, self.path)

    def embed(self, texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """Embeddings of ``texts`` (n, dim); unseen texts are encoded in chunks and saved after each chunk."""
        keys = [self._key(t) for t in texts]
        missing = _unique(t for t, k in zip(texts, keys, strict=True) if k not in self._index)
        if missing:
            logger.info("encoding %d new texts with %s", len(missing), self.encoder.name)
        for s in range(0, len(missing), chunk):
            part = missing[s : s + chunk]
            vecs = self.encoder.encode(part, show_progress=True)
            base = len(self._vecs)
            self._vecs = np.concatenate([self._vecs, vecs.astype(np.float32)])
            for j, t in enumerate(part):
                self._index[self._key(t)] = base + j
            self._save()
        return self._vecs[[self._index[k] for k in keys]] if keys else self._vecs[:0]


# ---------------------------------------------------------------------------------------------- training set
@dataclass
class TrainSet:
    """Embedded training data: passage matrix, question vectors and, per question, row indices."""

    passages: np.ndarray  # (n_passages, dim)
    questions: np.ndarray  # (n_questions, dim)
    gold: list[list[int]]  # hop order (inferred where the record gives none)
    pool: list[list[int]]
    hard: list[list[int]]  # dense neighbours of the question / hop-1 gold that are not gold
    examples: list[MultiHopExample]
    texts: list[str] = field(default_factory=list)  # the passage of each row of ``passages``
    #: loss weight of each question's edges: 1 for real questions, less for synthetic bridge chains
    weights: list[float] = field(default_factory=list)

    def weight(self, i: int) -> float:
        return self.weights[i] if i < len(self.weights) else 1.0


def build_trainset(
    examples: list[MultiHopExample], cache: DiskEmbeddingCache, extra_passages: Sequence[str] = (), n_hard: int = 30
) -> TrainSet:
    """Embed every passage once, infer missing hop orders and mine hard negatives from the whole store."""
    texts = _unique([t for e in examples for t in (*e.gold, *e.pool)] + list(extra_passages))
    row = {t: i for i, t in enumerate(texts)}
    pvecs = cache.embed(texts)
    qvecs = cache.embed([e.question for e in examples])
    gold, pool = [], []
    for i, e in enumerate(examples):
        g = [row[t] for t in e.gold]
        if not e.ordered and len(g) > 1:
            # No hop order in the record (HotpotQA): the gold passage closer to the question is hop 1.
            sims = pvecs[g] @ qvecs[i]
            g = [g[j] for j in np.argsort(-sims, kind="stable")]
        gold.append(g)
        pool.append([row[t] for t in e.pool])
    hard = _mine_hard(pvecs, qvecs, gold, n_hard)
    return TrainSet(pvecs, qvecs, gold, pool, hard, examples, texts, [1.0] * len(examples))


#: Question shapes for a synthetic bridge chain: ``{a}`` the source passage's title, ``{clue}`` what the target
#: passage says about its subject (its title removed), as real compositional questions word it.
_CHAIN_TEMPLATES = ("{clue} of {a}?", "Which {clue} is connected to {a}?", "{a}: the {clue}",
                    "Who or what {clue} in {a}?")
_CLUE_WORDS = 10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chain_clue(target_title: str, body: str) -> str | None:
    """What a passage says about its subject, as a question would ask it: the opening sentence of ``body``
    with the title, brackets and numbers removed, cut to a few words (``None`` when nothing is left).

    >>> chain_clue("Dillon Francis", "Dillon Hart Francis (born October 5, 1987) is an American DJ. He ...")
    'Hart is an American DJ'
    """
    first = _SENTENCE_END.split(body.strip(), maxsplit=1)[0]
    first = re.sub(r"\([^)]*\)", " ", first)
    for word in re.findall(r"\w+", target_title):
        first = re.sub(rf"\b{re.escape(word)}\b", " ", first)
    first = re.sub(r"\d+", " ", first)
    words = [w for w in re.findall(r"[\w'’-]+", first) if w]
    if len(words) < 3:
        return None
    return " ".join(words[:_CLUE_WORDS])


def bridge_chains(ts: TrainSet, *, per_source: int = 2, rng: random.Random | None = None) -> list[tuple[str, int, int]]:
    """Synthetic two-hop chains from the training passages themselves: passage A mentions the title of
    passage B (the bridge), and a question names A and asks what B says about its subject
    (:data:`_CHAIN_TEMPLATES`, :func:`chain_clue`). Returns ``(question, row of A, row of B)``; at most
    ``per_source`` chains start at one passage. Only training passages are used, never dev ones."""
    from latentrag.encoders import default_encoder
    from latentrag.retrievers.links import TitleLinks, title_of
    from latentrag.stores.faiss import FaissStore

    rng = rng or random.Random(0)
    store = FaissStore.from_texts(ts.texts, ids=[str(i) for i in range(len(ts.texts))],
                                  encoder=default_encoder(), vectors=ts.passages)
    links = TitleLinks(store, infer_subjects=False)
    chains: list[tuple[str, int, int]] = []
    for a, text in enumerate(ts.texts):
        title = title_of(text)
        if title is None:
            continue
        targets = [int(t) for t in links.mentioned(text, exclude_title=title) if int(t) != a]
        for b in rng.sample(targets, min(per_source, len(targets))):
            b_title = title_of(ts.texts[b])
            clue = chain_clue(b_title, ts.texts[b].removeprefix(f"{b_title}: ")) if b_title else None
            if clue is None:
                continue
            chains.append((rng.choice(_CHAIN_TEMPLATES).format(a=title, clue=clue), a, b))
    return chains


def add_chains(ts: TrainSet, chains: list[tuple[str, int, int]], cache: DiskEmbeddingCache, weight: float,
               n_hard: int = 30) -> TrainSet:
    """``ts`` with the synthetic ``chains`` appended as ordered two-passage questions of loss ``weight``."""
    if not chains:
        return ts
    qvecs = cache.embed([q for q, _, _ in chains])
    gold = [[a, b] for _, a, b in chains]
    hard = _mine_hard(ts.passages, qvecs, gold, n_hard)
    return TrainSet(ts.passages, np.concatenate([ts.questions, qvecs]), ts.gold + gold, ts.pool + [[] for _ in gold],
                    ts.hard + hard, ts.examples, ts.texts,
                    [ts.weight(i) for i in range(len(ts.gold))] + [weight] * len(gold))


def _mine_hard(pvecs: np.ndarray, qvecs: np.ndarray, gold: list[list[int]], n_hard: int) -> list[list[int]]:
    import faiss

    index = faiss.IndexFlatIP(pvecs.shape[1])
    index.add(pvecs)
    first = np.stack([pvecs[g[0]] for g in gold])
    _, by_q = index.search(np.ascontiguousarray(qvecs), n_hard + 8)
    _, by_c = index.search(np.ascontiguousarray(first), n_hard + 8)
    out = []
    for i, g in enumerate(gold):
        gs = set(g)
        a = [int(j) for j in by_q[i] if j >= 0 and j not in gs][: n_hard // 2]
        b = [int(j) for j in by_c[i] if j >= 0 and j not in gs and j not in a][: n_hard - len(a)]
        out.append(a + b)
    return out


@dataclass
class Edge:
    """One training edge: the model is applied along ``path`` (passage rows) starting from the question,
    and the resulting next query must find one of ``positives``."""

    example: int
    path: list[int]
    positives: list[int]
    weight: float = 1.0


def build_edges(ts: TrainSet, *, complement: bool = True, distractors: int = 1, distractor_weight: float = 0.5,
                rng: random.Random | None = None) -> list[Edge]:
    """Edges for one epoch.

    - chain: ``[g1..gt] -> g(t+1)`` along the hop order (TreeHop's own edges);
    - complement (``complement=True``): ``[g_i] -> every other gold`` (covers comparison questions and
      questions whose hop order is uncertain);
    - distractor: ``[d] -> any gold`` for ``distractors`` hard negatives ``d`` that a dense hop 1 would
      return, so a branch through a wrong passage still heads for the evidence.
    """
    rng = rng or random.Random(0)
    edges: list[Edge] = []
    for i, g in enumerate(ts.gold):
        if len(g) < 2:
            continue
        w = ts.weight(i)
        for t in range(1, len(g)):
            edges.append(Edge(i, g[:t], [g[t]], w))
        if complement:
            for j, gj in enumerate(g):
                rest = [x for x in g if x != gj]
                if j == 0 and len(g) == 2:
                    continue  # identical to the first chain edge
                edges.append(Edge(i, [gj], rest, w))
        if distractors and ts.hard[i]:
            near_q = ts.hard[i][: max(1, len(ts.hard[i]) // 2)][:5]
            for d in rng.sample(near_q, min(distractors, len(near_q))):
                edges.append(Edge(i, [d], list(g), distractor_weight * w))
    return edges


# ---------------------------------------------------------------------------------------------- dev evaluation
@dataclass
class DevSet:
    """One dev file group: questions, their embeddings and gold passage keys (title, else text)."""

    name: str
    questions: list[str]
    vectors: np.ndarray
    gold: list[set[str]]


def passage_key(title: str | None, text: str) -> str:
    """What counts as "the same passage" for recall: its title (TreeHop's protocol), else its text."""
    return title if title else format_passage(None, text)


def passage_id(formatted: str) -> str:
    """Stable id of a formatted passage in the shared benchmark corpus."""
    return hashlib.sha1(formatted.encode("utf-8")).hexdigest()[:16]


def load_dev(root: Path, cache: DiskEmbeddingCache, patterns: Sequence[str] | None = None,
             limit: int | None = None) -> tuple[Any, dict[str, DevSet]]:
    """The shared dev corpus (union of every dev pool and gold passage, deduplicated) as a FaissStore
    over cached vectors, plus one :class:`DevSet` per dev file group (``dev_2wiki.part*`` -> ``2wiki``)."""
    from latentrag.stores.faiss import FaissStore

    files = expand_paths(patterns or [str(root / "multihop" / "dev_*.jsonl")])
    groups: dict[str, list[Path]] = {}
    for f in files:
        name = f.name.split(".")[0].removeprefix("dev_")
        groups.setdefault(name, []).append(f)
    texts: dict[str, str] = {}
    sets: dict[str, DevSet] = {}
    for name, paths in groups.items():
        qs, gold = [], []
        for path in paths:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    r = json.loads(line)
                    for p in (*r.get("pool", []), *r["gold"]):
                        t = format_passage(p.get("title"), p["text"])
                        texts.setdefault(t, passage_key(p.get("title"), p["text"]))
                    qs.append(r["question"])
                    gold.append({passage_key(g.get("title"), g["text"]) for g in r["gold"]})
        if limit:
            qs, gold = qs[:limit], gold[:limit]
        sets[name] = DevSet(name, qs, cache.embed(qs), gold)
    corpus = list(texts)
    store = FaissStore.from_texts(
        corpus, ids=[passage_id(t) for t in corpus], metadatas=[{"key": texts[t]} for t in corpus],
        encoder=cache.encoder, vectors=cache.embed(corpus),
    )
    return store, sets


def untitled_store(store: Any, cache: Any) -> Any:
    """A FaissStore of ``store``'s passages without their ``"Title: "`` prefix (what most corpora look like),
    with the same ids and the metadata ``key`` (the title) recall is scored by; ``cache`` embeds the texts."""
    from latentrag.stores.faiss import FaissStore

    ids = store.ids()
    hits = store.get(ids)
    texts = [h.text.removeprefix(f"{h.metadata['key']}: ") for h in hits]
    return FaissStore.from_texts(texts, ids=ids, metadatas=[{"key": h.metadata["key"]} for h in hits],
                                 encoder=store.encoder, vectors=cache.embed(texts))


def recall(hits: list[list[Any]], gold: list[set[str]], k: int) -> float:
    """Micro recall of gold passage keys among the first ``k`` hits of each question."""
    found = sum(len(g & {h.metadata["key"] for h in hs[:k]}) for hs, g in zip(hits, gold, strict=True))
    return found / max(1, sum(len(g) for g in gold))


def evaluate(retriever: Any, sets: dict[str, DevSet], ks: Sequence[int] = (5, 10)) -> dict[str, dict[str, float]]:
    """Recall@k of ``retriever`` on every dev set, using the cached question vectors."""
    out: dict[str, dict[str, float]] = {}
    for name, ds in sets.items():
        res = {}
        for k in ks:
            hits = retriever._retrieve_batch(ds.questions, k, ds.vectors)
            res[f"R@{k}"] = round(100 * recall(hits, ds.gold, k), 2)
        out[name] = res
    return out


# ---------------------------------------------------------------------------------------------- training
def train_multihop(
    data_paths: Sequence[str | os.PathLike[str]] | None = None,
    out_dir: str | os.PathLike[str] = "runs/treehop",
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 0.01,
    temperature: float = 0.05,
    g_size: int = 768,
    n_mlp: int = 2,
    dropout: float = 0.1,
    n_hard: int = 30,
    hard_per_edge: int = 8,
    complement: bool = True,
    distractors: int = 1,
    distractor_weight: float = 0.5,
    calibrate: bool = True,
    synthetic: int = 0,
    synthetic_weight: float = 0.5,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    dev_paths: Sequence[str] | None = None,
    dev_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a :class:`~latentrag.models.hop.HopModel` and save the best epoch (mean dev recall@10 of
    :class:`~latentrag.retrievers.MultiHopRetriever`) into ``out_dir``. Returns the training report."""
    import torch
    from tqdm.auto import tqdm

    from latentrag.encoders import default_encoder
    from latentrag.models.hop import HopModel
    from latentrag.retrievers.dense import DenseRetriever
    from latentrag.retrievers.multihop import MultiHopRetriever

    t_start = time.time()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    root = data_root(data_dir)
    paths = expand_paths(data_paths or [str(root / "multihop" / "train*.jsonl")])
    encoder = default_encoder()
    cache = DiskEmbeddingCache(encoder)
    examples = load_examples(paths)
    ts = build_trainset(examples, cache, load_corpus_files(root), n_hard=n_hard)
    n_chains = 0
    if synthetic:
        chains = bridge_chains(ts, per_source=synthetic, rng=random.Random(seed))
        n_chains = len(chains)
        logger.info("synthetic bridge chains: %d", n_chains)
        ts = add_chains(ts, chains, cache, synthetic_weight, n_hard=n_hard)
    store, dev = load_dev(root, cache, dev_paths, dev_limit)
    dense = {k: v for k, v in evaluate(DenseRetriever(store, k=10), dev).items()}
    dev_size = len(store)
    logger.info("dense dev recall: %s", dense)

    model = HopModel(x_size=int(encoder.dim), g_size=g_size, n_mlp=n_mlp, dropout=dropout, encoder_name=encoder.name)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    P = torch.from_numpy(ts.passages)
    Q = torch.from_numpy(ts.questions)
    rng = random.Random(seed)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    best_state: dict[str, Any] = {}
    n_steps = 0
    for epoch in range(1, epochs + 1):
        model.train()
        edges = build_edges(ts, complement=complement, distractors=distractors,
                            distractor_weight=distractor_weight, rng=rng)
        rng.shuffle(edges)
        batches = [edges[s : s + batch_size] for s in range(0, len(edges), batch_size)]
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        total = 0.0
        for batch in bar:
            loss = _batch_loss(model, batch, ts, P, Q, temperature, hard_per_edge, rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss):.4f}")
        model.eval()
        scores = evaluate(MultiHopRetriever(store, k=10, model=model, stop_score=None, links=False), dev)
        mean10 = float(np.mean([v["R@10"] for v in scores.values()]))
        row = {"epoch": epoch, "loss": round(total / max(1, len(batches)), 4), "dev": scores, "mean_R@10": mean10}
        history.append(row)
        logger.info("epoch %d loss %.4f dev %s", epoch, row["loss"], scores)
        if progress:
            tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f} mean R@10 {mean10:.2f} {scores}")
        if best is None or mean10 > best[0]:
            best = (mean10, epoch, scores)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best is not None
    model.load_state_dict(best_state)
    model.eval()
    if not calibrate:
        fusion = {"alpha": 0.3, "hop_penalty": 0.1, "skipped": True}
        model.extra = {"alpha": 0.3, "hop_penalty": 0.1}
        out = model.save(out_dir)
        report = {"history": history, "best_epoch": best[1], "dev_dense": dense, "dev_multihop": best[2]}
        (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return report
    fusion = calibrate_fusion(store, dev, model)
    model.extra = {"alpha": fusion["alpha"], "hop_penalty": fusion["hop_penalty"]}
    stop = calibrate_stop(store, dev, model)
    report = {
        "train_files": [str(p) for p in paths],
        "n_train_questions": len(examples),
        "n_train_passages": len(ts.passages),
        "hyperparameters": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "temperature": temperature, "g_size": g_size, "n_mlp": n_mlp, "dropout": dropout, "n_hard": n_hard,
            "hard_per_edge": hard_per_edge, "complement": complement, "distractors": distractors,
            "distractor_weight": distractor_weight, "synthetic_per_passage": synthetic,
            "synthetic_weight": synthetic_weight, "seed": seed,
        },
        "n_synthetic_chains": n_chains,
        "best_epoch": best[1],
        "dev_dense": dense,
        "dev_multihop": best[2],
        "fusion_calibration": fusion,
        "stop_calibration": stop,
        "history": history,
        "train_seconds": round(time.time() - t_start, 1),
        "dev_corpus_size": dev_size,
        "n_parameters": model.n_parameters(),
    }
    model.extra["stop_score"] = stop["stop_score"]
    final = evaluate(MultiHopRetriever(store, k=10, model=model, links=False), dev)
    report["dev_multihop_calibrated"] = final
    model.extra = {"alpha": fusion["alpha"], "hop_penalty": fusion["hop_penalty"], "stop_score": stop["stop_score"],
                   "best_epoch": best[1], "dev_multihop": final, "dev_dense": dense}
    out = model.save(out_dir)
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card(report), encoding="utf-8")
    return report


def model_card(report: dict[str, Any]) -> str:
    """The model card written beside the weights: data, command, hyper-parameters and dev figures."""
    hp = report["hyperparameters"]
    flags = (f"--epochs {hp['epochs']} --lr {hp['lr']} --g-size {hp['g_size']} --n-mlp {hp['n_mlp']} "
             f"--dropout {hp['dropout']} --temperature {hp['temperature']} "
             f"--seed {hp['seed']}")
    rows = []
    for name, dense in report["dev_dense"].items():
        multi = report["dev_multihop_calibrated"][name]
        rows.append(f"| {name} | {dense['R@5']:.2f} | {multi['R@5']:.2f} | {dense['R@10']:.2f} | {multi['R@10']:.2f} "
                    f"| {multi['R@10'] - dense['R@10']:+.2f} |")
    fusion, stop = report["fusion_calibration"], report["stop_calibration"]
    files = ", ".join(Path(f).name for f in report["train_files"])
    return f"""# TreeHop hop network for all-MiniLM-L6-v2 (latentrag)

`q_next = normalize(q - c + W_o g(q, c) + W_c c)`: TreeHop's feature-axis attention and residual MLP
(`g_size={hp['g_size']}`, `n_mlp={hp['n_mlp']}`, {report['n_parameters']:,} parameters) plus a linear skip `W_c`
initialised at `2 I`. Tied to the encoder `sentence-transformers/all-MiniLM-L6-v2` (384-d); loading it for
another encoder is an error.

## Training
- Data: `shared/data/multihop/{files}` ({report['n_train_questions']} questions: HotpotQA, 2WikiMultihopQA,
  MuSiQue; licenses in `shared/data/SOURCES.tsv`), {report['n_train_passages']} passages (gold, pools and the
  `corpus/` files). Hop order from `exact`/`sf_order`; HotpotQA's inferred (gold closer to the question first).
- Loss: InfoNCE of the next query over the whole training store (own pool, in-batch and mined hard negatives
  all included), temperature {hp['temperature']}, AdamW lr {hp['lr']}, weight decay {hp['weight_decay']},
  batch {hp['batch_size']}, dropout {hp['dropout']}, seed {hp['seed']}.
- Command (CPU, {report['train_seconds']:.0f} s on 2 cores, embeddings cached):
  `latentrag train multihop --out DIR {flags}`
- Selection: best epoch ({report['best_epoch']}) by mean dev recall@10; then the path-fusion weights
  (alpha={fusion['alpha']}, hop_penalty={fusion['hop_penalty']}) and the branch stop threshold
  ({stop['stop_score']}) calibrated on the same dev files. No test split was used.

## Dev figures (the hop network alone, `MultiHopRetriever(store, k, links=False)`, vs `DenseRetriever(store, k)`)
With the default title links the retriever reaches far more; see `benchmarks/multihop.py`.
Corpus: the union of all dev pools and gold passages ({report.get('dev_corpus_size', 'n/a')} passages).
Recall of gold passages by title, micro-averaged.

| dev set | dense R@5 | multi-hop R@5 | dense R@10 | multi-hop R@10 | R@10 gain |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n" + WHERE_IT_RUNS


#: The part of the model card that training does not measure: where the default retriever uses the network.
WHERE_IT_RUNS = """
## Where the default uses it
`MultiHopRetriever(hop_network="auto")` runs this network after a **dense** first stage only. After the default
hybrid (dense + BM25) first stage its children displaced better first-stage hits on all three dev sets, titled and
untitled, at every fusion setting tried (`benchmarks/multihop.py`, rows `treehop_only` against `first_stage_only`
and `multihop_with_hop_network` against `multihop`), so there the retriever follows title and entity links alone.
`hop_network=True` forces it on. Synthetic bridge chains (`--synthetic 2`: 4,692 chains where a training passage
names another's title) did not change that (best dev mean R@10 82.7 against 82.3 without), so the shipped weights
do not use them.
"""


def _batch_loss(model: Any, batch: list[Edge], ts: TrainSet, P: Any, Q: Any, temperature: float,
                hard_per_edge: int, rng: random.Random) -> Any:
    """InfoNCE of each edge's next query over the *whole* training store.

    Every training passage is a candidate, so the negatives include the question's own pool, every
    other question's passages (in-batch) and the hard negatives mined from the store, exactly as the
    next query meets them at retrieval time. The passages on the edge's path are masked out: the
    retriever prunes them as redundant. With about 27k passages a (64, 27k) logit matrix is cheap.
    ``hard_per_edge`` extra copies of mined hard negatives sharpen the loss near the decision boundary.
    """
    import torch

    n = len(batch)
    pos_mask = torch.zeros(n, P.shape[0], dtype=torch.bool)
    path_mask = torch.zeros(n, P.shape[0], dtype=torch.bool)
    for i, e in enumerate(batch):
        pos_mask[i, e.positives] = True
        path_mask[i, e.path] = True
    path_mask &= ~pos_mask
    q = Q[torch.tensor([e.example for e in batch])]
    lens = torch.tensor([len(e.path) for e in batch])
    for t in range(int(lens.max())):
        c = P[torch.tensor([e.path[min(t, len(e.path) - 1)] for e in batch])]
        q_new = model(q, c)
        q = torch.where((lens > t)[:, None], q_new, q)
    logits = (q @ P.T / temperature).masked_fill(path_mask, float("-inf"))
    if hard_per_edge:
        hard = [rng.sample(ts.hard[e.example], min(hard_per_edge, len(ts.hard[e.example]))) or [0] for e in batch]
        width = max(len(h) for h in hard)
        idx = torch.tensor([h + [h[-1]] * (width - len(h)) for h in hard])
        extra = torch.gather(logits, 1, idx).masked_fill(torch.gather(pos_mask | path_mask, 1, idx), float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
        pos_mask = torch.cat([pos_mask, torch.zeros_like(idx, dtype=torch.bool)], dim=1)
    weights = torch.tensor([e.weight for e in batch], dtype=torch.float32)
    pos = torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), dim=1)
    every = torch.logsumexp(logits, dim=1)
    return ((every - pos) * weights).sum() / weights.sum()


def calibrate_fusion(store: Any, dev: dict[str, DevSet], model: Any,
                     alphas: Sequence[float] = (0.0, 0.2, 0.3, 0.4, 0.5),
                     penalties: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2)) -> dict[str, Any]:
    """Grid-search the path fusion's ``alpha`` and ``hop_penalty`` on the dev sets: the pair with the
    best mean gain over dense retrieval in recall@5 and recall@10, averaged over the dev sets."""
    from latentrag.retrievers.dense import DenseRetriever
    from latentrag.retrievers.multihop import MultiHopRetriever

    dense = evaluate(DenseRetriever(store, k=10), dev)

    def gain(res: dict[str, dict[str, float]]) -> float:
        return float(np.mean([res[n][m] - dense[n][m] for n in res for m in ("R@5", "R@10")]))

    table = {}
    best: tuple[float, float, float] | None = None
    for a in alphas:
        for d in penalties:
            res = evaluate(MultiHopRetriever(store, k=10, model=model, stop_score=None, alpha=a, hop_penalty=d,
                                                links=False), dev)
            table[f"alpha={a},hop_penalty={d}"] = g = round(gain(res), 3)
            if best is None or g > best[0]:
                best = (g, a, d)
    assert best is not None
    return {"alpha": best[1], "hop_penalty": best[2], "mean_gain_points": best[0], "grid": table}


def calibrate_stop(store: Any, dev: dict[str, DevSet], model: Any,
                   grid: Sequence[float] = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8),
                   tolerance: float = 0.1) -> dict[str, Any]:
    """The branch-stop threshold with the best mean dev recall@10 (ties: the lower, more conservative
    threshold), provided it stays within ``tolerance`` points of no stop at all; else ``None``."""
    from latentrag.retrievers.multihop import MultiHopRetriever

    def mean_r10(stop: float | None) -> float:
        res = evaluate(MultiHopRetriever(store, k=10, model=model, stop_score=stop, links=False), dev, ks=(10,))
        return float(np.mean([v["R@10"] for v in res.values()]))

    base = mean_r10(None)
    table = {str(s): mean_r10(s) for s in grid}
    best = max(grid, key=lambda s: (round(table[str(s)], 6), -s))
    chosen = best if table[str(best)] >= base - tolerance else None
    return {"stop_score": chosen, "mean_R@10_no_stop": base, "mean_R@10_by_threshold": table,
            "tolerance": tolerance}


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latentrag train multihop", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=None,
                   help="training JSONL files or globs (default: $LATENTRAG_DATA/multihop/train*.jsonl)")
    p.add_argument("--out", required=True, help="output folder for model.safetensors + config.json")
    p.add_argument("--data-dir", default=None, help="shared data root (default: $LATENTRAG_DATA or ../shared/data)")
    p.add_argument("--dev", nargs="+", default=None, help="dev JSONL files or globs for model selection")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--g-size", type=int, default=768)
    p.add_argument("--n-mlp", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--hard-per-edge", type=int, default=8)
    p.add_argument("--no-complement", action="store_true", help="train on hop-order chain edges only")
    p.add_argument("--distractors", type=int, default=1)
    p.add_argument("--no-calibrate", action="store_true", help="skip the fusion/stop calibration (experiments)")
    p.add_argument("--synthetic", type=int, default=0,
                   help="synthetic bridge chains per training passage (A mentions B's title; 0: none)")
    p.add_argument("--synthetic-weight", type=float, default=0.5, help="loss weight of a synthetic chain's edges")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``latentrag train multihop``: train, select on dev, save; prints the report summary as JSON."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = train_multihop(
        args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, temperature=args.temperature, g_size=args.g_size, n_mlp=args.n_mlp,
        dropout=args.dropout, hard_per_edge=args.hard_per_edge, complement=not args.no_complement,
        distractors=args.distractors, calibrate=not args.no_calibrate, synthetic=args.synthetic,
        synthetic_weight=args.synthetic_weight, seed=args.seed,
        data_dir=args.data_dir, dev_paths=args.dev,
        progress=not args.quiet,
    )
    summary = {k: report.get(k) for k in ("best_epoch", "dev_dense", "dev_multihop", "stop_calibration",
                                           "train_seconds")}
    logger.info("saved to %s: %s", args.out, json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
