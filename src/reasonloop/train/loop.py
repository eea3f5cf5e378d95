"""One small optimiser loop that runs any loss: accumulation, schedule, clipping, NaN guard, eval, checkpoints.

    state = train_loop(model, tokenizer, batches, loss_fn, TrainConfig(steps=200), out_dir="run/ckpt")

    trainer = Trainer(model, tokenizer, TrainConfig(steps=1000), out_dir="run/ckpt")   # online: set up once
    record = trainer.step([batch], loss_fn)                                            # one optimiser step

`batches(i)` returns the i-th micro-batch (so a resumed run sees the same data);
`loss_fn(model, batch)` returns `(loss, metrics)`. `Trainer` holds what lives
across steps (optimiser, schedule, accelerate, checkpoints) and its `step` is
written out from `zero_grad` to `opt.step()`, as in nanoGPT; `train_loop` is a
for-loop over it. accelerate places the model and
gradients, so the same loop runs on one CPU or, launched with `accelerate
launch`, on many GPUs.

A checkpoint directory (`out_dir/last`) holds the model (`save_pretrained`),
tokenizer and `trainer_state.pt` (optimizer, scheduler, step); it is written to
a temporary sibling and renamed, so a kill never leaves half of one, and
rerunning the same call resumes from it.

Under `accelerate launch` with several processes (DDP; see docs/multi-process.md)
every process runs the same loop on its own micro-batches: optimiser step `s`,
accumulation slot `m` of process `r` out of `W` reads `batches((s * grad_accum
+ m) * W + r)`, so one step sees `grad_accum * W` micro-batches and W=1 reads
exactly what a single process always read. DDP averages the gradients, the
loss metrics are averaged over the processes, a non-finite loss on any process
skips the step on all of them, and only the main process writes checkpoints
and calls `log` / `progress`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
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


def _save_checkpoint(
    path: Path,
    model,
    tokenizer,
    optimizer_state: dict | None,
    step: int,
    history: list[dict],
    extra: dict | None = None,
    full_state_dict: dict | None = None,
) -> None:
    with atomic_dir(path) as tmp:  # a full disk: one line, no half checkpoint, no tmp left
        if full_state_dict is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:  # FSDP / DeepSpeed: the weights gathered from every process's shard
            model.save_pretrained(tmp, safe_serialization=True, state_dict=full_state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        state = {"optimizer": optimizer_state, "step": step, "history": history, "rng": torch.get_rng_state()}
        torch.save({**state, **(extra or {})}, tmp / "trainer_state.pt")


def load_weights(model, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load tensors read from a saved directory into `model`; returns (missing, unexpected) keys.

    A model with extra parts saved beside its backbone (a value head, a critic)
    says how through `load_saved_weights`; a peft model loads its adapter weights.
    """
    load = getattr(model, "load_saved_weights", None)
    if load is not None:
        return load(weights)
    if hasattr(model, "peft_config"):
        from reasonloop.train.lora import load_adapter_weights

        return load_adapter_weights(model, weights)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    return list(missing), list(unexpected)


