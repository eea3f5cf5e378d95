"""The demo: the whole story on the built-in nano model and `arith` world, on a laptop CPU.

    reasonloop demo                    # or: run_demo("runs/demo")

1. build the nano base if it is not there yet (what `reasonloop init` does);
2. STaR, continuing from each round's model, for up to `rounds` rounds;
3. the V-STaR verifier: DPO on every round's (correct, incorrect) pairs;
4. on held-out problems: greedy accuracy, majority vote over n samples and
   verifier best-of-n, for n = 1..16;
5. `report.md` with the per-round table and two plots (accuracy per round,
   accuracy versus n).

It is `reasonloop vstar` with the settings below (`DEMO_DEFAULTS`), so every part
resumes when the command is run again. About 5 minutes on 2 cores, base model
included, under 1 GiB of memory (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasonloop.core import load_config
from reasonloop.recipes.common import BarFactory, no_bar
from reasonloop.recipes.vstar import VStarConfig, run_vstar

DEMO_DEFAULTS: dict[str, Any] = {
    "model": "nano",
    "task": "arith",
    "n_train": 1000,
    "n_eval": 200,
    "rounds": 5,
    "patience": 2,
    "samples": 4,
    "epochs": 4.0,
    "lr": 2e-3,
    "continue_training": True,
    "best_of": 16,
}


def demo_config(path: str | Path | None = None, overrides: list[str] | None = None) -> VStarConfig:
    """The demo's V-STaR config: `DEMO_DEFAULTS`, then a YAML file, then `key=value` overrides."""
    return load_config(VStarConfig, path, overrides, defaults=DEMO_DEFAULTS)


def run_demo(
    run_dir: str | Path, cfg: VStarConfig | None = None, bar: BarFactory = no_bar, log=print
) -> dict[str, Any]:
    """Build the nano base if needed, then run V-STaR; returns `run_vstar`'s result."""
    from reasonloop.models import resolve_model
    from reasonloop.recipes.nano import train_nano

    cfg = cfg or demo_config()
    base = resolve_model(cfg.model)
    if cfg.model == "nano" and not (base / "config.json").exists():
        log(f"building the nano base model at {base} (once; about 2 minutes)")
        train_nano(base)
    return run_vstar(cfg, run_dir, bar=bar, log=log)
