"""The demo: self-play between the nano generator and its verifier on the `countdown` world, on a laptop CPU.

    reasonloop demo                    # or: run_demo("runs/demo")

1. build the demo's base if it is not there yet: the nano model trained on countdown (3 numbers from 1-9, targets
   up to 100; `DEMO_BASE`), in `$REASONLOOP_HOME/nano-countdown`;
2. three self-play rounds (`reasonloop selfplay` with `DEMO_DEFAULTS`): best-of-32 search on the training problems,
   expert iteration on the verified traces (in sampling order), a Bradley-Terry verifier trained on the union of
   every round's graded traces, the new generator's own samples offered first, continuing from the previous
   round's verifier, with a step checker beside it (the base fine-tuned once on the world's facts, which
   re-derives each step's `a op b=c` in isolation: the false landing step `14*7=35` that the generator learns
   to write and the learned verifier misses);
3. on held-out problems after every round: greedy accuracy, majority vote and verifier best-of-n for n = 1..16,
   the verifier's AUROC within a problem;
4. `report.md` with the per-round table and plots for both players.

Countdown is the world where checking a solution is easier than finding one: a verifier reads whether the
expressions use the given numbers and reach the target, while the generator has to search for them (BENCHMARKS.md:
within-problem AUROC 0.90-0.96 there, against chance on `arith`, where checking means redoing the arithmetic the
model gets wrong). The earlier demo, V-STaR on `arith`, is `examples/vstar/arith.yaml`.

Every part resumes when the command is run again (the base is built once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonloop.core import load_config
from reasonloop.models import resolve_model
from reasonloop.recipes.common import BarFactory, no_bar
from reasonloop.recipes.selfplay import SelfPlayConfig, run_selfplay

DEMO_TASK = "countdown:n_numbers=3,number_max=9,target_max=100"
DEMO_MODEL = "nano-countdown"
# the demo base: `reasonloop init --out $REASONLOOP_HOME/nano-countdown` with these keys (about 2 minutes)
DEMO_BASE: dict[str, Any] = {"task": DEMO_TASK, "n_seed_solutions": 800, "steps": 1500}
DEMO_DEFAULTS: dict[str, Any] = {
    "model": DEMO_MODEL,
    "task": DEMO_TASK,
    "n_train": 1500,
    "n_eval": 200,
    "rounds": 3,
    "search": "best_of_n",
    "budget": 32,
    "keep_per_problem": 4,
    "keep_order": "sampled",
    "epochs": 3.0,
    "lr": 2e-3,
    "verifier": "bt",
    "verifier_init": "previous",
    "verifier_fresh": 4,
    "verifier_per_problem": 8,
    "verifier_epochs": 2.0,
    "verifier_check": True,
    "best_of": 16,
    "max_new_tokens": 48,
}


def demo_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SelfPlayConfig:
    """The demo's self-play config: `DEMO_DEFAULTS`, then a YAML file, then `key=value` overrides."""
    return load_config(SelfPlayConfig, path, overrides, defaults=DEMO_DEFAULTS)


def build_demo_base(log=print) -> Path:
    """The demo's countdown base, built once in `$REASONLOOP_HOME/nano-countdown`."""
    from reasonloop.recipes.nano import NanoConfig, train_nano

    base = resolve_model(DEMO_MODEL)
    if not (base / "config.json").exists():
        log(f"building the demo's countdown base at {base} (once; about 2 minutes)")
        train_nano(base, NanoConfig(**DEMO_BASE))
    return base


def run_demo(
    run_dir: str | Path, cfg: SelfPlayConfig | None = None, bar: BarFactory = no_bar, log=print
) -> dict[str, Any]:
    """Build the demo base if it is named and missing, then play the self-play rounds; returns `run_selfplay`'s."""
    cfg = cfg or demo_config()
    if cfg.model == DEMO_MODEL:
        build_demo_base(log)
    return run_selfplay(cfg, run_dir, bar=bar, log=log)