def _load_checkpoint(path: Path, model, opt) -> dict[str, Any]:
    from safetensors.torch import load_file

    state = torch.load(path / "trainer_state.pt", weights_only=False)
    if state["optimizer"] is None:
        raise TrainingError(
            f"{path}: written under FSDP/DeepSpeed, it holds the weights but not the sharded optimiser state, "
            "so the run cannot resume exactly; start a new run from these weights"
        )
    weights: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    missing, unexpected = load_weights(model, weights)
    # tied embeddings are saved once; anything else missing means a different model
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise TrainingError(
            f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    opt.load_state_dict(state["optimizer"])
    return state


class Trainer:
    """An optimiser set up once over `model`: `step(micro_batches, loss_fn)` is one optimiser step.

    Online recipes (RL, self-play) feed it one rollout batch at a time, so the
    optimiser state and the learning-rate schedule (`cfg.lr_at(step)`, over
    `cfg.steps` optimiser steps) carry across batches. `save()` writes
    `out_dir/last` (model, tokenizer, optimiser, step, history, torch RNG, and
    any `extra` state of the caller); constructing a Trainer over the same
    `out_dir` resumes from it (`self.step_count`, `self.history`, `self.extra`).
    `lr_scales` maps parameter-name prefixes to multipliers of the scheduled
    learning rate (a critic that learns faster than the policy it sits beside).
    """

    def __init__(
        self,
        model,
        tokenizer,
        cfg: TrainConfig,
        *,
        out_dir: str | os.PathLike | None = None,
        lr_scales: dict[str, float] | None = None,
    ):
        from accelerate import Accelerator

        torch.manual_seed(cfg.seed)
        try:
            # explicit, because accelerate's process-wide state keeps whatever an earlier trainer chose
            self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
        except ValueError as e:
            raise TrainingError(f"accelerate was already set up differently in this process: {e}") from None
        self.cfg = cfg
        self.tokenizer = tokenizer
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]

        def scale_of(name: str) -> float:
            return next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)

        # matrices decay, vectors do not; parameters named by an `lr_scales` prefix get their own groups
        groups = [
            {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
            for decay in (True, False)
            for scale in sorted({1.0} | set((lr_scales or {}).values()))
            if (ps := [p for n, p in named if (p.dim() >= 2) == decay and scale_of(n) == scale]) or scale == 1.0
        ]
        # foreach: the same numbers as the per-tensor loop, bit for bit, in fewer calls. Not fused (one kernel,
        # ~4x faster on CPU, ~1.5 ms a step on tiny models): it rounds differently, which would change every
        # published figure, and it writes the weights without moving their version counters, so an engine over
        # this model (`engine.fast`) would need `torch.autograd.graph.increment_version` after each step
        self.model, self.opt = self.accelerator.prepare(
            model, torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=True)
        )
        self.last = Path(out_dir) / "last" if out_dir is not None else None
        self.step_count, self.history, self.extra = 0, [], {}
        if self.last is not None and (self.last / "trainer_state.pt").exists():
            state = _load_checkpoint(self.last, self.unwrapped, self.opt)
            self.step_count, self.history = int(state.pop("step")), list(state.pop("history"))
            if "rng" in state:
                torch.set_rng_state(state.pop("rng"))
            state.pop("optimizer")
            self.extra = state
        self.bad_steps = 0
        self.t0 = time.perf_counter()

    @property
    def unwrapped(self):
        """The model without accelerate's wrapping (what is saved, evaluated and sampled from)."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def num_processes(self) -> int:
        """How many processes train together (1 unless started by `accelerate launch`)."""
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        """This process's rank, 0 to `num_processes - 1`."""
        return self.accelerator.process_index

    @property
    def is_main_process(self) -> bool:
        """Whether this process is the one that writes checkpoints and logs."""
        return self.accelerator.is_main_process

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process: all of them must skip together, or DDP's gradient
        all-reduce would wait forever for the one that skipped."""
        finite = bool(torch.isfinite(loss))
        if self.num_processes == 1:
            return finite
        flags = self.accelerator.gather(torch.tensor([float(finite)], device=self.accelerator.device))
        return bool(flags.min() > 0)

    def _mean_over_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each process's metrics are over its own micro-batches; the step's are their mean."""
        if self.num_processes == 1 or not metrics:
            return metrics
        keys = sorted(metrics)  # the same loss function on every process: the same keys
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self.accelerator.device)
        return dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist()))

    def step(self, micro_batches: Iterable[Any], loss_fn: LossFn) -> dict[str, float] | None:
        """One optimiser step: gradients of `loss_fn` averaged over `micro_batches` (gradient accumulation),
        clipped, applied at the scheduled learning rate. Returns the step's record, or None when a non-finite
        loss skipped the update (raises `TrainingError` after `cfg.max_bad_steps` in a row). The model is left in
        training mode: call `.eval()` before evaluating it with dropout off."""
        cfg, step = self.cfg, self.step_count
        self.step_count += 1
        lr = cfg.lr_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        self.opt.zero_grad(set_to_none=True)
        if not self.model.training:  # switching modes walks every module: only when needed
            self.model.train()
        batches = list(micro_batches) if not isinstance(micro_batches, list) else micro_batches
        metrics: dict[str, float] = {}
        for i, batch in enumerate(batches):
            # DDP all-reduces gradients at every backward unless told not to: once per step is enough
            last = i == len(batches) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                loss, m = loss_fn(self.model, batch)
                if not self._all_finite(loss):  # NaN guard: skip the update, give up if it keeps happening
                    self.bad_steps += 1
                    self.opt.zero_grad(set_to_none=True)
                    if self.bad_steps > cfg.max_bad_steps:
                        raise TrainingError(
                            f"loss was non-finite for {self.bad_steps} steps in a row at step {step + 1}; lower the lr"
                        )
                    return None
                self.accelerator.backward(loss / len(batches))
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + v / len(batches)
        self.bad_steps = 0
        metrics = self._mean_over_processes(metrics)
        grad_norm = self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        self.opt.step()
        record = {"step": step + 1, "lr": lr, "elapsed_s": time.perf_counter() - self.t0, **metrics}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        return record

    def save(self, extra: dict[str, Any] | None = None) -> None:
        """Checkpoint to `out_dir/last` (atomic: a kill never leaves half of one). Every process must call it;
        the main process writes, the others wait until it has."""
        from accelerate.utils import DistributedType

        if self.last is None:
            raise ValueError("this trainer has no out_dir to save to")
        self.extra = dict(extra or {})
        # FSDP and DeepSpeed shard weights and optimiser state: the weights are gathered (every process takes
        # part), the optimiser shards are not saved (see `_load_checkpoint`). DDP's copies are whole already.
        sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        full_state_dict = self.accelerator.get_state_dict(self.model) if sharded else None
        if self.is_main_process:
            optimizer_state = None if sharded else self.opt.state_dict()
            _save_checkpoint(
                self.last, self.unwrapped, self.tokenizer, optimizer_state, self.step_count, self.history,
                self.extra, full_state_dict,
            )  # fmt: skip
        self.accelerator.wait_for_everyone()


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
    trainer = Trainer(model, tokenizer, cfg, out_dir=out_dir)
    world, rank = trainer.num_processes, trainer.process_index
    main = trainer.is_main_process
    evals: dict[str, float] = {}
    for step in range(trainer.step_count, cfg.steps):
        micro = (batches((step * cfg.grad_accum + m) * world + rank) for m in range(cfg.grad_accum))
        record = trainer.step(micro, loss_fn)
        if record is None:
            if log and main:
                log({"step": step + 1, "skipped": "non-finite loss", "bad_steps": trainer.bad_steps})
            continue
        done = step + 1 == cfg.steps
        if evaluate is not None and (done or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
            trainer.model.eval()
            evals = {f"eval_{k}": v for k, v in evaluate(trainer.unwrapped).items()}
            record.update(evals)
        trainer.history.append(record)
        if log and main:
            log(record)
        if progress and main:
            progress(record)
        if trainer.last is not None and (done or (cfg.save_every and (step + 1) % cfg.save_every == 0)):
            trainer.save()
    trainer.model.eval()
    return {"step": cfg.steps, "history": trainer.history, "eval": evals, "config": asdict(cfg)}


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
