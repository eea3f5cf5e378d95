"""Graded completions per second for the gsm8k, math and python graders, in-process and with 1 and 2 workers.

    python bench/bench_graders.py [--python-items 120]

Completions are real reference solutions: the GSM8K test set (1,319) and
MATH-500 (500) from ../shared/data, graded against their own answers. The python
grader runs a small program plus its tests per item in the sandbox (a fresh
process, namespaces and uid each), half of them wrong. Times include starting
the worker processes, as a `reasonloop grade` user would see. Prints a Markdown
table and writes bench/results/graders.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from reasonloop.core import Problem
from reasonloop.graders import grade_batch, grader_from_config
from reasonloop.tasks import JsonlTask

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gsm8k_items() -> tuple[dict, list[Problem], list[str]]:
    problems = JsonlTask(DATA / "gsm8k" / "test.jsonl", "gsm8k").problems()
    return {"type": "gsm8k"}, problems, [p.meta["solution"] for p in problems]


def math_items() -> tuple[dict, list[Problem], list[str]]:
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    return (
        {"type": "math"},
        [Problem(r["unique_id"], r["problem"], r["answer"]) for r in rows],
        [r["solution"] for r in rows],
    )


def python_items(n: int) -> tuple[dict, list[Problem], list[str]]:
    problems, completions = [], []
    for i in range(n):
        tests = f"assert add_k({i}) == {i + 7}\nassert add_k(-{i}) == {7 - i}"
        problems.append(Problem(f"py{i}", "Write add_k(x) returning x + 7.", "", meta={"tests": tests}))
        body = "x + 7" if i % 2 == 0 else "x + 6"
        completions.append(f"```python\ndef add_k(x):\n    return {body}\n```")
    return {"type": "python", "tests": "{{item.tests}}", "timeout_s": 5}, problems, completions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-items", type=int, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    suites = {"gsm8k": gsm8k_items(), "math": math_items(), "python": python_items(args.python_items)}
    rows = []
    for name, (config, problems, completions) in suites.items():
        grader = grader_from_config(config)
        for workers in args.workers:
            t0 = time.perf_counter()
            res = grade_batch(grader, problems, completions, workers=workers, chunk_size=16 if name != "python" else 4)
            wall = time.perf_counter() - t0
            rows.append(
                {
                    "grader": name,
                    "workers": workers,
                    "items": len(problems),
                    "seconds": round(wall, 3),
                    "samples_per_s": round(len(problems) / wall, 1),
                    "mean_score": round(res.mean_score, 4),
                    "errors": res.errors,
                }
            )
            print(f"{name:7s} workers={workers}: {rows[-1]['samples_per_s']:8.1f} samples/s", flush=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "graders.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(
        f"\nGraded completions per second ({machine['cpus']} CPUs; workers=0 grades in-process; times include worker start-up)\n"
    )
    print("| grader | items | workers | samples/s | seconds | mean score |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['grader']} | {r['items']} | {r['workers']} | {r['samples_per_s']:.1f} | {r['seconds']:.2f} | {r['mean_score']:.3f} |"
        )


if __name__ == "__main__":
    main()
