"""One small optimiser loop that runs any loss: accumulation, schedule, clipping, NaN guard, eval, checkpoints.

    state = train_loop(model, tokenizer, batches, loss_fn, TrainConfig(steps=200), out_dir="run/ckpt")

`batches(i)` returns the i-th micro-batch (so a resumed run sees the same data);
`loss_fn(model, batch)` returns `(loss, metrics)`. The loop is written out from
`zero_grad` to the log line, as in nanoGPT. accelerate places the model and
gradients, so the same loop runs on one CPU or, launched with `accelerate
launch`, on many GPUs.

A checkpoint directory (`out_dir/last`) holds the model (`save_pretrained`),
tokenizer and `trainer_state.pt` (optimizer, scheduler, step); it is written to
a temporary sibling and renamed, so a kill never leaves half of one, and
rerunning the same call resumes from it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from reasonloop.core import ReasonloopError, atomic_dir

LossFn = Callable[[Any, Any], tuple[torch.Tensor, dict[str, float]]]


class TrainingError(ReasonloopError):
    """Training cannot go on (for example, the loss stayed non-finite)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to optimise."""

    steps: int = 100  # optimiser steps
    lr: float = 1e-4  # peak learning rate
    warmup: int = 10  # linear warm-up steps
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_accum: int = 1  # micro-batches per optimiser step
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    max_bad_steps: int = 3  # consecutive non-finite losses tolerated before giving up
    seed: int = 0  # torch seed for the run
    mixed_precision: str = "no"  # "no", "bf16" or "fp16", passed to accelerate

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got '{self.mixed_precision}'")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to `lr * min_lr_ratio`."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _save_checkpoint(path: Path, model, tokenizer, opt, step: int, history: list[dict]) -> None:
    with atomic_dir(path) as tmp:  # a full disk: one line, no half checkpoint, no tmp left
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": opt.state_dict(), "step": step, "history": history}, tmp / "trainer_state.pt")


def _load_checkpoint(path: Path, model, opt) -> tuple[int, list[dict]]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    # a model with extra parts saved beside its backbone (a value head) says how to load them
    load = getattr(model, "load_saved_weights", None)
    missing, unexpected = load(weights) if load else model.load_state_dict(weights, strict=False)
    # tied embeddings are saved once; anything else missing means a different model
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise TrainingError(
            f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["history"])


def train_loop(
    model,
    tokenizer,
    batches: Callable[[int], Any],
    loss_fn: LossFn,
    cfg: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    log: Callable[[dict], None] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Optimise `model` for `cfg.steps` steps; returns {"step", "history", "eval"}. See the module docstring."""
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    try:
        # explicit, because accelerate's process-wide state keeps whatever an earlier trainer chose
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    except ValueError as e:
        raise TrainingError(f"accelerate was already set up differently in this process: {e}") from None
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    model, opt = accelerator.prepare(model, opt)
    last = Path(out_dir) / "last" if out_dir is not None else None
    start, history = 0, []
    if last is not None and (last / "trainer_state.pt").exists():
        start, history = _load_checkpoint(last, accelerator.unwrap_model(model), opt)
    evals: dict[str, float] = {}
    bad_steps = 0
    t0 = time.perf_counter()
    model.train()
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        opt.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        finite = True
        for micro in range(cfg.grad_accum):
            loss, m = loss_fn(model, batches(step * cfg.grad_accum + micro))
            if not torch.isfinite(loss):
                finite = False
                break
            accelerator.backward(loss / cfg.grad_accum)
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + v / cfg.grad_accum
        if not finite:  # NaN guard: skip the update, give up if it keeps happening
            bad_steps += 1
            opt.zero_grad(set_to_none=True)
            if log:
                log({"step": step + 1, "skipped": "non-finite loss", "bad_steps": bad_steps})
            if bad_steps > cfg.max_bad_steps:
                raise TrainingError(
                    f"loss was non-finite for {bad_steps} steps in a row at step {step + 1}; lower the lr"
                )
            continue
        bad_steps = 0
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        opt.step()
        record = {"step": step + 1, "lr": cfg.lr_at(step), "elapsed_s": time.perf_counter() - t0, **metrics}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        done = step + 1 == cfg.steps
        if evaluate is not None and (done or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            model.eval()
            evals = {f"eval_{k}": v for k, v in evaluate(accelerator.unwrap_model(model)).items()}
            model.train()
            record.update(evals)
        history.append(record)
        if log:
            log(record)
        if progress:
            progress(record)
        if last is not None and (done or (cfg.save_every and (step + 1) % cfg.save_every == 0)):
            _save_checkpoint(last, accelerator.unwrap_model(model), tokenizer, opt, step + 1, history)
    model.eval()
    return {"step": cfg.steps, "history": history, "eval": evals, "config": asdict(cfg)}


def sft_on_pairs(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    cfg: TrainConfig,
    batch_size: int,
    out_dir: str | os.PathLike | None,
    seed: int,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning on (prompt, completion) pairs, loss on completion tokens only, for `cfg.steps`
    steps, reshuffled every epoch; resumable through `out_dir` like `train_loop`."""
    from reasonloop.train.data import encode_pairs, shuffled_batch
    from reasonloop.train.losses import sft_loss

    if not pairs:
        raise ValueError("no training pairs")

    def batches(i: int):
        chosen = [pairs[j] for j in shuffled_batch(i, len(pairs), batch_size, seed)]
        return encode_pairs(tokenizer, [p for p, _ in chosen], [c for _, c in chosen])

    def loss_fn(m, b):
        logits = m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        return sft_loss(logits, b.input_ids, b.completion_mask)

    return train_loop(model, tokenizer, batches, loss_fn, cfg, out_dir=out_dir, progress=progress)
