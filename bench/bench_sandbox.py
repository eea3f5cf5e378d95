"""Seconds per python-grader grade under each sandbox isolation (bubblewrap, our namespaces, weak).

    python bench/bench_sandbox.py [--items 40] [--isolation bwrap namespaces weak] [--results DIR]

Each item is a small program plus its tests (half of them wrong), graded in this
process one after another, so the figure is the sandbox's own start-up and
teardown plus one Python interpreter. Run it as root and as an ordinary user to
compare. Prints a Markdown table and writes bench/results/sandbox-<user>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

from reasonloop.core import Problem
from reasonloop.graders.python_grader import PythonConfig, python_grade
from reasonloop.graders.sandbox import resolve_isolation

RESULTS = Path(__file__).parent / "results"


def items(n: int) -> list[tuple[Problem, str]]:
    out = []
    for i in range(n):
        body = "x + 7" if i % 2 == 0 else "x + 6"
        out.append((Problem(f"py{i}", "Write add_k(x).", ""), f"```python\ndef add_k(x):\n    return {body}\n```"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--isolation", nargs="+", default=["bwrap", "namespaces", "weak"])
    ap.add_argument("--results", type=Path, default=RESULTS, help="where sandbox-<user>.json goes")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # weak isolation warns once
    who = "root" if os.geteuid() == 0 else "user"
    rows = []
    for isolation in args.isolation:
        resolve_isolation(isolation)  # probe outside the timing
        cfg = PythonConfig(tests="assert add_k(1) == 8\nassert add_k(-3) == 4", isolation=isolation)
        times, scores = [], []
        for problem, completion in items(args.items):
            t0 = time.perf_counter()
            scores.append(python_grade(cfg, problem, completion).score)
            times.append(time.perf_counter() - t0)
        assert scores == [1.0, 0.0] * (args.items // 2) + [1.0] * (args.items % 2), scores
        rows.append(
            {
                "isolation": isolation,
                "user": who,
                "items": args.items,
                "median_ms": 1000 * statistics.median(times),
                "mean_ms": 1000 * statistics.mean(times),
                "p90_ms": 1000 * sorted(times)[int(0.9 * len(times))],
            }
        )
    print("| isolation | run as | items | median ms/grade | mean | p90 |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['isolation']} | {r['user']} | {r['items']} | {r['median_ms']:.0f} | {r['mean_ms']:.0f} "
            f"| {r['p90_ms']:.0f} |"
        )
    args.results.mkdir(exist_ok=True)
    meta = {"machine": platform.machine(), "kernel": platform.release(), "python": platform.python_version()}
    meta["load_average"] = os.getloadavg()
    (args.results / f"sandbox-{who}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
