"""Quiet-STaR (Zelikman et al. 2024, arXiv 2403.09629): learn to think before every token of plain text, resumable.

    reasonloop quiet-star CONFIG.yaml --run-dir runs/qs       # or: run_quiet_star(QuietStarConfig(...), "runs/qs")

The text is a built-in world's worked solutions (`task: arith`: ``Q: 9*3-5\\n9*3=27\\n27-5=22\\nA: 22``), or a file
(`data`: plain text with documents separated by blank lines, or JSONL with a `text` field, or `prompt` plus
`completion` / `solution`). Each step, on a batch of documents:

1. think: `n_thoughts` thoughts of `n_ahead` tokens after every position, sampled at `temperature`, all positions at
   once (`QuietStarModel.sample_thoughts`, the diagonal attention mask);
2. talk: one forward pass over the text and its thoughts; the mixing head blends each post-thought prediction of the
   next `n_talk` true tokens with the base prediction;
3. learn: `base_weight` * the base NLL + (1 - `base_weight`) * the mixed NLL + `reinforce_weight` * REINFORCE on
   the thoughts, rewarded by how much more likely they make the true tokens than the position's other thoughts
   (`reasonloop.train.quiet_star`).

With `thoughts: false` the same model, data, schedule and steps train on the plain next-token NLL: the baseline
that tells a gain of thinking from a gain of more training. Every `eval_every` steps the held-out documents are
scored per true token, with thoughts (greedy, one per position) and without, over all tokens and over the hard ones
(the results of arithmetic steps and the answer: the digits after "=" and after "A:").

`metrics.jsonl` has a line per step; `report.md` and `plots/` come at the end; the model with its thought tokens
and mixing head is saved to `checkpoints/final`. Kill it at any moment and rerun the same command: it continues
from the last checkpoint (`save_every`) with optimiser, schedule and RNG restored, and every step is logged once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasonloop.core import (
    ConfigError,
    DataError,
    RunDir,
    atomic_write_text,
    bounded,
    defaults_of,
    derive_seed,
    seed_everything,
    to_dict,
)
from reasonloop.core.jsonl import read_jsonl_numbered
from reasonloop.eval import save_line_plot
from reasonloop.models import resolve_model
from reasonloop.models.quiet_star import QuietStarModel
from reasonloop.recipes.common import BarFactory, metrics_through, no_bar
from reasonloop.tasks import get_task
from reasonloop.tasks.base import WorldTask
from reasonloop.train import TrainConfig, Trainer, shuffled_batch
from reasonloop.train.quiet_star import base_nll, quiet_star_loss


@dataclass(frozen=True)
class QuietStarConfig:
    """One Quiet-STaR run (or, with `thoughts: false`, its baseline)."""

    model: str = "nano"  # the causal LM to start from (a directory or a built-in name)
    task: str = "arith"  # a built-in world whose worked solutions are the text (unused when `data` is set)
    data: str = ""  # a text or JSONL file of documents to train on instead of a world's solutions
    eval_data: str = ""  # held-out documents (same formats); default: the last `n_eval` documents of `data`
    n_train: int = bounded(2000, ge=1)  # training documents
    n_eval: int = bounded(200, ge=1)  # held-out documents
    max_len: int = bounded(128, ge=4)  # tokens per document (a longer one loses its end)
    thoughts: bool = True  # false: the baseline, the same steps of plain next-token NLL
    n_ahead: int = bounded(4, ge=1)  # thought tokens between <start> and <end>
    n_talk: int = bounded(2, ge=1)  # true tokens predicted after each thought (extended teacher forcing)
    n_thoughts: int = bounded(2, ge=2)  # thoughts per position (their mean reward is the baseline)
    temperature: float = bounded(1.0, gt=0)  # sampling temperature of thoughts in training
    base_weight: float = bounded(0.5, ge=0, le=1)  # weight of the no-thought NLL (the rest on the mixed NLL)
    reinforce_weight: float = bounded(1.0, ge=0)  # weight of REINFORCE on thoughts
    clip_negative: bool = True  # reinforce only thoughts better than the position's average
    clamp_weight: bool = True  # mixing weight in [0, 1]; false: unbounded, as the reference implementation
    steps: int = bounded(200, ge=1)  # optimiser steps
    batch_size: int = bounded(8, ge=1)  # documents per step
    lr: float = bounded(1e-3, gt=0)  # peak learning rate (linear warm-up, cosine decay)
    eval_every: int = bounded(50, ge=0)  # steps between held-out evaluations (0: only at the start and the end)
    save_every: int = bounded(25, ge=1)  # steps between checkpoints
    seed: int = bounded(0, ge=0)  # documents, thoughts and training derive from this

    def __post_init__(self) -> None:
        if self.eval_data and not self.data:
            raise ValueError("eval_data needs data (a world's held-out text is its test split)")


# --- text -------------------------------------------------------------------------------------------------------------
def read_documents(path: str | Path) -> list[str]:
    """Documents of a file: JSONL (`text`, or `prompt` + `completion` / `solution`, per line) or plain text (separated
    by blank lines). A missing file or a record without text is one line naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix == ".jsonl":
        docs = []
        for lineno, rec in read_jsonl_numbered(p, hand_written=True):
            text = rec.get("text")
            if text is None and "prompt" in rec:
                text = str(rec["prompt"]) + str(rec.get("completion", rec.get("solution", "")))
            if not isinstance(text, str) or not text:
                raise DataError(f"{p}:{lineno}: expected a non-empty 'text' (or 'prompt' and 'completion')")
            docs.append(text)
    else:
        docs = [d.strip("\n") for d in re.split(r"\n\s*\n", p.read_text()) if d.strip()]
    if not docs:
        raise DataError(f"{p}: no documents")
    return docs


