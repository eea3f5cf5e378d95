"""Would process labels keep the self-play verifier's ranking up? (issue 13)

    python bench/bench_verifier_labels.py runs/demo --round 3 --labels outcome first_error illegal

A countdown self-play run's verifier ranks each new generator's samples worse (`bench_verifier_matrix.py`). This
asks whether the labels are what is missing: on the run's round-R union (the verifier's data after round R), a
value verifier is trained from G(R)'s weights (the same passes, lr and batch as the run's verifier) with per-step
targets from one of:

- `outcome`: every step gets the trace's reward (an ORM);
- `first_error`: countdown's checker, 1 before the first wrong step and 0 from it on, where a wrong step is an
  illegal one or a legal one after which the target is unreachable (`CountdownTask.first_error`: the labels a
  perfect Monte-Carlo PRM would give);
- `illegal`: 1 until the first illegal step (a number it does not have, wrong arithmetic, a wrong answer line),
  0 from it on: what checking, not solving, can see.

Each verifier scores every round's held-out samples (`min` over steps for the process labels, `last` for the
outcome) and the table gives the within-problem AUROC on G(1..R)'s. Writes `bench/results/verifier_labels.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from reasonloop.core import load_config, split_steps
from reasonloop.recipes.selfplay import SelfPlay, SelfPlayConfig
from reasonloop.tasks.countdown import CountdownTask
from reasonloop.verifiers import StepExample, ValueVerifierConfig, train_value_verifier
from reasonloop.verifiers.registry import load_verifier, write_manifest

LABELS = ("outcome", "first_error", "illegal")


def step_targets(task: CountdownTask, problem, steps: list[str], reward: float, kind: str) -> list[float]:
    """Per-step targets of one trace under `kind` (the last step always carries the outcome)."""
    final = 1.0 if reward == 1.0 else 0.0
    if kind == "outcome":
        return [final] * len(steps)
    if kind == "first_error":
        bad = task.first_error(problem, steps)
    else:
        bad = next((i for i, ok in enumerate(task.step_labels(problem, steps)) if not ok), None)
    targets = [0.0 if bad is not None and i >= bad else 1.0 for i in range(len(steps))]
    targets[-1] = min(targets[-1], final)
    return targets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a countdown self-play run directory")
    ap.add_argument("--round", type=int, default=None, help="the union and generator to train from (default: last)")
    ap.add_argument("--labels", nargs="+", choices=LABELS, default=list(LABELS))
    ap.add_argument("--out", default=None, help="where the verifiers go (default: RUN/bench-labels)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = load_config(SelfPlayConfig, run / "config.yaml")
    R = args.round or cfg.rounds
    sp = SelfPlay(cfg, run, log=lambda *a: None)
    if not isinstance(sp.task, CountdownTask):
        raise SystemExit(f"{run}: not a countdown run")
    by_id = {p.id: p for p in sp.train}
    union = [s for s in sp.union(R) if s.problem_id in by_id and s.reward is not None]
    out_root = Path(args.out) if args.out else run / "bench-labels"
    vcfg = ValueVerifierConfig(epochs=cfg.verifier_epochs, batch_size=32, lr=cfg.verifier_lr, seed=cfg.seed + R)
    results = {}
    print(f"| labels (round {R}'s union, {len(union)} traces, from G({R})) | " + " | ".join(
        f"on G({j})'s samples" for j in range(1, R + 1)) + " | train s |")  # fmt: skip
    for kind in args.labels:
        examples = []
        for s in union:
            steps = split_steps(s.text, sp.task.step_delimiter)
            if steps:
                targets = step_targets(sp.task, by_id[s.problem_id], steps, s.reward, kind)
                examples.append(StepExample(by_id[s.problem_id].prompt, steps, targets))
        out, t0 = out_root / kind, time.time()
        if not (out / "reasonloop_verifier.json").exists():
            train_value_verifier(sp.generator_dir(R), examples, out, vcfg, sp.task.step_delimiter)
            write_manifest(out, kind="value", model="verifier", aggregate="last" if kind == "outcome" else "min")
        verifier = load_verifier(out)
        row = [round(sp.auroc_within_on(verifier, j), 3) for j in range(1, R + 1)]
        results[kind] = {"auroc_within": row, "train_s": round(time.time() - t0)}
        print(f"| {kind} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {results[kind]['train_s']} |", flush=True)
    path = Path(__file__).parent / "results" / "verifier_labels.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"run": str(run), "round": R, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
