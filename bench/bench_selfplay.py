"""Self-play against STaR at equal tokens, and whether the verifier needs its memory (union against frozen).

    python bench/bench_selfplay.py --out runs/bench-selfplay                     # every arm, seeds 0,1,2
    # on 2 cores, two processes side by side (1 thread each), then once more to summarise:
    python bench/bench_selfplay.py --arms selfplay,frozen & python bench/bench_selfplay.py --arms star
    python bench/bench_selfplay.py

From the demo's countdown base (`reasonloop demo` builds it; `--base` to name another), each (arm, seed) is a
resumable run directory under `--out`:

- `selfplay`: `reasonloop demo`'s rounds (`DEMO_DEFAULTS`, the seed changed): best-of-N sampling on the
  training problems, expert iteration on the verified traces, the verifier retrained on the union of every
  round's traces;
- `frozen`: the same, with the verifier trained in round 1 only (`verifier_memory=frozen`);
- `star`: STaR rounds from the same base with no search and no verifier (`reasonloop star`: `--star-samples`
  rationales per training problem, rationalisation with the answer as a hint for the failures, the same
  problems, epochs, learning rate, traces kept per problem and continued training as the self-play runs).

Tokens on the x axis are training-side: every token the generator sampled (search, rationalisation, self-play's
fresh samples for the verifier) and every token the verifier read while scoring search traces (none with the
demo's defaults, whose traces are kept in sampling order). Each round's generator of every arm is
measured the same way (`reasonloop.eval.evaluate` on the run's held-out problems: greedy, and pass@16 from 16
samples), cached in the run directory.

Writes `summary.json` in `--out`, `docs/figures/selfplay_vs_star.png` (greedy and pass@16 against tokens, mean
over seeds with min-max shaded) and `docs/figures/selfplay_verifier_memory.png` (the verifier's within-problem
AUROC on the current generator's held-out samples per round, union against frozen).
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
from reasonloop.recipes import StarConfig, run_selfplay, run_star
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.demo import DEMO_DEFAULTS, build_demo_base, demo_config

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("selfplay", "frozen", "star")


def measure(model: Path, cfg, cache: Path) -> dict:
    """Greedy and pass@k (k <= 16) of one generator on the run's held-out problems, cached."""
    if cache.exists():
        return json.loads(cache.read_text())
    task, _, test = draw_problems(cfg)
    engine = HFEngine.from_pretrained(model, max_batch=256)
    res = evaluate(engine, task, test, EvalConfig(n=16, max_new_tokens=cfg.max_new_tokens, seed=0))
    out = {k: v for k, v in res.items() if k == "greedy_accuracy" or k.startswith("pass@")}
    cache.write_text(json.dumps(out))
    return out


def run_selfplay_arm(arm: str, seed: int, args: argparse.Namespace) -> dict:
    sets = [f"model={args.base}", f"seed={seed}"] + (["verifier_memory=frozen"] if arm == "frozen" else [])
    cfg = demo_config(None, sets)
    run_dir = Path(args.out) / f"{arm}-s{seed}"
    res = run_selfplay(cfg, run_dir, log=lambda *_: None)
    points, tokens = [], 0
    for rec in res["records"]:
        r = rec["round"]
        tokens += sum(
            rec.get(k, 0) for k in ("tokens_search_generator", "tokens_search_verifier", "tokens_mc", "tokens_fresh")
        )
        model = Path(args.base) if r == 0 else run_dir / "checkpoints" / f"round{r}"
        m = measure(model, cfg, run_dir / f"measure_round{r}.json")
        points.append([r, tokens, m["greedy_accuracy"], m["pass@16"]])
    aurocs = [rec.get("auroc_within") for rec in res["records"][1:]]
    return {"points": points, "auroc_within": aurocs}


