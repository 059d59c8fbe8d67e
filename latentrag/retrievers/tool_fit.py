"""Fitting the learned stage of tool retrieval (:class:`~latentrag.models.tool_refiner.LearnedStage`: the
low-rank :class:`~latentrag.models.tool_adapter.QueryAdapter`, the
:class:`~latentrag.models.tool_refiner.ToolRefiner` and the residual
:class:`~latentrag.models.tool_mlc.MLCHead`) on a tool index's own usage examples. Called by
:meth:`ToolRetriever.fit <latentrag.retrievers.tools.ToolRetriever.fit>`; inference code, so it lives here
and not in :mod:`latentrag.training`.

Each example is replayed as a request with itself left out of the index (leave-one-out features), so
the stage learns from the situation it meets at query time: a new request whose own phrasing is not
among the examples. Its candidates are the first stage's (its own tools forced in), the loss a listwise
softmax over them with the example's tools as positives; the head starts at zero with an L2 penalty, so
it only moves a tool's score as far as that tool's examples support. Mini-batch Adam in numpy (no torch:
nothing to import, no thread pool to share with the encoder); about a second for a thousand examples.

The adapter is fitted first (:func:`fit_adapter`): InfoNCE of the adapted example vectors against fixed
tool vectors (description and Tool2Vec mean in the first stage's proportions, the example's own tools
with the example left out of their mean), over every tool (up to :data:`DENSE_MAX_TOOLS`) or the first
stage's candidates. Its penalty is divided by the number of examples, so a catalogue with few examples
keeps it near the identity (the plain blend) and one with many lets it move requests further. The
refiner and head are then fitted on the adapted example vectors.

The defaults (:class:`FitConfig`) won the cross-validated selection of ``benchmarks/tools.py --select``
over the four shared tool sets (dev splits only; the reported numbers are on the test splits).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from latentrag.errors import InvalidInputError
from latentrag.models.tool_adapter import QueryAdapter
from latentrag.models.tool_mlc import MLCHead
from latentrag.models.tool_refiner import LearnedStage, ToolRefiner
from latentrag.retrievers.tool_index import _normalize_rows

#: A dense ``(batch, warm tools)`` logit matrix up to this many tools with examples; above, the head's rows
#: are gathered per candidate instead (cost set by the candidate count, not the catalogue size).
DENSE_MAX_TOOLS = 1024


@dataclass(frozen=True)
class FitConfig:
    """What the learned stage holds and how it is fitted.

    ``adapter``/``refiner``/``mlc`` switch the three parts (``refiner=False`` keeps the fixed first-stage
    blend and learns only the temperature and the head). ``l2`` is the head's penalty per example;
    ``epochs`` passes over the examples, capped at ``max_steps`` mini-batches; ``min_examples`` is the
    fewest examples ``refiner="auto"`` fits on. The query adapter has rank ``rank``, is trained for
    ``adapter_epochs`` passes (capped at ``max_steps``) at ``adapter_lr``, with the penalty
    ``adapter_l2 / n_examples * |U|^2`` (so it stays near the identity when examples are few)."""

    refiner: bool = True
    mlc: bool = True
    hidden: int = 16
    epochs: int = 60
    max_steps: int = 600
    batch_size: int = 512
    lr: float = 1e-2
    l2: float = 1e-3
    seed: int = 0
    min_examples: int = 20
    adapter: bool = True
    rank: int = 16
    adapter_epochs: int = 30
    adapter_lr: float = 3e-3
    adapter_l2: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("adapter", "refiner", "mlc"):
            if not isinstance(getattr(self, name), bool):
                msg = f"FitConfig.{name} must be True or False, got {getattr(self, name)!r}."
                raise InvalidInputError(msg)
        for name in ("rank", "adapter_epochs", "epochs", "max_steps", "batch_size", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                msg = f"FitConfig.{name} must be a positive integer, got {v!r}."
                raise InvalidInputError(msg)
        for name in ("adapter_lr", "adapter_l2", "lr", "l2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                msg = f"FitConfig.{name} must be a finite number >= 0, got {v!r}."
                raise InvalidInputError(msg)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingBatch:
    """Leave-one-out training inputs: per example, ``rows`` (m, K) candidate tool rows, ``feats`` (m, K, 4),
    ``counts`` (m, K) example counts without the example itself, ``positive`` (m, K), ``x`` (m, dim)."""

    rows: np.ndarray
    feats: np.ndarray
    counts: np.ndarray
    positive: np.ndarray
    x: np.ndarray


def _candidate_rows(index: Any, x: np.ndarray, ids: list[int], weights: Any, n_cand: int) -> list[np.ndarray]:
    """The first stage's top ``n_cand`` tool rows for the example vectors ``x`` (of examples ``ids``), each
    example's own tools forced in (they replace arbitrary ones of the pool)."""
    out = []
    for start in range(0, len(ids), 1024):  # a (1024, n_tools) score block at a time
        for j, rows in enumerate(index.candidates(x[start : start + 1024], weights, n_cand)):
            gold = index.example_tools[ids[start + j]]
            missing = [g for g in gold if g not in set(rows.tolist())]
            if missing:  # into the last slots that hold no gold tool (never over another gold tool)
                rows = rows.copy()
                free = np.flatnonzero(~np.isin(rows, gold))[::-1][: len(missing)]
                rows[free] = missing[: len(free)]
            out.append(rows)
    return out


