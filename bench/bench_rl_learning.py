"""Held-out accuracy against sampled tokens: GRPO, RLOO, PPO and STaR from the same nano base and problem pool.

    python bench/bench_rl_learning.py                          # 3 seeds x 4 methods (hours on 2 cores)
    python bench/bench_rl_learning.py --seeds 0 --methods grpo --threads 2
    # on 2 cores, two halves side by side (1 thread each), then once more to plot (every run is then done):
    python bench/bench_rl_learning.py --methods grpo,rloo --threads 1 & python bench/bench_rl_learning.py --methods ppo,star --threads 1
    python bench/bench_rl_learning.py

Each (method, seed) is a resumable run directory under `--out` (rerun the same
command to continue after a kill). The RL runs use `examples/rl/grpo_arith.yaml`
with `algorithm` set (PPO: a shared critic); STaR uses the demo's settings.
Sampled tokens count every token the method's generator wrote for training
(RL: each step's rollouts; STaR: every rationale sampled, hinted ones
included), not held-out evaluation. Writes `summary-<methods>.json` in `--out` and, with all four methods, the
figure `docs/figures/rl_arith_accuracy_vs_tokens.png` (mean over seeds, the
spread from min to max shaded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reasonloop.core import load_config, read_jsonl
from reasonloop.recipes import RLConfig, StarConfig, run_rl, run_star

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "rl" / "grpo_arith.yaml"
STAR = {"n_train": 1000, "n_eval": 200, "rounds": 5, "patience": 5, "samples": 4, "epochs": 4.0, "lr": 2e-3,
        "continue_training": True}  # fmt: skip
RL_OVERRIDES = {"grpo": [], "rloo": ["algorithm=rloo"], "ppo": ["algorithm=ppo", "critic.shared=true"]}


def run_method(method: str, seed: int, out: Path) -> list[tuple[int, float, float]]:
    """(tokens sampled, held-out greedy accuracy, seconds) after each evaluation of one run."""
    run_dir = out / f"{method}-s{seed}"
    if method == "star":
        t0 = time.perf_counter()
        cfg = load_config(StarConfig, None, [f"seed={seed}"], defaults=STAR)
        res = run_star(cfg, run_dir, log=lambda *_: None)
        points, tokens = [(0, res["base_accuracy"], 0.0)], 0
        for r in res["rounds"]:
            for name in (f"round{r['round']}-plain", f"round{r['round']}-hint"):
                path = run_dir / "samples" / f"{name}.jsonl"
                tokens += sum(len(s["token_ids"]) for s in read_jsonl(path)) if path.exists() else 0
            points.append((tokens, r["held_out_accuracy"], time.perf_counter() - t0))
        return points
    cfg = load_config(RLConfig, CONFIG, [*RL_OVERRIDES[method], f"seed={seed}"])
    res = run_rl(cfg, run_dir, log=lambda *_: None)
    return [
        (r["tokens_sampled"], r["held_out_accuracy"], r["seconds"]) for r in res["records"] if "held_out_accuracy" in r
    ]


def plot(summary: dict[str, dict[int, list]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, by_seed in summary.items():
        runs = [np.array(v, dtype=float) for v in by_seed.values()]
        top = min(r[-1, 0] for r in runs)
        grid = np.linspace(0, top, 40)
        ys = np.stack([np.interp(grid, r[:, 0], 100 * r[:, 1]) for r in runs])
        ax.plot(grid, ys.mean(0), label=f"{method} ({len(runs)} seeds)")
        ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2)
    ax.set_xlabel("tokens sampled for training")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title("arith, nano base: RL vs STaR")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="grpo,rloo,ppo,star")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rl_learning"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no bar per checkpoint save
    out = Path(args.out)
    summary: dict[str, dict[int, list]] = {}
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            points = run_method(method, seed, out)
            summary.setdefault(method, {})[seed] = points
            first, last = points[0], points[-1]
            print(
                f"{method} seed {seed}: {100 * first[1]:.1f}% -> {100 * last[1]:.1f}% after {last[0]:,} tokens, {last[2]:.0f} s"
            )
    (out / f"summary-{'-'.join(summary)}.json").write_text(json.dumps(summary, indent=1))
    plot(
        summary, ROOT / "docs" / "figures" / f"rl_arith_accuracy_vs_tokens{'' if len(summary) == 4 else '-partial'}.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
