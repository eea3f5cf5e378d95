"""Dense process rewards on countdown: outcome-only GRPO against GRPO with PAV and with PRM step rewards.

    python bench/bench_rl_dense.py --base runs/nano-countdown --verifiers runs/verifiers-countdown
    # on 2 cores, two processes side by side (1 thread each), then once more to summarise:
    python bench/bench_rl_dense.py ... --methods outcome,pav & python bench/bench_rl_dense.py ... --methods prm
    python bench/bench_rl_dense.py ...

The base and the verifiers come from (BENCHMARKS.md gives the exact commands):
`reasonloop init --set task=countdown:n_numbers=3,number_max=9,target_max=100 ...` and
`reasonloop verifiers --set kinds=orm,prm,pav --set n_train=1200 --set mc_all=true ...`.
Every run uses `examples/rl/grpo_countdown.yaml` (the same steps, batch, learning rate
and seed for each method); the dense runs add `reward.process` with the same
`alpha`, with the verifier frozen. Each (method, seed) is a resumable run
directory under `--out`. After training, every final policy (and the base) gets
pass@k for k up to 16 and greedy accuracy on its run's held-out problems.

Writes `summary.json` in `--out`, and `docs/figures/rl_dense_countdown_alpha<alpha>.png`
(held-out accuracy against samples drawn and against tokens, generator plus
verifier; mean over seeds, min-max shaded). The sample-efficiency ratio is
computed on the seed-mean curves: the samples outcome-only GRPO needs to first
reach its final accuracy, divided by the samples the dense run needs to reach
the same accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from reasonloop.core import load_config
from reasonloop.engine import HFEngine
from reasonloop.eval import EvalConfig, evaluate
from reasonloop.recipes import RLConfig, run_rl
from reasonloop.recipes.common import draw_problems

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "rl" / "grpo_countdown.yaml"
METHODS = ("outcome", "pav", "prm")


def config(method: str, seed: int, base: str, verifiers: str, alpha: float) -> RLConfig:
    sets = [f"model={base}", f"seed={seed}"]
    if method != "outcome":
        sets += [f"reward.process={method}", f"reward.verifier={Path(verifiers) / method}", f"reward.alpha={alpha}"]
    return load_config(RLConfig, CONFIG, sets)


def run_method(method: str, seed: int, args: argparse.Namespace) -> dict:
    """The run's evaluation points and pass@k of its final policy (cached in the run directory)."""
    cfg = config(method, seed, args.base, args.verifiers, args.alpha)
    run_dir = Path(args.out) / f"{method}-s{seed}"
    res = run_rl(cfg, run_dir, log=lambda *_: None)
    points = [
        (r["step"] * cfg.rows, r["tokens_sampled"] + r.get("tokens_verifier", 0), r["held_out_accuracy"], r["seconds"])
        for r in res["records"]
        if "held_out_accuracy" in r
    ]
    return {"points": points, "pass": pass_at_k(res["model"], cfg, run_dir / "pass_at_k.json")}


def pass_at_k(model: Path | str, cfg: RLConfig, cache: Path) -> dict:
    if cache.exists():
        return json.loads(cache.read_text())
    task, _, test = draw_problems(cfg)
    engine = HFEngine.from_pretrained(model, max_batch=256)
    res = evaluate(engine, task, test, EvalConfig(n=16, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed))
    out = {k: v for k, v in res.items() if k == "greedy_accuracy" or k.startswith(("pass@", "maj@"))}
    cache.write_text(json.dumps(out))
    return out


def mean_curve(runs: list[list], x: int, grid: np.ndarray) -> np.ndarray:
    """Held-out accuracy (%) of each run interpolated on `grid` along column `x`: (runs, len(grid))."""
    return np.stack([np.interp(grid, np.array(r)[:, x], 100 * np.array(r)[:, 2]) for r in runs])


def efficiency(outcome: list[list], dense: list[list]) -> dict:
    """Samples outcome-only needs to reach its final (seed-mean) accuracy over samples the dense run needs."""
    grid = np.array([p[0] for p in outcome[0]], dtype=float)
    out_mean = mean_curve(outcome, 0, grid).mean(0)
    dense_mean = mean_curve(dense, 0, grid).mean(0)
    target = out_mean[-1]
    n_out = grid[np.argmax(out_mean >= target - 1e-9)]
    reached = dense_mean >= target - 1e-9
    n_dense = grid[np.argmax(reached)] if reached.any() else None
    return {
        "target_accuracy": target,
        "outcome_samples": float(n_out),
        "dense_samples": None if n_dense is None else float(n_dense),
        "ratio": None if not n_dense else float(n_out / n_dense),
        "dense_final_accuracy": float(dense_mean[-1]),
    }


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, x, label in ((axes[0], 0, "samples drawn"), (axes[1], 1, "tokens (generator + verifier)")):
        for method, by_seed in summary.items():
            runs = [v["points"] for v in by_seed.values()]
            grid = np.linspace(0, min(r[-1][x] for r in runs), 40)
            ys = mean_curve(runs, x, grid)
            ax.plot(grid, ys.mean(0), label=f"{method} ({len(runs)} seeds)")
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out greedy accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("countdown, nano base: GRPO with outcome, PAV and PRM rewards")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the countdown nano base (reasonloop init)")
    ap.add_argument("--verifiers", required=True, help="a `reasonloop verifiers` run with prm/ and pav/")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--alpha", type=float, default=1.0, help="weight of the step rewards (the same for PAV and PRM)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rl_dense"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[int, dict]] = {}
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_method(method, seed, args)
            summary.setdefault(method, {})[seed] = r
            first, last = r["points"][0], r["points"][-1]
            print(f"{method} seed {seed}: {100 * first[2]:.1f}% -> {100 * last[2]:.1f}% after {last[0]:,} samples "
                  f"({last[1]:,} tokens, {last[3]:.0f} s); pass@16 {100 * r['pass']['pass@16']:.1f}%")  # fmt: skip
    base_cfg = config("outcome", 0, args.base, args.verifiers, args.alpha)
    result = {"runs": summary, "base": pass_at_k(args.base, base_cfg, out / "base_pass_at_k.json")}
    if set(summary) == set(METHODS):
        outcome = [v["points"] for v in summary["outcome"].values()]
        result["efficiency"] = {
            m: efficiency(outcome, [v["points"] for v in summary[m].values()]) for m in ("pav", "prm")
        }
        for m, e in result["efficiency"].items():
            print(f"{m}: outcome-only reaches {e['target_accuracy']:.1f}% after {e['outcome_samples']:,.0f} samples; "
                  f"{m} after {e['dense_samples']} samples (ratio {e['ratio']})")  # fmt: skip
        plot(summary, ROOT / "docs" / "figures" / f"rl_dense_countdown_alpha{args.alpha:g}.png")
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