def training_batch(index: Any, weights: Any, n_cand: int, examples: list[int] | None = None,
                   queries: np.ndarray | None = None) -> TrainingBatch:
    """Candidates (the first stage's top ``n_cand``, as at query time) and leave-one-out features of
    ``examples`` (all by default) of ``index``. ``queries`` (one row per example of the index) replaces
    the example vectors as the requests (the query adapter's output); the index itself is unchanged."""
    ids = list(range(len(index.examples))) if examples is None else list(examples)
    n_cand = min(len(index), n_cand)
    src = index.examples if queries is None else np.asarray(queries, dtype=np.float32)
    x = np.asarray(src[ids], dtype=np.float32)
    rows_l, feats_l, counts_l, pos_l = [], [], [], []
    for ex, rows in zip(ids, _candidate_rows(index, x, ids, weights, n_cand), strict=True):
        pos = np.isin(rows, index.example_tools[ex])
        rows_l.append(rows)
        feats_l.append(index.features(src[ex], rows, weights.top_m, exclude=ex))
        counts_l.append(index.counts[rows] - pos.astype(np.int64))
        pos_l.append(pos)
    dim = index.dim
    if not ids:
        empty = np.zeros((0, n_cand), np.int64)
        return TrainingBatch(empty, np.zeros((0, n_cand, 4), np.float32), empty.copy(), np.zeros((0, n_cand), bool),
                             np.zeros((0, dim), np.float32))
    return TrainingBatch(np.stack(rows_l), np.stack(feats_l), np.stack(counts_l), np.stack(pos_l), x)


def _targets(weights: Any, desc: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Rows of description and Tool2Vec mean vectors blended in the first stage's proportions (``desc``
    against ``mean + max + top``; the mean stands in for the example features), normalised."""
    return _normalize_rows(weights.desc * desc + (weights.mean + weights.max + weights.top) * means)


def adapter_targets(index: Any, weights: Any) -> np.ndarray:
    """The fixed tool vectors the adapter pulls requests toward, ``(n_tools, dim)`` (:func:`_targets`; the
    description alone for a tool without examples)."""
    return _targets(weights, index.desc, index.means())


@dataclass
class _Pairs:
    """The (example, own tool) pairs with the leave-one-out target of that tool for that example, sorted
    by example; ``start[i]:start[i + 1]`` are example ``i``'s pairs, ``col`` its tool's column among the
    example's candidate rows (candidate mode)."""

    ex: np.ndarray
    tool: np.ndarray
    col: np.ndarray
    vec: np.ndarray
    start: np.ndarray


