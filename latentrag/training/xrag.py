"""Train the xRAG projector for (the shipped MiniLM, the shipped SmolLM2-135M-Instruct) on the CPU.

    latentrag train xrag --out DIR [--tokens-per-doc 1] [--stage1 N] [--stage2 N] [--seed 0]

Two stages, as in xRAG, both with the reader's own prompt (so training and inference match) and only
the projector trainable:

1. **Paraphrase pretraining**: the LM, given one passage as soft tokens and the question "What does
   the background say?", must reproduce the passage's first 32 tokens (NLL on those tokens only).
   Passages: the gold and distractor passages of the shared multi-hop *train* files.
2. **Context-aware tuning with self-distillation**: single-passage questions built from the multi-hop
   train files (2Wiki sub-questions with the gold passage of their hop; HotpotQA questions with the
   one gold passage that holds the answer), answer = the short answer. Loss = NLL of the answer +
   ``kl_weight`` x KL(teacher || student) on the answer tokens, where the teacher is the same frozen LM
   reading the passage as text (computed once per sample, without gradients).

CPU cost is kept down by running the prompt's constant prefix (system turn and instruction) once and
reusing its KV cache for every sample, and by computing LM-head logits only at answer positions.
Selection data: 150 training questions held out (``dev``); the shipped report gives their accuracy in
the three modes. The dev_* files are never read here (they are the benchmark's).
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latentrag.encoders import default_encoder
from latentrag.models.projector import Projector, ProjectorConfig
from latentrag.readers.lm import LanguageModel, load_lm
from latentrag.readers.prompt import SLOT, answer_ids, prompt_ids, user_message
from latentrag.training.multihop import data_root, expand_paths

logger = logging.getLogger(__name__)

PARAPHRASE_QUESTION = "What does the background say?"
PARAPHRASE_TOKENS = 32


@dataclass
class QA:
    question: str
    passage: str
    answer: str
    #: the example's other passages (other hops' gold passages, then its distractor pool)
    distractors: list[str] = field(default_factory=list)


@dataclass
class XRAGTrainConfig:
    tokens_per_doc: int = 1
    #: token chunks embedded beside the passage (0: classic xRAG; else tokens_per_doc = 1 + chunks)
    chunks: int = 0
    stage1_samples: int = 2000
    stage2_samples: int = 3000
    stage2_epochs: int = 3
    batch_size: int = 16
    lr_stage1: float = 3e-3
    lr_stage2: float = 1e-3
    kl_weight: float = 1.0
    dev_size: int = 150
    seed: int = 0
    #: warm start: a saved projector folder to continue from (same tokens_per_doc and chunks; or a classic
    #: projector for a chunked one: every position starts as its first soft token), or None
    init: str | None = None
    #: paraphrase passages to skip (a warm start continues on passages its first run did not see)
    stage1_skip: int = 0
    #: file to keep the stage-2 teacher logits in between runs (recomputed when the samples differ), or None
    teacher_cache: str | None = None
    #: "auto" (CUDA when torch sees one, else the CPU), "cpu" or "cuda"; on CUDA the LM runs under bf16 autocast
    device: str = "auto"
    #: more stage-1 passages: JSONL files of {"text": ..., "title": ...} records and/or folders of corpus JSON
    #: files ({title: [sentences]}), read after the multi-hop training pools
    passage_files: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower()).strip()


def contains_answer(text: str, answer: str) -> bool:
    """Substring match after lower-casing and collapsing spaces (the benchmark's metric)."""
    a = _norm(answer)
    return bool(a) and a in _norm(text)


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return json.loads(value)
    return value


def _passage(g: dict[str, Any]) -> str:
    title = (g.get("title") or "").strip()
    text = (g.get("text") or "").strip()
    return f"{title}: {text}" if title else text


def single_passage_qa(paths: list[Path]) -> list[QA]:
    """Single-passage questions from multi-hop files: 2Wiki sub-questions (with the gold passage of their
    hop; the answer is the next hop's title, or the final answer), and HotpotQA questions whose answer is
    in exactly one gold passage. Only samples whose passage holds the answer are kept."""
    out: list[QA] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            ex = json.loads(line)
            gold = [g for g in _parse(ex.get("gold") or []) if isinstance(g, dict)]
            pool = [_passage(g) for g in _parse(ex.get("pool") or []) if isinstance(g, dict)]
            everything = [_passage(g) for g in gold] + pool
            decomposition = _parse(ex.get("decomposition") or [])
            aliases = ex["answer"] if isinstance(ex["answer"], list) else [ex["answer"]]
            final = str(aliases[0]) if aliases else ""
            if decomposition and len(decomposition) == len(gold):
                for i, (step, g) in enumerate(zip(decomposition, gold, strict=True)):
                    answer = final if i == len(gold) - 1 else (gold[i + 1].get("title") or "")
                    passage = _passage(g)
                    if answer and contains_answer(passage, answer):
                        others = [p for p in everything if p != passage]
                        out.append(QA(step["question"].strip(), passage, answer.strip(), others))
                continue
            holders = [_passage(g) for g in gold if contains_answer(_passage(g), final)]
            if len(holders) == 1:
                others = [p for p in everything if p != holders[0]]
                out.append(QA(ex["question"].strip(), holders[0], final.strip(), others))
    return out


def train_passages(paths: list[Path]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ex = json.loads(line)
                for g in [*_parse(ex.get("gold") or []), *_parse(ex.get("pool") or [])]:
                    if isinstance(g, dict) and len((g.get("text") or "").split()) >= 12:
                        seen[_passage(g)] = None
    return list(seen)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else the CPU; ``"cpu"`` or ``"cuda"`` as asked (a clear error
    when CUDA is asked for and missing)."""
    if device not in ("auto", "cpu", "cuda"):
        msg = f"device must be 'auto', 'cpu' or 'cuda', got {device!r}"
        raise ValueError(msg)
    if device == "cuda" and not torch.cuda.is_available():
        msg = "device='cuda' but torch sees no CUDA GPU (a CPU build of torch, or no driver); use --device cpu"
        raise ValueError(msg)
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def extra_passages(sources: Sequence[str]) -> Iterator[str]:
    """Stage-1 passages from ``sources``, streamed: JSONL files (one ``{"text", "title"}`` record per line)
    and folders of corpus JSON files (``{title: [sentences]}``, as ``shared/data/multihop/corpus``)."""
    for src in sources:
        path = Path(src)
        files = sorted(path.glob("*.json")) + sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for f in files:
            if f.suffix == ".jsonl":
                with open(f, encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            rec = json.loads(line)
                            if len(str(rec.get("text", "")).split()) >= 12:
                                yield _passage(rec)
            else:
                for title, sentences in json.loads(f.read_text(encoding="utf-8")).items():
                    text = "".join(sentences) if isinstance(sentences, list) else str(sentences)
                    if len(text.split()) >= 12:
                        yield _passage({"title": title, "text": text.strip()})


class _Student:
    """The frozen LM with the prompt prefix cached: scores soft-token prompts against target tokens."""

    def __init__(self, lm: LanguageModel, tokens_per_doc: int, device: torch.device | None = None) -> None:
        self.lm, self.k = lm, tokens_per_doc
        self.device = device or torch.device("cpu")
        self.embed = lm.model.get_input_embeddings()
        probe = prompt_ids(lm.tokenizer, user_message("Q", None, 1), 1)
        self.prefix = probe[: probe.index(SLOT)]
        with torch.no_grad(), _autocast(self.device):
            self.prefix_cache = lm.model(input_ids=torch.tensor([self.prefix], device=self.device),
                                         use_cache=True).past_key_values

    def suffix(self, question: str) -> list[int]:
        """The ids after the prefix for one question: k slots, then the question and the assistant header."""
        ids = prompt_ids(self.lm.tokenizer, user_message(question, None, 1), self.k)
        if ids[: len(self.prefix)] != self.prefix:
            msg = "the chat template does not start every prompt with the same prefix; cannot cache it."
            raise RuntimeError(msg)
        return ids[len(self.prefix) :]

    def answer_logits(self, soft: torch.Tensor, questions: list[str], targets: list[list[int]]) -> tuple[
            torch.Tensor, torch.Tensor]:
        """Logits at the positions that predict each target token, concatenated over the batch, and the targets."""
        rows = [self.suffix(q) + t for q, t in zip(questions, targets, strict=True)]
        width = max(len(r) for r in rows)
        pad = int(self.lm.tokenizer.pad_token_id)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), len(self.prefix) + width), dtype=torch.long)
        mask[:, : len(self.prefix)] = 1
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, len(self.prefix) : len(self.prefix) + len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        slots = ids == SLOT
        emb = self.embed(ids.clamp_min(0))
        emb = emb.masked_scatter(slots.unsqueeze(-1), soft.to(emb.dtype))
        cache = copy.deepcopy(self.prefix_cache)
        cache.batch_repeat_interleave(len(rows))
        positions = torch.arange(len(self.prefix), len(self.prefix) + width,
                                 device=self.device).unsqueeze(0).expand(len(rows), -1)
        hidden = self.lm.model.model(inputs_embeds=emb, attention_mask=mask, position_ids=positions,
                                     past_key_values=cache, use_cache=False).last_hidden_state
        sel_rows, sel_cols, gold = [], [], []
        for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
            start = len(r) - len(t)
            for j, tok in enumerate(t):
                sel_rows.append(i)
                sel_cols.append(start + j - 1)
                gold.append(tok)
        logits = self.lm.model.lm_head(hidden[sel_rows, sel_cols])
        return logits.float(), torch.tensor(gold, device=self.device)


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (the LM's matmuls in bf16, the projector's gradients in fp32); nothing on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def teacher_logits(lm: LanguageModel, qa: QA, target: list[int], top_k: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k logits of the LM reading the passage as text, at each answer position: (len(target), top_k) x 2."""
    ids = prompt_ids(lm.tokenizer, user_message(qa.question, [qa.passage])) + target
    device = lm.model.get_input_embeddings().weight.device
    with _autocast(device):
        hidden = lm.model.model(input_ids=torch.tensor([ids], device=device)).last_hidden_state[0]
        logits = lm.model.lm_head(hidden[len(ids) - len(target) - 1 : len(ids) - 1]).float()
    values, indices = logits.topk(top_k, dim=-1)
    return values.cpu(), indices.cpu()


def _run_stage(name: str, student: _Student, proj: Projector, vecs: np.ndarray, questions: list[str],
               targets: list[list[int]], cfg: XRAGTrainConfig, lr: float,
               teachers: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[float]:
    opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=0.0)
    steps = (len(questions) + cfg.batch_size - 1) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    order = np.random.default_rng(cfg.seed).permutation(len(questions))
    losses = []
    bar = tqdm(range(steps), desc=f"xrag {name}", unit="batch")
    for step in bar:
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        with _autocast(student.device):
            soft = proj(torch.from_numpy(vecs[idx]).to(student.device)).reshape(-1, student.lm.hidden_size)
            logits, gold = student.answer_logits(soft, [questions[i] for i in idx], [targets[i] for i in idx])
        loss = torch.nn.functional.cross_entropy(logits, gold)
        if teachers is not None and cfg.kl_weight > 0:
            t_vals = torch.cat([teachers[i][0] for i in idx]).to(student.device)
            t_idx = torch.cat([teachers[i][1] for i in idx]).to(student.device)
            t_prob = torch.softmax(t_vals, dim=-1)
            s_logp = torch.log_softmax(logits, dim=-1).gather(1, t_idx)
            kl = (t_prob * (torch.log(t_prob + 1e-9) - s_logp)).sum(-1).mean()
            loss = loss + cfg.kl_weight * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(proj.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def accuracy(reader: Any, qas: list[QA], mode: str, batch_size: int = 8) -> float:
    answers = reader.answer_batch([q.question for q in qas], [[q.passage] for q in qas], mode=mode,
                                  max_new_tokens=16, batch_size=batch_size)
    return float(np.mean([contains_answer(a.text, q.answer) for a, q in zip(answers, qas, strict=True)]))


def held_out_split(qas: list[QA], passages: list[str], cfg: XRAGTrainConfig) -> tuple[
        list[QA], list[QA], list[str]]:
    """(dev, stage-2 questions, stage-1 passages) from shuffled ``qas`` and ``passages``: the first
    ``dev_size`` questions are held out, and their passages are trained on in neither stage."""
    dev = qas[: cfg.dev_size]
    held = {q.passage for q in dev}
    train = [q for q in qas[cfg.dev_size :] if q.passage not in held][: cfg.stage2_samples]
    kept = [p for p in passages if p not in held]
    return dev, train, kept[cfg.stage1_skip : cfg.stage1_skip + cfg.stage1_samples]


def _teachers(lm: LanguageModel, train: list[QA], targets: list[list[int]], cache: str | None) -> list[
        tuple[torch.Tensor, torch.Tensor]]:
    """Teacher top-k logits for each stage-2 sample; with ``cache``, read from / written to that file (they
    depend only on the LM and the samples, which the file's key records, not on the projector)."""
    key = hashlib.sha256(json.dumps([lm.name, [(q.question, q.passage, q.answer) for q in train]]).encode()).hexdigest()
    if cache and Path(cache).is_file():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            return list(zip(saved["values"], saved["indices"], strict=True))
        logger.warning("teacher cache %s was made for other samples; recomputing", cache)
    teachers = [teacher_logits(lm, q, t) for q, t in tqdm(list(zip(train, targets, strict=True)),
                                                         desc="xrag teacher", unit="q")]
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "values": [v for v, _ in teachers], "indices": [i for _, i in teachers]}, cache)
    return teachers


def _chunked_from(classic: Projector, cfg: XRAGTrainConfig) -> Projector:
    """A chunked projector whose every position starts as ``classic``'s first soft token: chunk vectors
    live in the same space as passage vectors, so each chunk starts as a soft token the LM already reads."""
    c = classic.config
    proj = Projector(ProjectorConfig(c.encoder_name, c.encoder_dim, c.lm_name, c.lm_hidden_size,
                                     cfg.tokens_per_doc, extra=dict(c.extra), chunks=cfg.chunks))
    h = c.lm_hidden_size
    with torch.no_grad():
        proj.fc1.load_state_dict(classic.fc1.state_dict())
        proj.fc2.weight.copy_(classic.fc2.weight[:h])
        proj.fc2.bias.copy_(classic.fc2.bias[:h])
    return proj


def train_xrag(out: str | Path, cfg: XRAGTrainConfig | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out training questions, and save the projector to ``out``."""
    from latentrag.readers.xrag import XRAGReader, passage_inputs

    cfg = cfg or XRAGTrainConfig()
    if cfg.chunks and cfg.tokens_per_doc != 1 + cfg.chunks:
        msg = f"chunks={cfg.chunks} needs tokens_per_doc={1 + cfg.chunks}, got {cfg.tokens_per_doc}"
        raise ValueError(msg)
    if cfg.stage1_skip < 0:  # before it slices the passages (a negative start would count from the end)
        msg = f"stage1_skip must be >= 0, got {cfg.stage1_skip}"
        raise ValueError(msg)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    root = data_root(data_dir) / "multihop"
    paths = expand_paths([str(root / "train*.jsonl")])
    lm, enc = load_lm(precision="fp32"), default_encoder()  # trained against the fp32 weights on every CPU
    qas = single_passage_qa(paths)
    rng = random.Random(cfg.seed)
    rng.shuffle(qas)
    all_passages = train_passages(paths)
    if cfg.passage_files:  # streamed, de-duplicated, only as many as stage 1 can use
        known = set(all_passages)
        want = cfg.stage1_skip + cfg.stage1_samples + cfg.dev_size
        for text in extra_passages(cfg.passage_files):
            if len(all_passages) >= want:
                break
            if text not in known:
                known.add(text)
                all_passages.append(text)
    rng.shuffle(all_passages)
    dev, train, passages = held_out_split(qas, all_passages, cfg)
    logger.info("xrag data: %d QA (%d dev held out), %d paraphrase passages", len(qas), len(dev), len(passages))
    if cfg.init:
        proj = Projector.load(cfg.init)
        if proj.config.extra.get("seed", cfg.seed) != cfg.seed:
            msg = (f"--init {cfg.init} was trained with seed {proj.config.extra['seed']}, not {cfg.seed}: the seed "
                   "fixes the held-out dev questions, so a warm start must keep it")
            raise ValueError(msg)
        proj.check_pair(enc.name, enc.dim, lm.name, lm.hidden_size)
        if cfg.chunks and not proj.chunks:
            proj = _chunked_from(proj, cfg)
        elif (proj.tokens_per_doc, proj.chunks) != (cfg.tokens_per_doc, cfg.chunks):
            msg = (f"--init {cfg.init} has tokens_per_doc={proj.tokens_per_doc} and chunks={proj.chunks}, not "
                   f"{cfg.tokens_per_doc} and {cfg.chunks}")
            raise ValueError(msg)
        for p in proj.parameters():
            p.requires_grad_(True)
    else:
        proj = Projector(ProjectorConfig(enc.name, enc.dim, lm.name, lm.hidden_size, cfg.tokens_per_doc,
                                         chunks=cfg.chunks))
    device = resolve_device(cfg.device)
    lm.model.to(device)
    proj.to(device)
    proj.train()
    student = _Student(lm, cfg.tokens_per_doc, device)
    tok = lm.tokenizer
    report: dict[str, Any] = {"config": asdict(cfg), "n_qa_total": len(qas), "n_dev": len(dev)}
    if passages:
        p_vecs = passage_inputs(passages, enc, cfg.chunks)
        p_targets = [tok(p, add_special_tokens=False)["input_ids"][:PARAPHRASE_TOKENS] for p in passages]
        losses = _run_stage("stage1", student, proj, p_vecs, [PARAPHRASE_QUESTION] * len(passages), p_targets,
                            cfg, cfg.lr_stage1)
        report["stage1"] = {"samples": len(passages), "loss_first": float(np.mean(losses[:10])),
                            "loss_last": float(np.mean(losses[-10:]))}
    if train:
        q_vecs = passage_inputs([q.passage for q in train], enc, cfg.chunks)
        q_targets = [answer_ids(tok, q.answer) for q in train]
        teachers = None
        if cfg.kl_weight > 0:
            teachers = _teachers(lm, train, q_targets, cfg.teacher_cache)
        reps = cfg.stage2_epochs
        losses = _run_stage("stage2", student, proj, np.concatenate([q_vecs] * reps),
                            [q.question for q in train] * reps, q_targets * reps, cfg, cfg.lr_stage2,
                            None if teachers is None else teachers * reps)
        report["stage2"] = {"samples": len(train), "epochs": reps, "loss_first": float(np.mean(losses[:10])),
                            "loss_last": float(np.mean(losses[-10:]))}
    proj.eval().to("cpu")
    lm.model.to("cpu")  # the reader (and every other user of the shared LM in this process) runs on the CPU
    for p in proj.parameters():
        p.requires_grad_(False)
    report["device"] = str(device)
    previous = dict(proj.config.extra) if cfg.init else {}
    proj.config.extra = {"train_seconds": round(time.perf_counter() - t0), "seed": cfg.seed}
    if previous:
        proj.config.extra["continued_from"] = previous
    reader = XRAGReader(lm=lm, projector=proj)
    report["dev_accuracy"] = {mode: accuracy(reader, dev, mode) for mode in ("none", "xrag", "text")}
    report["train_seconds"] = round(time.perf_counter() - t0)
    proj.config.extra["dev_accuracy"] = report["dev_accuracy"]
    out = Path(out)
    proj.save(out)
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("xrag projector saved to %s: %s", out, report["dev_accuracy"])
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="latentrag train xrag", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for projector.safetensors, config.json, train_report.json")
    ap.add_argument("--tokens-per-doc", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=0,
                    help="token chunks embedded beside the passage (tokens-per-doc must then be 1 + chunks)")
    ap.add_argument("--stage1", type=int, default=XRAGTrainConfig.stage1_samples, help="paraphrase samples")
    ap.add_argument("--stage2", type=int, default=XRAGTrainConfig.stage2_samples, help="QA samples")
    ap.add_argument("--epochs", type=int, default=XRAGTrainConfig.stage2_epochs, help="passes over the QA")
    ap.add_argument("--batch-size", type=int, default=XRAGTrainConfig.batch_size)
    ap.add_argument("--kl-weight", type=float, default=XRAGTrainConfig.kl_weight)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None,
                    help="continue from this saved projector (keep --seed: it fixes the dev split)")
    ap.add_argument("--stage1-skip", type=int, default=0, help="skip this many paraphrase passages (for --init)")
    ap.add_argument("--lr1", type=float, default=XRAGTrainConfig.lr_stage1, help="stage-1 peak learning rate")
    ap.add_argument("--lr2", type=float, default=XRAGTrainConfig.lr_stage2, help="stage-2 peak learning rate")
    ap.add_argument("--teacher-cache", default=None, help="file to keep the stage-2 teacher logits in between runs")
    ap.add_argument("--data", default=None, help="shared data folder (default: $LATENTRAG_DATA or ../shared/data)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: CUDA when present (bf16 autocast), else the CPU")
    ap.add_argument("--passages", nargs="*", default=[],
                    help="more stage-1 passages: JSONL files ({text, title}) or folders of corpus JSON files")
    args = ap.parse_args(argv)
    cfg = XRAGTrainConfig(tokens_per_doc=args.tokens_per_doc, chunks=args.chunks, stage1_samples=args.stage1,
                          stage2_samples=args.stage2, stage2_epochs=args.epochs, batch_size=args.batch_size,
                          kl_weight=args.kl_weight, seed=args.seed, init=args.init,
                          stage1_skip=args.stage1_skip, teacher_cache=args.teacher_cache, lr_stage1=args.lr1,
                          lr_stage2=args.lr2, device=args.device, passage_files=tuple(args.passages))
    report = train_xrag(args.out, cfg, args.data)
    print(json.dumps(report["dev_accuracy"]))
    return 0