def documents(cfg: QuietStarConfig) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) for the config; see the module docstring."""
    if cfg.data:
        docs = read_documents(cfg.data)
        held = read_documents(cfg.eval_data)[: cfg.n_eval] if cfg.eval_data else docs[-cfg.n_eval :]
        train = docs[: cfg.n_train] if cfg.eval_data else docs[: max(0, len(docs) - cfg.n_eval)][: cfg.n_train]
        if not train:
            raise DataError(f"{cfg.data}: {len(docs)} documents leave none to train on after {cfg.n_eval} held out")
        return train, held
    task = get_task(cfg.task)
    if not isinstance(task, WorldTask):
        raise ConfigError(f"config key 'task': '{cfg.task}' has no worked solutions; name a built-in world or data")
    train = task.problems("train", cfg.n_train, seed=cfg.seed + 100)
    test = task.problems("test", cfg.n_eval, seed=cfg.seed)
    return [p.prompt + p.meta["solution"] for p in train], [p.prompt + p.meta["solution"] for p in test]


RESULT_RE = re.compile(r"(?:=|A:)\s*(-?\d+)")  # the result of a step, and the answer


def hard_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens thinking should help most: the result of each arithmetic step and the answer.

    >>> hard_spans("Q: 2+3*4\\n2+3=5\\n5*4=20\\nA: 20")
    [(13, 14), (19, 21), (25, 27)]
    """
    return [m.span(1) for m in RESULT_RE.finditer(text)]


def encode_documents(tokenizer, docs: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention mask, hard-token mask), each (N, T); each document ends with EOS."""
    rows = []
    for d in docs:
        enc = tokenizer(d, return_offsets_mapping=True)
        spans = hard_spans(d)
        hard = [int(any(a < e and s < b for s, e in spans)) for a, b in enc["offset_mapping"]]
        ids = enc["input_ids"] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        rows.append((ids[:max_len], (hard + [0])[:max_len]))
    T = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    hard = torch.zeros(len(rows), T, dtype=torch.long)
    for r, (i, h) in enumerate(rows):
        ids[r, : len(i)], mask[r, : len(i)], hard[r, : len(h)] = torch.tensor(i), 1, torch.tensor(h)
    return ids, mask, hard


def trim(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Cut the columns that are padding in every row (the first tensor is the attention mask)."""
    T = int(tensors[0].sum(dim=1).max())
    return [t[:, :T] for t in tensors]


# --- the two losses ---------------------------------------------------------------------------------------------------
def thought_loss(model: QuietStarModel, cfg: QuietStarConfig, ids, mask, generator) -> tuple[torch.Tensor, dict]:
    """Sample `cfg.n_thoughts` thoughts per position (no gradient), then the Quiet-STaR objective over them."""
    R = cfg.n_thoughts
    ids_r, mask_r = ids.repeat_interleave(R, dim=0), mask.repeat_interleave(R, dim=0)  # (B*R, T)
    thoughts = model.sample_thoughts(ids_r, cfg.n_ahead, temperature=cfg.temperature, generator=generator)
    out = model.forward_with_thoughts(ids_r, thoughts, cfg.n_talk)
    logpi = torch.log_softmax(out.thought_logits / cfg.temperature, dim=-1)  # (B*R, T, n_ahead, V)
    logpi = logpi.gather(-1, thoughts[..., None]).squeeze(-1).sum(-1)  # (B*R, T) log pi(thought)
    loss, metrics = quiet_star_loss(
        out.base_logits, out.mixed_logits, logpi, ids_r, mask_r, R,
        base_weight=cfg.base_weight, reinforce_weight=cfg.reinforce_weight, clip_negative=cfg.clip_negative,
    )  # fmt: skip
    metrics["mixing_weight"] = (out.weights[..., 0] * mask_r).sum().item() / mask_r.sum().item()
    return loss, metrics