def run_star_arm(seed: int, args: argparse.Namespace) -> dict:
    d = DEMO_DEFAULTS
    cfg = load_config(StarConfig, None, [
        f"model={args.base}", f"task={d['task']}", f"n_train={d['n_train']}", f"n_eval={d['n_eval']}",
        f"rounds={args.star_rounds}", f"patience={args.star_rounds}", f"samples={args.star_samples}",
        f"keep_per_problem={d['keep_per_problem']}", "continue_training=true", f"epochs={d['epochs']}", f"lr={d['lr']}",
        f"max_new_tokens={d['max_new_tokens']}", f"seed={seed}",
    ])  # fmt: skip
    run_dir = Path(args.out) / f"star-s{seed}"
    res = run_star(cfg, run_dir, log=lambda *_: None)
    points, tokens = [], 0
    for r in range(0, len(res["rounds"]) + 1):
        for part in ("plain", "hint"):
            path = run_dir / "samples" / f"round{r}-{part}.jsonl"
            if r and path.exists():
                tokens += sum(len(json.loads(line).get("token_ids") or []) for line in path.open())
        model = Path(args.base) if r == 0 else run_dir / "checkpoints" / f"round{r}"
        m = measure(model, cfg, run_dir / f"measure_round{r}.json")
        points.append([r, tokens, m["greedy_accuracy"], m["pass@16"]])
    return {"points": points}


def curves(runs: list[list], col: int, grid: np.ndarray) -> np.ndarray:
    """Column `col` (as %) of each run interpolated on `grid` of tokens: (runs, len(grid))."""
    return np.stack([np.interp(grid, np.array(r)[:, 1], 100 * np.array(r)[:, col]) for r in runs])


def plot_tokens(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, col, label in ((axes[0], 2, "held-out greedy accuracy (%)"), (axes[1], 3, "held-out pass@16 (%)")):
        for arm, by_seed in summary.items():
            runs = [v["points"] for v in by_seed.values()]
            grid = np.linspace(0, min(r[-1][1] for r in runs), 60)
            ys = curves(runs, col, grid)
            ax.plot(grid / 1e6, ys.mean(0), marker=None, label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(grid / 1e6, ys.min(0), ys.max(0), alpha=0.2)
        ax.set_xlabel("training tokens, generator + verifier (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("countdown, the demo's base: self-play rounds against STaR rounds at equal tokens")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_memory(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for arm in ("selfplay", "frozen"):
        ys = np.array([v["auroc_within"] for v in summary.get(arm, {}).values()], dtype=float)
        if ys.size == 0:
            continue
        xs = np.arange(1, ys.shape[1] + 1)
        name = "retrained on the union" if arm == "selfplay" else "frozen after round 1"
        ax.plot(xs, ys.mean(0), marker="o", label=f"{name} ({len(ys)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel("AUROC within a problem")
    ax.set_xticks(range(1, int(DEMO_DEFAULTS["rounds"]) + 1))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("the verifier on the current generator's samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="", help="the generator to start from (default: the demo's countdown base)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--star-samples", type=int, default=4, help="STaR: rationales sampled per problem per round")
    ap.add_argument("--star-rounds", type=int, default=22, help="STaR: rounds (22 reach the self-play tokens)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-selfplay"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args.base = args.base or str(build_demo_base())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[int, dict]] = {}
    for arm in args.arms.split(","):
        if arm not in ARMS:
            raise SystemExit(f"--arms: unknown arm {arm!r}; expected some of {', '.join(ARMS)}")
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_star_arm(seed, args) if arm == "star" else run_selfplay_arm(arm, seed, args)
            summary.setdefault(arm, {})[seed] = r
            first, last = r["points"][0], r["points"][-1]
            print(f"{arm} seed {seed}: greedy {100 * first[2]:.1f}% -> {100 * last[2]:.1f}%, pass@16 "
                  f"{100 * first[3]:.1f}% -> {100 * last[3]:.1f}% after {last[1]:,} tokens"
                  + (f"; AUROC within {r['auroc_within']}" if "auroc_within" in r else ""))  # fmt: skip
    (Path(args.out) / f"summary-{args.arms.replace(',', '-')}.json").write_text(json.dumps(summary, indent=1))
    if args.arms == ",".join(ARMS):
        plot_tokens({a: summary[a] for a in ("selfplay", "star")}, ROOT / "docs" / "figures" / "selfplay_vs_star.png")
        plot_memory(summary, ROOT / "docs" / "figures" / "selfplay_verifier_memory.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
