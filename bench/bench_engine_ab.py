"""Sampling throughput of the engine in two source trees, measured alternately in one run (an A/B of a change).

    git archive BASE src | tar -x -C /tmp/base      # the tree to compare against
    python bench/bench_engine_ab.py /tmp/base/src src [--pairs 3] [--reps 4]

The workload is `bench_engine.py`'s throughput one without `transformers.generate`: 64 `arith` test prompts x 16
samples, up to 128 new tokens, temperature 1, batches of 256 rows, on the nano model, 1 thread. Each measurement is a
fresh process (`--child`) timing `reps` calls with seeds 0..reps-1 (samples differ between trees when sampling
changes, so several seeds average over the lengths drawn); the two trees alternate `pairs` times, so machine load
hits both alike. Prints tokens per CPU second and per wall second of each process, and the mean ratio B / A.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(reps: int) -> None:
    from reasonloop.cli import resolve_model
    from reasonloop.core import set_threads
    from reasonloop.engine import HFEngine
    from reasonloop.models import load_model
    from reasonloop.tasks import ArithTask

    set_threads(1)
    model, tok = load_model(resolve_model("nano"))
    prompts = [p.prompt for p in ArithTask().problems("test", 64, seed=7)]
    engine = HFEngine(model, tok, max_batch=256)
    engine.generate(prompts[:4], 4, max_new_tokens=16)  # warm-up
    wall = cpu = 0.0
    for r in range(reps):
        t, c = time.perf_counter(), time.process_time()
        engine.generate(prompts, 16, temperature=1.0, max_new_tokens=128, seed=r)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
    tokens = engine.counts.generated - 16  # less the warm-up's
    print(json.dumps({"tokens": tokens, "tokens_per_cpu_s": tokens / cpu, "tokens_per_wall_s": tokens / wall}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", nargs="?", help="source tree A (its src/ directory)")
    ap.add_argument("b", nargs="?", help="source tree B")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.reps)
        return
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for _ in range(args.pairs):
        for name, src in (("A", args.a), ("B", args.b)):
            cmd = [sys.executable, __file__, "--child", "--reps", str(args.reps)]
            out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": os.path.abspath(src)}, capture_output=True,
                                 text=True, check=True)  # fmt: skip
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    for key in ("tokens_per_cpu_s", "tokens_per_wall_s"):
        a, b = (sum(r[key] for r in runs[n]) / len(runs[n]) for n in "AB")
        print(f"{key}: A {a:,.0f}  B {b:,.0f}  B/A {b / a:.3f}")


if __name__ == "__main__":
    main()
