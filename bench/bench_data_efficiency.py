"""Data efficiency of learning from synthetic problems (issue 12): held-out greedy accuracy against the number of
training problems for SFT on the world's canonical solutions, RFT on self-generated positives, plain DPO and
per-step DPO, from the same base.

    python bench/bench_data_efficiency.py --task arith --sizes 125 250 500 1000 2000 --seeds 0 1 2 --out runs/eff-arith

For each seed and size N (the first N training problems of the seed's stream, so the sets are nested) and the same
held-out problems (`--n-eval`, drawn from the seed):

- `sft`: the base fine-tuned on the canonical solutions of the N problems (the "stronger model" stand-in);
- `rft`: `reasonloop rft` from the base: `--k` samples per problem, the right ones kept (deduplicated);
- `dpo`: `reasonloop step-dpo` with `update.loss=dpo` from the RFT model: its own samples of the same N problems,
  whole right against whole wrong solutions;
- `step_dpo`: the same with `update.loss=step_dpo`: pairs at critical steps from `--mc-k` rollouts per prefix.

The learning rates are arguments because they decide the outcome on small sets (BENCHMARKS, "Spurious steps").
Every stage is a resumable recipe run under `--out`: rerun the same command to continue. Writes
`OUT/results.json`, a table, and `OUT/data_efficiency.png`; the multiplier is, for each size of per-step DPO (and
RFT), the SFT data that reaches the same accuracy, read off the SFT curve (log-linear between sizes; "< smallest"
when SFT on the fewest problems measured already does better, "> largest" when it never gets there).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

from reasonloop.core.paths import resolve_model
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy, save_line_plot
from reasonloop.recipes.common import draw_problems, finetune_and_save
from reasonloop.recipes.rft import RftConfig, run_rft
from reasonloop.recipes.step_dpo import StepDpoConfig, StepDpoUpdateConfig, run_step_dpo

METHODS = ("sft", "rft", "dpo", "step_dpo")


def quiet(*_):
    pass


def run_one(args, seed: int, n: int) -> dict[str, float]:
    out = Path(args.out) / f"s{seed}" / f"n{n}"
    base = str(resolve_model(args.model))
    common = dict(task=args.task, n_train=n, n_eval=args.n_eval, seed=seed, max_new_tokens=args.max_new_tokens)
    acc: dict[str, float] = {}
    # sft on canonical solutions
    rft_cfg = RftConfig(model=base, k=args.k, lr=args.lr_sft, epochs=args.epochs, **common)
    task, train, test = draw_problems(rft_cfg)
    sft_dir = out / "sft"
    done = sft_dir / "accuracy.json"
    if not done.exists():
        pairs = [(p.prompt, p.meta["solution"]) for p in train]
        finetune_and_save(
            Path(base), pairs, sft_dir / "model", sft_dir / "train", epochs=args.epochs, batch_size=32,
            lr=args.lr_sft, seed=seed,
        )  # fmt: skip
        engine = HFEngine.from_pretrained(sft_dir / "model")
        done.write_text(json.dumps({"accuracy": greedy_accuracy(engine, task.grade, test, args.max_new_tokens)}))
    acc["sft"] = json.loads(done.read_text())["accuracy"]
    rft = run_rft(RftConfig(model=base, k=args.k, lr=args.lr_rft, epochs=args.epochs, **common), out / "rft", log=quiet)
    acc["rft"] = rft["accuracy"]
    acc["base"] = rft["base_accuracy"]
    rft_model = str(out / "rft" / "checkpoints" / "final")
    for loss in ("dpo", "step_dpo"):
        update = StepDpoUpdateConfig(loss=loss, lr=args.lr_dpo, epochs=args.dpo_epochs, mc_k=args.mc_k)
        try:
            state = run_step_dpo(
                StepDpoConfig(model=rft_model, k=args.k, update=update, **common), out / loss, log=quiet
            )
            acc[loss] = state["accuracy"]
        except Exception as e:  # nothing to pair at this size: reported, the study goes on
            print(f"seed {seed}, n {n}, {loss}: {e}")
    return acc


def sft_equivalent(sizes: list[int], sft: list[float], target: float) -> str:
    """The SFT data that reaches `target`, log-linear between measured sizes: "N (ratio)", "< smallest" when SFT
    on the fewest problems measured is already above it, "> largest" when SFT never reaches it."""
    if target <= sft[0]:
        return f"< {sizes[0]}" if target < sft[0] else str(sizes[0])
    for (n0, a0), (n1, a1) in zip(zip(sizes, sft), zip(sizes[1:], sft[1:])):
        if a0 < target <= a1:
            f = (target - a0) / (a1 - a0)
            return f"{math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))):.0f}"
    return f"> {sizes[-1]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="arith")
    ap.add_argument("--model", default="nano", help="the base (a directory or a built-in name)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[125, 250, 500, 1000, 2000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--mc-k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--epochs", type=float, default=3.0, help="SFT and RFT passes")
    ap.add_argument("--dpo-epochs", type=float, default=2.0)
    ap.add_argument("--lr-sft", type=float, default=2e-4)
    ap.add_argument("--lr-rft", type=float, default=2e-4)
    ap.add_argument("--lr-dpo", type=float, default=2e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {s: {n: run_one(args, s, n) for n in args.sizes} for s in args.seeds}
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"held-out greedy accuracy on {args.task} (mean over seeds {args.seeds}, min-max):")
    print("| method | " + " | ".join(str(n) for n in args.sizes) + " |")
    curves: dict[str, list[float]] = {}
    for m in ("base", *METHODS):
        cells, means = [], []
        for n in args.sizes:
            vals = [results[s][n][m] for s in args.seeds if m in results[s][n]]
            if not vals:
                cells.append("-")
                means.append(float("nan"))
                continue
            means.append(statistics.mean(vals))
            cells.append(f"{100 * means[-1]:.1f} ({100 * min(vals):.1f}-{100 * max(vals):.1f})")
        curves[m] = means
        print(f"| {m} | " + " | ".join(cells) + " |")
    for m in ("rft", "dpo", "step_dpo"):
        eq = [sft_equivalent(args.sizes, curves["sft"], a) for a in curves[m]]
        print(f"SFT problems matching {m}: " + ", ".join(f"N={n}: {e}" for n, e in zip(args.sizes, eq)))
    save_line_plot(
        out / "data_efficiency.png", args.sizes, {m: [100 * a for a in curves[m]] for m in METHODS},
        xlabel="training problems", ylabel="held-out greedy accuracy (%)",
        title=f"{args.task}: accuracy against training problems (mean of seeds {args.seeds})",
        hlines={"base": 100 * curves["base"][0]},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