def _pairs(index: Any, weights: Any, rows: list[np.ndarray] | None) -> _Pairs:
    ex_l, tool_l, col_l, mean_l = [], [], [], []
    for i, gold in enumerate(index.example_tools):
        for g in gold:
            if rows is not None and not (rows[i] == g).any():
                continue  # more gold tools than candidate slots: the rest are left out
            rest = index.mean_without(g, i)
            ex_l.append(i)
            tool_l.append(g)
            col_l.append(0 if rows is None else int(np.flatnonzero(rows[i] == g)[0]))
            mean_l.append(index.desc[g] if rest is None else rest)
    ex, tool = np.asarray(ex_l, np.int64), np.asarray(tool_l, np.int64)
    start = np.searchsorted(ex, np.arange(len(index.examples) + 1))
    vec = _targets(weights, index.desc[tool], np.asarray(mean_l, np.float32).reshape(len(ex_l), index.dim))
    return _Pairs(ex, tool, np.asarray(col_l, np.int64), vec, start)


def _adapter_step(p: dict[str, np.ndarray], q: np.ndarray, ix: np.ndarray, targets: np.ndarray,
                  rows: np.ndarray | None, pairs: _Pairs, penalty: float) -> tuple[float, dict[str, np.ndarray]]:
    """InfoNCE loss and gradients of the adapter for the examples ``ix`` (request vectors ``q``): over
    every tool (``rows`` None) or over each example's candidate ``rows`` (b, K); positives are the
    example's own tools with their leave-one-out targets."""
    u, v, inv = p["u"], p["v"], float(np.exp(p["log_scale"][0]))
    h = q @ v  # (b, r)
    z = q + h @ u.T
    nz = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    qa = z / nz
    sel = np.concatenate([np.arange(pairs.start[i], pairs.start[i + 1]) for i in ix])
    bi = np.repeat(np.arange(len(ix)), pairs.start[ix + 1] - pairs.start[ix])
    if rows is None:
        cos = qa @ targets.T  # (b, n)
        cols = pairs.tool[sel]
        tgt_cols = targets[cols]
    else:
        tk = targets[rows]  # (b, K, dim)
        cols = pairs.col[sel]
        tk[bi, cols] = pairs.vec[sel]
        cos = np.einsum("bd,bkd->bk", qa, tk)
    own = np.einsum("pd,pd->p", qa[bi], pairs.vec[sel])
    cos[bi, cols] = own
    pos = np.zeros(cos.shape, bool)
    pos[bi, cols] = True
    logits = inv * cos
    prob, prob_pos = _softmax(logits), _softmax(logits, pos)
    mx = logits.max(1)
    lse = np.log(np.exp(logits - mx[:, None]).sum(1)) + mx
    masked = np.where(pos, logits, -np.inf)
    mp = masked.max(1)
    lse_pos = np.log(np.exp(masked - mp[:, None]).sum(1)) + mp
    b = len(ix)
    g = ((prob - prob_pos) / b).astype(np.float32)  # d loss / d logits
    if rows is None:
        g_qa = inv * (g @ targets)
        np.add.at(g_qa, bi, inv * g[bi, cols, None] * (pairs.vec[sel] - tgt_cols))
    else:
        g_qa = inv * np.einsum("bk,bkd->bd", g, tk)
    g_z = (g_qa - qa * (qa * g_qa).sum(1, keepdims=True)) / nz
    g_u = g_z.T @ h + 2 * penalty * u
    g_v = q.T @ (g_z @ u)
    g_s = np.array([float((g * cos).sum()) * inv], np.float32)
    loss = float((lse - lse_pos).mean()) + penalty * float((u**2).sum())
    return loss, {"u": g_u.astype(np.float32), "v": g_v.astype(np.float32), "log_scale": g_s}