def plain_loss(model: QuietStarModel, ids, mask) -> tuple[torch.Tensor, dict]:
    """The baseline: next-token NLL without thoughts (thought tokens never predicted, as in `thought_loss`)."""
    _, logits = model.hidden_and_logits(ids, torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids), None)
    loss, metrics = base_nll(logits, ids, mask)
    return loss, {"loss": loss.item(), **metrics}


@torch.no_grad()
def held_out_nll(model: QuietStarModel, cfg: QuietStarConfig, ids, mask, hard, chunk: int = 16) -> dict[str, float]:
    """Mean NLL per true token of the held-out documents, without thoughts and with one greedy thought per position
    (the mixed prediction of the next token), over all tokens and over the hard ones; and the mean mixing weight."""
    sums = {"nll": 0.0, "nll_hard": 0.0, "nll_thought": 0.0, "nll_thought_hard": 0.0, "weight": 0.0}
    n = n_hard = 0.0
    dev = next(model.parameters()).device
    for c in range(0, ids.shape[0], chunk):
        m, i, h = (t.to(dev) for t in trim(mask[c : c + chunk], ids[c : c + chunk], hard[c : c + chunk]))
        target = m[:, 1:].float()  # (B, T-1): x_{t+1} is a real token
        target_hard = h[:, 1:].float()
        thoughts = model.sample_thoughts(i, cfg.n_ahead, temperature=0.0)
        out = model.forward_with_thoughts(i, thoughts, 1)
        for key, logits in (("nll", out.base_logits), ("nll_thought", out.mixed_logits[:, :, 0])):
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, i[:, 1:, None]).squeeze(-1)  # (B, T-1)
            sums[key] -= (logp * target).sum().item()
            sums[key + "_hard"] -= (logp * target_hard).sum().item()
        sums["weight"] += (out.weights[:, :-1, 0] * target).sum().item()
        n += target.sum().item()
        n_hard += target_hard.sum().item()
    out_ = {k: v / max(n, 1) for k, v in sums.items() if "hard" not in k}
    out_.update({k: v / max(n_hard, 1) for k, v in sums.items() if "hard" in k})
    return {**{f"held_out_{k}": v for k, v in out_.items()}, "held_out_tokens": n, "held_out_hard_tokens": n_hard}


