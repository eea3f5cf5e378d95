"""SFT of a saved tiny model, run by tests/test_train_ddp.py under `accelerate launch` (and in-process).

    accelerate launch --config_file examples/accelerate/ddp-2proc.yaml tests/ddp_worker.py MODEL OUT STEPS GA [CRASH]

Micro-batch `i` is two pairs drawn by `shuffled_batch(i, ...)`, so a step's data depends only on which indices
`train_loop` reads. Micro-batch 9 has a non-finite loss, on purpose: with 1 process and grad_accum=2 it is the
second half of step 5, with 2 processes and grad_accum=1 it is process 1's half, and either way step 5 must be
skipped as one. CRASH > 0 raises on every process at that step (after a checkpoint), to test resuming.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

PROMPTS = [f"Q: {a}+{b}\n" for a, b in [(1, 2), (3, 4), (12, 9), (5, 5), (27, 14), (8, 1), (40, 2), (6, 33)]]
ANSWERS = [
    f"{a}+{b}={a + b}\nA: {a + b}" for a, b in [(1, 2), (3, 4), (12, 9), (5, 5), (27, 14), (8, 1), (40, 2), (6, 33)]
]
POISONED = 9  # the micro-batch whose loss is NaN


def make_batches(tokenizer):
    from reasonloop.train.data import encode_pairs, shuffled_batch

    def batches(i: int):
        idx = shuffled_batch(i, len(PROMPTS), 2, seed=3)
        return i, encode_pairs(tokenizer, [PROMPTS[j] for j in idx], [ANSWERS[j] for j in idx])

    return batches


def make_loss(per_step: int, crash_at_step: int = 0):
    """`per_step`: micro-batches one optimiser step reads over all processes (grad_accum * processes)."""
    from reasonloop.train.losses import sft_loss

    def loss_fn(model, indexed):
        i, b = indexed
        if crash_at_step and i // per_step + 1 == crash_at_step:
            raise RuntimeError(f"planned crash at step {crash_at_step}")
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        loss, metrics = sft_loss(logits, b.input_ids, b.completion_mask)
        return (loss * math.nan, metrics) if i == POISONED else (loss, metrics)

    return loss_fn


def config(steps: int, grad_accum: int):
    from reasonloop.train.loop import TrainConfig

    return TrainConfig(steps=steps, lr=1e-2, warmup=3, grad_accum=grad_accum, save_every=5, seed=0)


def main(argv: list[str]) -> None:
    from reasonloop.models import load_model
    from reasonloop.train.loop import train_loop

    torch.set_num_threads(1)
    model_dir, out, steps, grad_accum = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    crash_at = int(argv[4]) if len(argv) > 4 else 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    model, tokenizer = load_model(model_dir)
    out.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:  # train_loop calls it on the main process only: the rank says who wrote
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"rank": int(os.environ.get("RANK", "0")), **record}) + "\n")

    state = train_loop(
        model, tokenizer, make_batches(tokenizer), make_loss(grad_accum * world, crash_at), config(steps, grad_accum),
        out_dir=out / "ckpt", log=log,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "history.json").write_text(json.dumps(state["history"]))


if __name__ == "__main__":
    main(sys.argv[1:])
