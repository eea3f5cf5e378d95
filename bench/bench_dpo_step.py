"""One DPO step (plain and per-step), ours against TRL's DPOTrainer, on the same tiny model and pairs.

    python bench/bench_dpo_step.py --steps 10 --threads 1

The model is the RL bench's: a random 4-layer Llama (width 128) over the nano
tokenizer. Pairs come from arith's canonical solutions, tokenised as TRL
tokenises them (the prompt with its special tokens, then the completion and
EOS), and are the same rows on both sides:

- plain: prompt -> whole right solution against a whole wrong one (a step's
  result changed, then the answer);
- per-step: prompt + the solution's first k steps -> the right rest against a
  wrong step k + 1 and its answer (the context is most of each row).

Both sides: sigmoid DPO loss, beta 0.1, AdamW at lr 1e-5 (no weight decay),
8 pairs per optimiser step, gradient clipping at 1.0, no dropout effect
(eval-free tiny model), median of the timed steps after two warm-ups, one
process. TRL runs twice: with its default reference forward every step, and
with `precompute_ref_log_probs=True` (the reference pass before training, as
ours always does). Our one-off reference pass is timed too and reported per
pair. Prints a table and writes `bench/results/dpo_step.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from reasonloop.models import load_model
from reasonloop.recipes.step_dpo import StepDpoUpdateConfig, preference_loss
from reasonloop.tasks import ArithTask
from reasonloop.train import TrainConfig, Trainer
from reasonloop.train.step_pairs import PreferencePair

sys.path.insert(0, str(Path(__file__).parent))
from bench_rl_step import tiny_model_dir  # noqa: E402

BATCH = 8


def text_pairs(n: int, per_step: bool, seed: int = 0) -> list[dict[str, str]]:
    """`n` (prompt, chosen, rejected) texts from arith's canonical solutions (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for p in ArithTask().problems("train", 4 * n, seed=seed):
        steps = p.meta["solution"].split("\n")  # "a op b=c" lines, then "A: x"
        if len(steps) < 3:
            continue
        k = rng.randrange(len(steps) - 1) if per_step else 0  # the step that goes wrong
        lhs, result = steps[k].rsplit("=", 1)
        wrong = str(int(result) + rng.choice([-2, -1, 1, 2]))
        rejected = [f"{lhs}={wrong}", f"A: {wrong}"]
        prompt = p.prompt + "".join(s + "\n" for s in steps[:k])
        out.append({"prompt": prompt, "chosen": "\n".join(steps[k:]), "rejected": "\n".join(rejected)})
        if len(out) == n:
            return out
    raise RuntimeError("not enough arith problems with three steps or more")


def id_pairs(tok, rows: list[dict[str, str]]) -> list[PreferencePair]:
    """The same rows as token ids, tokenised as TRL's DPOTrainer tokenises them."""
    eos = [tok.eos_token_id]

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    return [
        PreferencePair("p", tok(r["prompt"])["input_ids"], enc(r["chosen"]) + eos, enc(r["rejected"]) + eos)
        for r in rows
    ]


def ours(model_dir: Path, rows, per_step: bool, steps: int) -> dict[str, float]:
    model, tok = load_model(model_dir)
    data = id_pairs(tok, rows)
    cfg = StepDpoUpdateConfig(loss="step_dpo" if per_step else "dpo", beta=0.1, batch_size=BATCH)
    t0 = time.perf_counter()
    loss_fn = preference_loss(model, data, tok.pad_token_id, cfg)  # the one-off reference pass
    ref_s = time.perf_counter() - t0
    trainer = Trainer(model, tok, TrainConfig(steps=steps + 2, lr=1e-5, warmup=0, max_grad_norm=1.0))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        trainer.step([list(range(i * BATCH, (i + 1) * BATCH))], loss_fn)
        times.append(time.perf_counter() - t0)
    return {"step": statistics.median(times[2:]), "ref_per_pair": ref_s / len(data)}


def trl(model_dir: Path, rows, steps: int, precompute: bool) -> dict[str, float]:
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model, tok = load_model(model_dir)
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, beta=0.1, learning_rate=1e-5,
        max_steps=steps + 2, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, bf16=False, disable_tqdm=True,
        dataloader_num_workers=0, precompute_ref_log_probs=precompute,
    )  # fmt: skip
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t0)

    trainer.add_callback(Clock())
    try:
        trainer.train()
    finally:
        AcceleratorState._reset_state(True)
    return {"step": statistics.median(times[2:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side and kind of pair")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as root:
        model_dir = tiny_model_dir(Path(root))
        for per_step in (False, True):
            rows = text_pairs(BATCH * (args.steps + 2), per_step)
            a = ours(model_dir, rows, per_step, args.steps)
            b = trl(model_dir, rows, args.steps, precompute=False)
            c = trl(model_dir, rows, args.steps, precompute=True)
            tok = load_model(model_dir)[1]
            mean_len = statistics.mean(
                len(p.context_ids) + (len(p.chosen_ids) + len(p.rejected_ids)) / 2 for p in id_pairs(tok, rows)
            )
            results.append(
                {
                    "pairs": "per-step" if per_step else "plain", "mean_row_tokens": mean_len, "ours": a,
                    "trl": b, "trl_precomputed_ref": c,
                }
            )  # fmt: skip
    print(f"{'pairs':>9} | ours ms (ref pass per pair) | TRL ms | ratio | TRL precomputed ref ms | ratio")
    for r in results:
        a, b, c = r["ours"]["step"], r["trl"]["step"], r["trl_precomputed_ref"]["step"]
        print(
            f"{r['pairs']:>9} | {1000 * a:.1f} ({1000 * r['ours']['ref_per_pair']:.2f}) | {1000 * b:.1f} | "
            f"{a / b:.2f}x | {1000 * c:.1f} | {a / c:.2f}x"
        )
    out = Path(__file__).parent / "results" / "dpo_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**vars(args), "batch_pairs": BATCH, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