# --- the run ----------------------------------------------------------------------------------------------------------
def run_quiet_star(cfg: QuietStarConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Run (or resume) Quiet-STaR training; returns the start and final held-out figures and the records."""
    start = resolve_model(cfg.model)  # a missing model, a bad world or a bad file fail before the run directory exists
    train_docs, held_docs = documents(cfg)
    run = RunDir(run_dir)
    run.save_config(to_dict(cfg), defaults_of(QuietStarConfig))
    seed_everything(cfg.seed)
    model = QuietStarModel.from_pretrained(start, clamp_weight=cfg.clamp_weight)
    tok = model.tokenizer
    train_ids, train_mask, _ = encode_documents(tok, train_docs, cfg.max_len)
    held = encode_documents(tok, held_docs, cfg.max_len)
    schedule = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=max(1, cfg.steps // 20), seed=cfg.seed)
    trainer = Trainer(model, tok, schedule, out_dir=run.checkpoint("train"))
    done = trainer.step_count
    records = metrics_through(run.path / "metrics.jsonl", done)
    seconds = float(trainer.extra.get("seconds", 0.0))

    def evaluate() -> dict[str, float]:
        trainer.model.eval()
        return held_out_nll(trainer.unwrapped, cfg, *held)

    def loss_fn(m, batch):
        ids, mask, gen = batch
        return thought_loss(m, cfg, ids, mask, gen) if cfg.thoughts else plain_loss(m, ids, mask)

    if not records:
        records.append(_log(run, {"step": 0, **evaluate()}))
    what = "Quiet-STaR" if cfg.thoughts else "baseline (no thoughts)"
    log(f"{what}: step {done} of {cfg.steps}, held-out NLL {records[-1].get('held_out_nll', float('nan')):.4f}")
    with bar(cfg.steps - done, what) as advance:
        for step in range(done, cfg.steps):
            t0 = time.perf_counter()
            rows = shuffled_batch(step, len(train_docs), cfg.batch_size, cfg.seed)
            mask, ids = (t.to(trainer.accelerator.device) for t in trim(train_mask[rows], train_ids[rows]))
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "thoughts", step))
            record = trainer.step([(ids, mask, gen)], loss_fn) or {"step": step + 1, "skipped": "non-finite loss"}
            record["tokens"] = int(mask.sum())
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps:
                record.update(evaluate())
            seconds += time.perf_counter() - t0
            record["seconds"] = seconds
            records.append(_log(run, record))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                trainer.save({"seconds": seconds})
            advance(status=f"loss {record.get('loss', float('nan')):.3f}")
    final = run.checkpoint("final")
    if not (final / "config.json").exists():
        trainer.unwrapped.save_pretrained(final)
    first, last = records[0], next(r for r in reversed(records) if "held_out_nll" in r)
    state = run.update_state(start=_held(first), final=_held(last), seconds=seconds, steps=cfg.steps)
    write_report(run.path, cfg, records)
    log(f"{what}: held-out NLL per token {first['held_out_nll']:.4f} -> {last['held_out_nll']:.4f} without thoughts, "
        f"{last['held_out_nll_thought']:.4f} with thoughts")  # fmt: skip
    return {**state, "records": records, "model": final}


def _held(record: dict[str, Any]) -> dict[str, float]:
    return {k.removeprefix("held_out_"): v for k, v in record.items() if k.startswith("held_out_")}


def _log(run: RunDir, record: dict[str, Any]) -> dict[str, Any]:
    run.log_metrics(**record)
    return record


def write_report(path: Path, cfg: QuietStarConfig, records: list[dict[str, Any]]) -> None:
    """report.md: held-out NLL per token at the start and the end, with and without thoughts, over all tokens and
    the hard ones; plots of the training loss and of the held-out NLL against steps."""
    evals = [r for r in records if "held_out_nll" in r]
    steps = [r for r in records if r["step"] > 0 and "loss" in r]
    plots = path / "plots"
    if steps:
        save_line_plot(plots / "loss.png", [r["step"] for r in steps], {"training loss": [r["loss"] for r in steps]},
                       xlabel="step", ylabel="loss", title="training loss", xticks=False)  # fmt: skip
    series = {"without thoughts": [r["held_out_nll"] for r in evals]}
    if cfg.thoughts:
        series["with thoughts"] = [r["held_out_nll_thought"] for r in evals]
        series["hard tokens, without"] = [r["held_out_nll_hard"] for r in evals]
        series["hard tokens, with"] = [r["held_out_nll_thought_hard"] for r in evals]
    save_line_plot(plots / "held_out_nll.png", [r["step"] for r in evals], series, xlabel="step",
                   ylabel="NLL per token (nats)", title="held-out NLL", xticks=False)  # fmt: skip
    source = f"`{cfg.data}`" if cfg.data else f"the worked solutions of `{cfg.task}`"
    setting = (
        f"{cfg.n_thoughts} thoughts of {cfg.n_ahead} tokens per position at temperature {cfg.temperature}, "
        f"{cfg.n_talk} true tokens predicted after each; loss weights: base NLL {cfg.base_weight}, mixed NLL "
        f"{1 - cfg.base_weight}, REINFORCE {cfg.reinforce_weight}"
        + (" (positive rewards only)" if cfg.clip_negative else "")
        if cfg.thoughts
        else "baseline: plain next-token NLL, no thoughts"
    )
    lines = [
        f"# Quiet-STaR on {source}" if cfg.thoughts else f"# Baseline (no thoughts) on {source}",
        "",
        f"Start `{cfg.model}`; {cfg.steps} steps of {cfg.batch_size} documents, lr {cfg.lr}; {setting}. Held-out: "
        f"{evals[-1]['held_out_tokens']:.0f} tokens, {evals[-1]['held_out_hard_tokens']:.0f} of them hard (the "
        "results of arithmetic steps and the answer). Thoughts at evaluation: greedy, one per position.",
        "",
        "| step | NLL/token without thoughts | with thoughts | hard tokens without | hard tokens with | mixing weight |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['step']} | {r['held_out_nll']:.4f} | {r['held_out_nll_thought']:.4f} | {r['held_out_nll_hard']:.4f}"
            f" | {r['held_out_nll_thought_hard']:.4f} | {r['held_out_weight']:.3f} |"
            for r in evals
        ),
        "",
        f"Wall time {records[-1].get('seconds', 0.0):.0f} s.",
        "",
        "![held-out NLL](plots/held_out_nll.png)" + (" ![loss](plots/loss.png)" if steps else ""),
        "",
    ]
    atomic_write_text(path / "report.md", "\n".join(lines))
