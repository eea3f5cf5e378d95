"""Quiet-STaR on the nano model and `arith` (issue 14): thought speed, held-out NLL against a no-thought baseline,
greedy accuracy with and without thoughts.

    reasonloop init                                              # the nano base, if $REASONLOOP_HOME has none
    python bench/bench_quiet_star.py --threads 1                 # all three parts, ~15 min on one busy core
    python bench/bench_quiet_star.py --parts speed --threads 1

(a) speed: one batch of held-out arith documents; a thought of `--n-ahead` tokens after every position, greedy, made
    all at once (`QuietStarModel.sample_thoughts`, the diagonal mask) and position by position
    (`sample_thoughts_sequential`, the reference's way); thought tokens per second of each, one run, same thoughts.
(b) nll: three resumable runs of `reasonloop quiet-star` from the same base, seed, data and schedule: with thoughts,
    without (`thoughts=false`, the baseline), and with thoughts and the reference's unbounded mixing weight
    (`clamp_weight=false`); the held-out NLL per true token at the start and the end, with and without thoughts,
    over all tokens and over the hard ones (results of arithmetic steps and the answer).
(c) accuracy: held-out greedy accuracy on `--n-problems` arith test problems of the thought-trained models with
    thoughts and without, and of the baseline, through `QuietStarEngine`; the compute multiplier is the tokens the
    model wrote (thoughts included) per visible token, and the wall-time ratio.

Prints a markdown summary and writes `summary.json` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reasonloop.core import load_config, mean_score, set_threads
from reasonloop.engine.quiet_star import QuietStarEngine
from reasonloop.models import resolve_model
from reasonloop.models.quiet_star import QuietStarModel
from reasonloop.recipes.quiet_star import QuietStarConfig, documents, encode_documents, run_quiet_star
from reasonloop.tasks import get_task

TRAIN = ["steps=200", "lr=3e-4", "eval_every=50", "seed=0"]  # the rest: QuietStarConfig's defaults
RUNS = {  # name: (run directory, extra keys)
    "thoughts": ("thoughts-true", ["thoughts=true"]),
    "baseline": ("thoughts-false", ["thoughts=false"]),
    "unclamped": ("unclamped", ["thoughts=true", "clamp_weight=false"]),
}


def speed(model_spec: str, n_ahead: int, n_docs: int) -> dict:
    model = QuietStarModel.from_pretrained(resolve_model(model_spec))
    _, held = documents(QuietStarConfig(n_eval=n_docs))
    ids, mask, _ = encode_documents(model.tokenizer, held, 128)
    out = {"rows": ids.shape[0], "positions": ids.shape[1], "n_ahead": n_ahead}
    thoughts = {}
    for name, fn in (("parallel", model.sample_thoughts), ("sequential", model.sample_thoughts_sequential)):
        t0 = time.perf_counter()
        thoughts[name] = fn(ids, n_ahead, temperature=0.0)
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "thought_tokens_per_s": ids.numel() * n_ahead / seconds}
    out["same_thoughts"] = bool(torch.equal(thoughts["parallel"], thoughts["sequential"]))
    out["speedup"] = out["sequential"]["seconds"] / out["parallel"]["seconds"]
    return out


def nll(out: Path) -> dict:
    res = {}
    for name, (run_dir, keys) in RUNS.items():
        r = run_quiet_star(load_config(QuietStarConfig, None, [*TRAIN, *keys]), out / run_dir, log=print)
        res[name] = {"start": r["start"], "final": r["final"], "seconds": r["seconds"]}
    return res


def accuracy(out: Path, n_ahead: int, n_problems: int) -> dict:
    task = get_task("arith")
    problems = task.problems("test", n_problems, seed=0)
    res = {}
    runs = [("thoughts", "thoughts-true", n_ahead), ("thoughts, read without", "thoughts-true", 0)]
    runs += [("unclamped", "unclamped", n_ahead), ("unclamped, read without", "unclamped", 0)]
    runs += [("baseline", "thoughts-false", 0)]
    for name, run, n in runs:
        engine = QuietStarEngine.from_pretrained(out / run / "checkpoints" / "final", n_ahead=n)
        t0 = time.perf_counter()
        samples = [s[0] for s in engine.generate([p.prompt for p in problems], 1, temperature=0.0,
                                                 max_new_tokens=task.max_solution_tokens)]  # fmt: skip
        seconds = time.perf_counter() - t0
        visible = sum(len(s.token_ids) for s in samples)
        res[name] = {
            "accuracy": mean_score(task.grade, problems, [s.text for s in samples]),
            "seconds": seconds,
            "visible_tokens": visible,
            "tokens_written_per_visible_token": engine.counts.generated / visible,
        }
    res["wall_time_ratio"] = res["thoughts"]["seconds"] / res["thoughts, read without"]["seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-quiet-star"))
    ap.add_argument("--parts", default="speed,nll,accuracy")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--n-ahead", type=int, default=4)  # the recipe's default
    ap.add_argument("--speed-docs", type=int, default=16)
    ap.add_argument("--n-problems", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    parts = args.parts.split(",")
    if "speed" in parts:
        summary["speed"] = speed(args.model, args.n_ahead, args.speed_docs)
    if "nll" in parts:
        summary["nll"] = nll(args.out)
    if "accuracy" in parts:
        summary["accuracy"] = accuracy(args.out, args.n_ahead, args.n_problems)
    summary_path.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