def fit_adapter(index: Any, weights: Any, cfg: FitConfig) -> QueryAdapter:
    """The :class:`~latentrag.models.tool_adapter.QueryAdapter` trained on every usage example of
    ``index`` (see the module docstring): starts at the identity, mini-batch Adam for
    ``cfg.adapter_epochs`` passes (at most ``cfg.max_steps`` steps)."""
    m, dim = len(index.examples), index.dim
    if cfg.rank > dim:
        msg = f"FitConfig.rank is {cfg.rank}, more than the embedding dimension {dim}; use a rank from 1 to {dim}."
        raise InvalidInputError(msg)
    start = QueryAdapter.identity(dim, cfg.rank, cfg.seed)
    if m == 0:
        return start
    targets = adapter_targets(index, weights)
    q_all = np.asarray(index.examples, np.float32)
    dense = len(index) <= DENSE_MAX_TOOLS
    rows_all = None
    if not dense:
        ids = list(range(m))
        rows_all = np.stack(_candidate_rows(index, q_all, ids, weights, min(len(index), weights.candidates)))
    pairs = _pairs(index, weights, None if rows_all is None else list(rows_all))
    p = {"u": start.u.copy(), "v": start.v.copy(), "log_scale": np.array([np.log(20.0)], np.float32)}
    opt = _Adam(p, cfg.adapter_lr)
    rng = np.random.default_rng(cfg.seed + 1)
    per_epoch = max(1, -(-m // cfg.batch_size))
    steps = min(cfg.adapter_epochs * per_epoch, max(cfg.max_steps, per_epoch))
    penalty = cfg.adapter_l2 / m
    done = 0
    while done < steps:
        perm = rng.permutation(m)
        for s in range(0, m, cfg.batch_size):
            ix = perm[s : s + cfg.batch_size]
            _, grads = _adapter_step(p, q_all[ix], ix, targets, None if rows_all is None else rows_all[ix], pairs,
                                     penalty)
            opt.step(p, grads)
            done += 1
            if done >= steps:
                break
    return QueryAdapter(p["u"], p["v"])


class _Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        self.lr, self.t = lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + 1e-8)


def _softmax(z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _Model:
    """The fused score and its gradient for a mini-batch (the math of :class:`LearnedStage`)."""

    def __init__(self, cfg: FitConfig, blend: np.ndarray, n_tools: int, warm: np.ndarray, dim: int) -> None:
        self.cfg, self.blend, self.n_tools = cfg, blend.astype(np.float32), n_tools
        self.n_warm = len(warm)
        self.col = np.full(n_tools, self.n_warm, dtype=np.int64)  # tool row -> head row (cold: a zero row)
        self.col[warm] = np.arange(self.n_warm)
        ref = ToolRefiner.initial(cfg.hidden, tuple(blend.tolist()), cfg.seed)
        self.p: dict[str, np.ndarray] = {"log_inv_tau": np.array([np.log(20.0)], np.float32)}
        if cfg.refiner:
            self.p.update(a=ref.feature_weights.copy(), w1=ref.w1.copy(), b1=ref.b1.copy(), w2=ref.w2.copy())
        if cfg.mlc:
            self.p["W"] = np.zeros((self.n_warm, dim), np.float32)
            self.p["b"] = np.zeros(n_tools, np.float32)

    def loss_grad(self, b: TrainingBatch, share: float) -> tuple[float, dict[str, np.ndarray]]:
        p, cfg = self.p, self.cfg
        f, lc = b.feats, np.log1p(b.counts.astype(np.float32))
        bsz, k = b.rows.shape
        a = p["a"] if cfg.refiner else self.blend
        lin = f @ a
        if cfg.refiner:
            z = np.concatenate([f, lin[..., None], lc[..., None]], axis=-1)
            pre = z @ p["w1"] + p["b1"]
            h = np.maximum(pre, 0.0)
            base = lin + h @ p["w2"]
        else:
            base = lin
        inv = float(np.exp(p["log_inv_tau"][0]))
        logits = inv * base
        if cfg.mlc:
            cols = self.col[b.rows]
            dense = self.n_warm <= DENSE_MAX_TOOLS
            if dense:
                xw = np.concatenate([b.x @ p["W"].T, np.zeros((bsz, 1), np.float32)], axis=1)
                head = np.take_along_axis(xw, cols, axis=1)
            else:
                wz = np.concatenate([p["W"], np.zeros((1, p["W"].shape[1]), np.float32)])
                head = np.einsum("bd,bkd->bk", b.x, wz[cols])
            logits = logits + head + p["b"][b.rows]
        prob, prob_pos = _softmax(logits), _softmax(logits, b.positive)
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        masked = np.where(b.positive, logits, -np.inf)
        lse_pos = np.log(np.exp(masked - masked.max(1, keepdims=True)).sum(1)) + masked.max(1)
        loss = float((lse - lse_pos).mean())
        g = ((prob - prob_pos) / bsz).astype(np.float32)
        grads: dict[str, np.ndarray] = {"log_inv_tau": np.array([float((g * base).sum()) * inv], np.float32)}
        g_base = g * inv
        if cfg.refiner:
            grads["w2"] = h.reshape(-1, cfg.hidden).T @ g_base.reshape(-1)
            g_pre = (g_base[..., None] * p["w2"]) * (pre > 0)
            grads["w1"] = z.reshape(-1, z.shape[-1]).T @ g_pre.reshape(-1, cfg.hidden)
            grads["b1"] = g_pre.sum(axis=(0, 1))
            g_lin = g_base + (g_pre @ p["w1"].T)[..., f.shape[-1]]
            grads["a"] = f.reshape(-1, f.shape[-1]).T @ g_lin.reshape(-1)
        if cfg.mlc:
            if dense:
                flat = (np.arange(bsz)[:, None] * (self.n_warm + 1) + cols).reshape(-1)
                g_cols = np.bincount(flat, weights=g.reshape(-1), minlength=bsz * (self.n_warm + 1))
                g_w = g_cols.reshape(bsz, self.n_warm + 1)[:, : self.n_warm].T.astype(np.float32) @ b.x
            else:  # scatter the (candidate, example) outer products into the head rows they touch
                flat_cols = cols.reshape(-1)
                order = np.argsort(flat_cols, kind="stable")
                vals = g.reshape(-1)[order, None] * b.x[order // k]
                uniq, starts = np.unique(flat_cols[order], return_index=True)
                g_w = np.zeros((self.n_warm + 1, b.x.shape[1]), np.float32)
                g_w[uniq] = np.add.reduceat(vals, starts, axis=0)
                g_w = g_w[: self.n_warm]
            grads["W"] = g_w + 2 * cfg.l2 * share * p["W"]
            grads["b"] = (np.bincount(b.rows.reshape(-1), weights=g.reshape(-1), minlength=self.n_tools).astype(
                np.float32) + 2 * cfg.l2 * share * p["b"])
            loss += cfg.l2 * share * float((p["W"] ** 2).sum() + (p["b"] ** 2).sum())
        return loss, {k: v.astype(np.float32) for k, v in grads.items()}

    def stage(self, names: list[str], info: dict[str, Any], adapter: QueryAdapter | None = None) -> LearnedStage:
        p, cfg = self.p, self.cfg
        refiner = ToolRefiner(p["a"], p["w1"], p["b1"], p["w2"]) if cfg.refiner else None
        mlc = None
        if cfg.mlc:
            w = np.zeros((self.n_tools, p["W"].shape[1]), np.float32)
            warm = self.col < self.n_warm
            w[warm] = p["W"][self.col[warm]]
            mlc = MLCHead(w, p["b"])
        return LearnedStage(refiner, mlc, float(1.0 / np.exp(p["log_inv_tau"][0])), list(names), info, adapter)


def _train(batch: TrainingBatch, index: Any, weights: Any, cfg: FitConfig) -> _Model:
    blend = np.array([weights.desc, weights.mean, weights.max, weights.top], dtype=np.float32)
    warm = np.flatnonzero(index.counts > 0)
    model = _Model(cfg, blend, len(index), warm, index.dim)
    m = len(batch.x)
    rng = np.random.default_rng(cfg.seed)
    opt = _Adam(model.p, cfg.lr)
    per_epoch = max(1, -(-m // cfg.batch_size))
    steps = min(cfg.epochs * per_epoch, max(cfg.max_steps, per_epoch))
    done = 0
    while done < steps:
        perm = rng.permutation(m)
        for s in range(0, m, cfg.batch_size):
            ix = perm[s : s + cfg.batch_size]
            sub = TrainingBatch(batch.rows[ix], batch.feats[ix], batch.counts[ix], batch.positive[ix], batch.x[ix])
            _, grads = model.loss_grad(sub, len(ix) / m)
            opt.step(model.p, grads)
            done += 1
            if done >= steps:
                break
    return model


def _mrr(stage: LearnedStage | None, index: Any, weights: Any, x: np.ndarray, gold: list[list[int]]) -> float:
    """Mean reciprocal rank of the best-ranked gold tool among the first-stage candidates (0 if absent)."""
    blend = np.array([weights.desc, weights.mean, weights.max, weights.top], dtype=np.float32)
    n_cand = min(len(index), max(weights.candidates, 1))
    if stage is not None:
        x = stage.query(x)
    cands = index.candidates(x, weights, n_cand)
    total = 0.0
    for q, rows, g in zip(x, cands, gold, strict=True):
        feats = index.features(q, rows, weights.top_m)
        s = feats @ blend if stage is None else stage.score(q, rows, feats, index.counts[rows], blend)
        ranked = rows[np.argsort(-s, kind="stable")]
        hit = np.flatnonzero(np.isin(ranked, g))
        total += 1.0 / (hit[0] + 1) if len(hit) else 0.0
    return total / max(1, len(x))


def _fit_all(index: Any, weights: Any, names: list[str], cfg: FitConfig, info: dict[str, Any]) -> LearnedStage:
    """Adapter first (when on), then the refiner and head on the adapted example vectors."""
    adapter, queries = None, None
    if cfg.adapter:
        t0 = time.perf_counter()
        adapter = fit_adapter(index, weights, cfg)
        queries = adapter.apply(index.examples) if len(index.examples) else None
        info["adapter_fit_s"] = round(time.perf_counter() - t0, 3)
        info["adapter_delta_norm"] = round(adapter.delta_norm(), 4)
    if not (cfg.refiner or cfg.mlc):  # the adapter alone: the fixed blend on adapted requests
        return LearnedStage(None, None, 1.0, list(names), info, adapter)
    batch = training_batch(index, weights, weights.candidates, queries=queries)
    return _train(batch, index, weights, cfg).stage(names, info, adapter)


def fit_stage(index: Any, weights: Any, names: list[str], config: FitConfig | None = None, *,
              validate: bool = False, holdout: float = 0.2) -> LearnedStage | None:
    """The :class:`LearnedStage` fitted on every example of ``index`` (``names``: its tool names), or
    ``None`` when the config switches every part off.

    ``validate=True`` first fits on ``1 - holdout`` of the examples and returns ``None`` unless the stage
    ranks the held-out examples' tools better (mean reciprocal rank) than the first stage does.
    """
    cfg = config or FitConfig()
    if not (cfg.refiner or cfg.mlc or cfg.adapter):
        return None
    t0 = time.perf_counter()
    m = len(index.examples)
    info: dict[str, Any] = {"n_examples": m, "n_tools": len(index), "config": cfg.as_dict()}
    if validate and m >= 5:
        perm = np.random.default_rng(cfg.seed).permutation(m)
        n_hold = max(1, int(holdout * m))
        hold, keep = perm[:n_hold], np.sort(perm[n_hold:])
        sub = index.subset(keep)
        trial = _fit_all(sub, weights, names, cfg, {})
        x = index.examples[hold]
        gold = [index.example_tools[i] for i in hold]
        mrr_stage, mrr_first = _mrr(trial, sub, weights, x, gold), _mrr(None, sub, weights, x, gold)
        info["holdout_mrr"] = {"learned": round(mrr_stage, 4), "first_stage": round(mrr_first, 4)}
        if mrr_stage <= mrr_first:
            return None
    stage = _fit_all(index, weights, names, cfg, info)
    stage.info["fit_s"] = round(time.perf_counter() - t0, 3)
    return stage


PARTS = ("adapter", "refiner", "mlc")


def with_parts(config: FitConfig, parts: str) -> FitConfig:
    """``config`` with only ``parts`` switched on (ablations): ``"+"``-joined names of :data:`PARTS`
    (``"adapter+mlc"``), ``"both"`` (refiner and head) or ``"none"``."""
    names = {"both": ["refiner", "mlc"], "none": []}.get(parts, parts.split("+"))
    bad = [n for n in names if n not in PARTS]
    if bad:
        msg = (f"unknown learned-stage part(s) {bad} in {parts!r}; use '+'-joined names of {list(PARTS)}, "
               "'both' or 'none'.")
        raise InvalidInputError(msg)
    return replace(config, **{n: n in names for n in PARTS})


__all__ = ["PARTS", "FitConfig", "TrainingBatch", "adapter_targets", "fit_adapter", "fit_stage", "training_batch",
           "with_parts"]
