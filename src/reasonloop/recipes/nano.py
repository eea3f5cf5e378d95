"""The nano model: a character-level Llama trained from scratch on a built-in world in minutes on a CPU.

Run it with ``reasonloop init`` (which also evaluates the result). The world is
`arith` by default; ``--set task=countdown:n_numbers=3,number_max=9`` builds a
countdown base the same way (its "pretraining" operations are the world's legal
steps, its seed set the generating solutions of train-split problems).

Training data, as in STaR's setting of a large "pretraining" corpus plus a small
seed set P of worked rationales:

(a) single arithmetic operations of the world, ``37+45=82``, packed many to a row;
(b) a few hundred worked multi-step solutions of *train*-split problems, a quarter of them shown
    with the answer as a hint (the prompt STaR's rationalisation uses).

The base must be imperfect on purpose (greedy accuracy 20-50%, pass@16 at least
twice that) so that self-improvement and verifiers have room to work. Small
models learn this world through a sharp phase change (copying the k-th operation
out of the question), so a fixed step count would land anywhere from 5% to 60%
depending on float noise. Instead training stops at the first check where greedy
accuracy on held-out *train-split* problems (never the test split) reaches
`target_accuracy`. The seed set holds only chains up to `seed_max_ops` long.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from reasonloop.core import atomic_write_json, bounded, load_config
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy
from reasonloop.models import save_model
from reasonloop.models.nano import build_model, build_tokenizer
from reasonloop.tasks import WORLDS, get_task, parse_task_spec
from reasonloop.tasks.arith import ArithTask
from reasonloop.tasks.base import WorldTask


@dataclass(frozen=True)
class NanoConfig:
    """How the nano base model is built."""

    hidden_size: int = bounded(96, ge=1)  # width of the transformer
    n_layers: int = bounded(3, ge=1)  # transformer blocks
    n_heads: int = bounded(4, ge=1)  # attention heads
    n_kv_heads: int = bounded(2, ge=1)  # key/value heads (grouped-query attention)
    mlp_size: int = bounded(256, ge=1)  # SwiGLU hidden size
    seq_len: int = bounded(128, ge=8)  # training row length in tokens (raised to fit the longest worked solution)
    batch_size: int = bounded(16, ge=1)  # rows per optimiser step
    steps: int = bounded(1500, ge=1)  # most optimiser steps (the cosine schedule spans these)
    lr: float = bounded(3e-3, gt=0)  # peak learning rate (cosine decay to 10%)
    warmup: int = bounded(30, ge=0)  # linear warm-up steps
    n_seed_solutions: int = bounded(400, ge=0)  # size of the seed set P of worked solutions
    seed_max_ops: int = bounded(4, ge=1)  # arith: the seed set only holds chains this short
    seed_fraction: float = bounded(0.5, ge=0, le=1)  # share of training documents that are worked solutions
    # share of worked solutions shown with the answer as a hint (for rationalisation)
    hint_fraction: float = bounded(0.25, ge=0, le=1)
    facts_per_doc: int = bounded(8, ge=1)  # operations per "pretraining" document
    target_accuracy: float = bounded(0.3, ge=0, le=1)  # stop once validation greedy accuracy reaches this (1.0: never)
    eval_every: int = bounded(20, ge=1)  # steps between validation checks (5 once past half the target)
    n_val_problems: int = bounded(150, ge=1)  # train-split validation problems (disjoint from the seed set)
    seed: int = bounded(0, ge=0)  # everything derives from this seed
    task: str = "arith"  # the world, with options: "arith", "countdown:n_numbers=3,number_max=9", "extract"

    def __post_init__(self) -> None:
        if parse_task_spec(self.task)[0] not in WORLDS:
            raise ValueError(f"task must be a built-in world ({', '.join(WORLDS)}), not {self.task!r}")
        get_task(self.task)  # a typo in the world's options fails here, before anything is built
        if self.hidden_size % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError("hidden_size must be a multiple of n_heads, and n_heads a multiple of n_kv_heads")


# Defaults that differ by world (a config file and --set still override them): extract's base has to learn to
# copy names and years across ~100 characters, which takes a large seed set and more steps than arith's chains.
WORLD_DEFAULTS: dict[str, dict[str, object]] = {
    "extract": {"steps": 3000, "n_seed_solutions": 4000, "seed_fraction": 0.7},
}


def load_nano_config(path: str | Path | None = None, overrides: list[str] | None = None) -> NanoConfig:
    """`NanoConfig` from a YAML file and `key=value` overrides, over the defaults of the world it names."""
    cfg = load_config(NanoConfig, path, overrides)
    world = WORLD_DEFAULTS.get(parse_task_spec(cfg.task)[0])
    return load_config(NanoConfig, path, overrides, defaults=world) if world else cfg


def seed_set(task: WorldTask, cfg: NanoConfig, hinted: bool = False) -> list[tuple[str, str]]:
    """STaR's small seed set P: (prompt, worked solution) for short train-split chains.

    With `hinted`, the prompts are the hint prompts (the answer given), as the
    rationalisation step of STaR will ask: seeing a few such documents is what
    lets the base use a hint at all.
    """
    short = task
    if isinstance(task, ArithTask):
        short = ArithTask(replace(task.config, max_ops=min(cfg.seed_max_ops, task.config.max_ops)))
    problems = short.problems("train", cfg.n_seed_solutions, seed=cfg.seed + 1)
    return [(p.meta["hint_prompt"] if hinted else p.prompt, p.meta["solution"]) for p in problems]


class _Docs:
    """An endless stream of tokenised documents: worked solutions and blocks of single operations."""

    def __init__(self, task: WorldTask, cfg: NanoConfig, tokenizer):
        self.rng = random.Random(cfg.seed)
        self.cfg = cfg
        self.eos = tokenizer.eos_token_id
        self.solutions = [tokenizer(p + s)["input_ids"] + [self.eos] for p, s in seed_set(task, cfg)]
        self.hinted = [tokenizer(p + s)["input_ids"] + [self.eos] for p, s in seed_set(task, cfg, hinted=True)]
        self.tokenizer = tokenizer
        self.task = task
        # a row holds at least one whole worked solution (extract's run to ~200 characters)
        self.row_len = (
            max(cfg.seq_len, *(len(d) - 1 for d in self.solutions + self.hinted)) if self.solutions else cfg.seq_len
        )
        self._facts: list[str] = []
        self._fact_seed = cfg.seed

    def _fact(self) -> str:
        if not self._facts:
            self._fact_seed += 1
            self._facts = self.task.facts(4096, seed=self._fact_seed)[::-1]
        return self._facts.pop()  # in chain order: each fact starts from the previous result

    def next(self) -> list[int]:
        if self.rng.random() < self.cfg.seed_fraction:
            hint = self.cfg.hint_fraction > 0 and self.rng.random() < self.cfg.hint_fraction
            return self.rng.choice(self.hinted if hint else self.solutions)
        text = "\n".join(self._fact() for _ in range(self.cfg.facts_per_doc))
        return self.tokenizer(text)["input_ids"] + [self.eos]

    def batch(self) -> torch.Tensor:
        """(B, T+1) rows packed with whole documents (a row starts at a document start)."""
        T = self.row_len + 1
        rows = []
        for _ in range(self.cfg.batch_size):
            row: list[int] = []
            while len(row) < T:
                row.extend(self.next())
            rows.append(row[:T])
        return torch.tensor(rows)


def train_nano(
    out_dir: str | Path,
    cfg: NanoConfig | None = None,
    task: WorldTask | None = None,
    log: Callable[[dict], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    callback: Callable[[int, object, object], None] | None = None,
) -> Path:
    """Train the nano base from scratch and save it (model + tokenizer) to `out_dir`."""
    cfg = cfg or NanoConfig()
    task = task or get_task(cfg.task)
    tokenizer = build_tokenizer()
    model = build_model(
        tokenizer, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads, mlp_size=cfg.mlp_size, seed=cfg.seed,
    )  # fmt: skip
    model.train()
    docs = _Docs(task, cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    val = validation_problems(task, cfg)
    history: list[dict] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        rows = docs.batch()
        inputs, targets = rows[:, :-1], rows[:, 1:]  # (B, T)
        logits = model(input_ids=inputs).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        record = {"step": step + 1, "loss": loss.item(), "lr": lr_at(step), "elapsed_s": time.perf_counter() - t0}
        # near the target, check every 5 steps: accuracy rises steeply through the phase change
        every = 5 if history and history[-1]["val_greedy_accuracy"] >= cfg.target_accuracy / 2 else cfg.eval_every
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            model.eval()
            record["val_greedy_accuracy"] = greedy_accuracy(
                HFEngine(model, tokenizer), task.grade, val, task.max_solution_tokens
            )
            model.train()
            history.append(record)
        if progress:
            progress(record)
        if log and ("val_greedy_accuracy" in record or step % 50 == 0):
            log(record)
        if callback:
            model.eval()
            callback(step + 1, model, tokenizer)
            model.train()
        if record.get("val_greedy_accuracy", 0.0) >= cfg.target_accuracy:
            break
    model.eval()
    out = save_model(model, tokenizer, out_dir)
    summary = {
        "config": asdict(cfg),
        "world": asdict(task.config),
        "stopped_at_step": history[-1]["step"] if history else cfg.steps,
        "val_greedy_accuracy": history[-1]["val_greedy_accuracy"] if history else None,
        "train_seconds": time.perf_counter() - t0,
        "history": history,
    }
    atomic_write_json(out / "nano_training.json", summary)
    return out


def validation_problems(task: WorldTask, cfg: NanoConfig) -> list:
    """Train-split problems of every length, excluding the seed set: what early stopping looks at."""
    seed_prompts = {p for p, _ in seed_set(task, cfg)}
    pool = task.problems("train", cfg.n_val_problems + len(seed_prompts), seed=cfg.seed + 2)
    return [p for p in pool if p.prompt not in seed_prompts][: cfg.n_val_problems]
