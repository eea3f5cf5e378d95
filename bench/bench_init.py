"""Build the nano base from scratch and report build time, peak memory and held-out accuracy.

    python bench/bench_init.py [--threads 2] [--out /tmp/nano-bench]

Runs `reasonloop init --force` in a child process (so its peak RSS is its own),
which trains the model and then evaluates it on 200 held-out arith problems
(greedy, and 16 samples each at temperature 1). Writes bench/results/init.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/nano-bench")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "reasonloop.cli", "--threads", str(args.threads), "init", "--force", "--out", args.out]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = Path(args.out)
    build = json.loads((out / "reasonloop_build.json").read_text())
    ev = json.loads((out / "eval_arith.json").read_text())
    res = {
        "threads": args.threads,
        "build_seconds": build["build_seconds"],
        "init_with_eval_seconds": wall,
        "peak_rss_mib": peak,
        "greedy_accuracy": ev["greedy_accuracy"],
        "pass@16": ev["pass@16"],
        "maj@16": ev["maj@16"],
        "pass@1": ev["pass@1"],
        "num_problems": ev["num_problems"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "init.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
