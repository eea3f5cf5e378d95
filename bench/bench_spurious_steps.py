"""Spurious steps: right answers reached through a wrong step, in training data and in trained models (issue 12).

    python bench/bench_spurious_steps.py --run RUN --models base=nano rft=RFT/model step_dpo=RUN/update/model

A built-in world checks every step (`task.first_error`), so a solution whose
answer is right can still be found to contain a wrong step: positive-only
training (RFT, STaR) imitates those. This reports

- for `--run` (a step-dpo or rft run directory): how many of its sampled
  training solutions with a right answer (what rejection sampling keeps)
  contain a wrong step;
- for each model: on `--n` held-out problems of the run's world (drawn with
  `--seed`), `--k` samples at temperature 1 plus the greedy solution;
  accuracy, and the share of right-answer solutions with a wrong step.

Prints a table and writes `bench/results/spurious_steps.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from reasonloop.core import Sample, grade_sample, load_config, read_jsonl
from reasonloop.core.paths import resolve_model
from reasonloop.engine import HFEngine
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.rft import RftConfig
from reasonloop.recipes.step_dpo import StepDpoConfig


def spurious(task, problems_by_id, samples) -> dict[str, float]:
    """Among right-answer samples: the share containing a wrong step (`task.first_error`)."""
    right = [s for s in samples if s.reward == 1.0]
    flawed = sum(task.first_error(problems_by_id[s.problem_id], list(s.steps)) is not None for s in right)
    return {"samples": len(samples), "right": len(right), "right_with_wrong_step": flawed / max(1, len(right))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a step-dpo or rft run directory (its world and samples)")
    ap.add_argument("--models", nargs="*", default=[], help="LABEL=MODEL (a directory or a built-in name)")
    ap.add_argument("--n", type=int, default=200, help="held-out problems")
    ap.add_argument("--k", type=int, default=8, help="samples per held-out problem at temperature 1")
    ap.add_argument("--seed", type=int, default=12345, help="held-out problems and sampling")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    kind = StepDpoConfig if "update" in cfg else RftConfig
    task, train, _ = draw_problems(load_config(kind, run / "config.yaml"))
    samples = [Sample(**r) for r in read_jsonl(run / "samples" / "samples.jsonl")]
    out: dict = {"args": vars(args), "train_samples": spurious(task, {p.id: p for p in train}, samples), "models": {}}
    max_new = cfg.get("max_new_tokens", 96)
    test = task.problems("test", args.n, seed=args.seed)
    by_id = {p.id: p for p in test}
    for spec in args.models:
        label, _, name = spec.partition("=")
        engine = HFEngine.from_pretrained(resolve_model(name))
        prompts = [p.prompt for p in test]
        sampled = engine.generate(prompts, args.k, temperature=1.0, max_new_tokens=max_new, seed=args.seed)
        greedy = engine.generate(prompts, 1, temperature=0.0, max_new_tokens=max_new)

        def graded(groups):
            return [grade_sample(task.grade, p, s, task.step_delimiter) for p, g in zip(test, groups) for s in g]

        g = graded(greedy)
        s = graded(sampled)
        out["models"][label] = {
            "model": name,
            "greedy_accuracy": sum(x.reward for x in g) / len(g),
            "sampled_accuracy": sum(x.reward for x in s) / len(s),
            "greedy": spurious(task, by_id, g),
            "sampled": spurious(task, by_id, s),
        }
    t = out["train_samples"]
    print(
        f"training samples: {t['right']} right of {t['samples']}; {100 * t['right_with_wrong_step']:.1f}% of "
        "the right ones contain a wrong step"
    )
    print("model | greedy acc | right greedy with a wrong step | sampled acc | right sampled with a wrong step")
    for label, m in out["models"].items():
        print(
            f"{label} | {100 * m['greedy_accuracy']:.1f}% | {100 * m['greedy']['right_with_wrong_step']:.1f}% "
            f"({m['greedy']['right']}) | {100 * m['sampled_accuracy']:.1f}% | "
            f"{100 * m['sampled']['right_with_wrong_step']:.1f}% ({m['sampled']['right']})"
        )
    path = Path(__file__).parent / "results" / "spurious_steps.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
