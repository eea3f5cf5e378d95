"""One GRPO step, ours against TRL's GRPOTrainer, on the same tiny model, prompts, group size and completion length.

    python bench/bench_rl_step.py                      # both settings, 6 timed steps each, 2 threads
    python bench/bench_rl_step.py --steps 10 --threads 1

Both sides run in this process, one after the other for each setting, with the
same settings: GRPO, beta = 0 (no reference model), one optimiser step per
rollout batch (mu = 1), temperature 1, full fine-tuning, AdamW. Each side
first runs two untimed warm-up steps. The time of a step is split into rollout
(generation), reward (grading) and update (everything else: logprobs,
advantages, forward, backward, optimiser); for TRL by timing its `_generate`
and reward calls inside `trainer.train()`. Prints a table and writes
`bench/results/rl_step.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from reasonloop.models import build_tokenizer, load_model, save_model
from reasonloop.recipes.rl import RLConfig, RLRun
from reasonloop.tasks import ArithTask

SETTINGS = [(2, 4, 8), (8, 8, 32)]  # (prompts, group size, completion tokens)


def tiny_model_dir(root: Path, hidden: int = 128, layers: int = 4, mlp: int = 256, heads: int = 4) -> Path:
    """A small random Llama over the nano tokenizer (4 layers, width 128 by default), saved like any checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    return save_model(LlamaForCausalLM(cfg), tok, root / "model")


def taught(model_dir: Path, problems, steps: int, seed: int = 0) -> Path:
    """Teach the model the canonical solutions of `problems` for `steps` SFT steps (in place), so that sampling
    at temperature 1 gets some answers right and some wrong: groups carry signal, as in a real RL run."""
    from reasonloop.train import TrainConfig, encode_pairs, sft_loss, train_loop

    model, tok = load_model(model_dir)
    data = encode_pairs(tok, [p.prompt for p in problems], [p.meta["solution"] for p in problems])
    g = torch.Generator().manual_seed(seed)

    def loss_fn(m, b):
        return sft_loss(
            m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
        )

    def batches(i):
        rows = torch.randint(len(problems), (32,), generator=g)
        return type(data)(data.input_ids[rows], data.attention_mask[rows], data.completion_mask[rows])

    train_loop(model, tok, batches, loss_fn, TrainConfig(steps=steps, lr=3e-3, warmup=10, seed=seed))
    return save_model(model, tok, model_dir)


def ours(model_dir: Path, problems, G: int, L: int, steps: int, skip: bool = True) -> list[dict[str, float]]:
    cfg = RLConfig(
        model=str(model_dir), prompts_per_step=len(problems), group_size=G, max_new_tokens=L, lr=1e-5,
        skip_no_signal=skip,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as ckpt:
        rl = RLRun(cfg, model_dir, Path(ckpt))
        task = ArithTask()
        out = []
        for step in range(steps + 2):
            t0 = time.perf_counter()
            r = rl.train_step(problems, task.grade, task.step_delimiter, step)
            total = time.perf_counter() - t0
            lengths = r["length_mean"]
            out.append(
                {
                    "total": total, "rollout": r["rollout_s"], "reward": r["grade_s"], "length": lengths,
                    "reward_mean": r["reward_mean"], "no_signal_groups": r["no_signal_groups"],
                }
            )  # fmt: skip
    return out[2:]


def trl(model_dir: Path, problems, G: int, L: int, steps: int) -> list[dict[str, float]]:
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task = ArithTask()
    model, tok = load_model(model_dir)
    rows = [{"prompt": p.prompt, "answer": p.answer, "id": p.id} for p in problems] * (steps + 2)
    by_id = {p.id: p for p in problems}
    timing: dict[str, float] = {"rollout": 0.0, "reward": 0.0}
    scores: list[float] = []

    def reward(prompts, completions, id, **_):
        t0 = time.perf_counter()
        out = [task.grade(by_id[i], c).score for i, c in zip(id, completions)]
        timing["reward"] += time.perf_counter() - t0
        scores.extend(out)
        return out

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(problems) * G, num_generations=G,
        max_completion_length=L, temperature=1.0, beta=0.0, learning_rate=1e-5, max_steps=steps + 2,
        logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, bf16=False, loss_type="dapo",
        disable_tqdm=True, dataloader_num_workers=0, shuffle_dataset=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    gen = trainer._generate

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        out = gen(*a, **k)
        timing["rollout"] += time.perf_counter() - t0
        return out

    trainer._generate = timed_generate
    steps_out: list[dict[str, float]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            timing.update(start=time.perf_counter(), rollout=0.0, reward=0.0)
            scores.clear()

        def on_step_end(self, *_, **__):
            groups = torch.tensor(scores).view(-1, G)  # TRL lays the G completions of a prompt side by side
            steps_out.append(
                {
                    "total": time.perf_counter() - timing["start"],
                    "rollout": timing["rollout"],
                    "reward": timing["reward"],
                    "reward_mean": groups.mean().item(),
                    "no_signal_groups": (groups == groups[:, :1]).all(dim=1).float().mean().item(),
                }
            )

    trainer.add_callback(Clock())
    try:
        trainer.train()
    finally:
        AcceleratorState._reset_state(True)
    return steps_out[2:]


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for k in ("reward_mean", "no_signal_groups"):  # what the batches held: averaged over the timed steps
        med[k] = statistics.mean(r[k] for r in rows)
    med["update"] = med["total"] - med["rollout"] - med["reward"]
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per side and setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--keep-all-rows", action="store_true",
        help="our update also runs the rows without signal (skip_no_signal: false), as TRL's does",
    )  # fmt: skip
    ap.add_argument(
        "--teach", type=int, default=150,
        help="SFT steps on the problems' solutions first, so that rewards are mixed (0: an untrained model, every "
        "reward 0 and no group with signal)",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as root:
        model_dir = tiny_model_dir(Path(root))
        pool = ArithTask().problems("train", 64, seed=1)
        if args.teach:
            taught(model_dir, pool, args.teach)
        for P, G, L in SETTINGS:
            problems = pool[:P]
            a = summary(ours(model_dir, problems, G, L, args.steps, skip=not args.keep_all_rows))
            b = summary(trl(model_dir, problems, G, L, args.steps))
            results.append(
                {"prompts": P, "group": G, "tokens": L, "ours": a, "trl": b, "ratio": a["total"] / b["total"]}
            )
    print(
        f"{'setting':>14} | {'side':>5} | {'step ms':>8} | {'rollout':>8} | {'reward':>7} | {'update':>8} | "
        "mean reward | groups without signal | ratio"
    )
    for r in results:
        for side in ("ours", "trl"):
            m = r[side]
            ratio = f"{r['ratio']:.2f}x" if side == "ours" else ""
            setting = f"{r['prompts']}x{r['group']}x{r['tokens']}"
            print(
                f"{setting:>14} | {side:>5} | {1000 * m['total']:8.1f} | {1000 * m['rollout']:6.1f} "
                f"({100 * m['rollout'] / m['total']:.0f}%) | {1000 * m['reward']:7.2f} | {1000 * m['update']:8.1f} | "
                f"{m['reward_mean']:.2f} | {100 * m['no_signal_groups']:.0f}% | {ratio}"
            )
    out = Path(__file__).parent / "results" / "rl_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
