"""One STaR round sampled in process against the same round sampled through `reasonloop serve --allow-reload`.

    python bench/bench_star_http.py [--model DIR] [--n-train 32] [--samples 4] [--threads 1]

The nano model's architecture with random weights unless `--model` names a built model (a random model finds
no rationale, so the round's fine-tuning is skipped and the figure is sampling, grading and the held-out
measurement). The served run must write the same sample files (asserted); the table gives each run's wall time,
the round's sampling through HTTP being the difference. Writes bench/results/star_http.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_serve import RESULTS, start_server, untrained_nano

from reasonloop.core import read_jsonl, set_threads
from reasonloop.recipes import StarConfig, run_star


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a built model directory (default: the nano architecture, untrained)")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else untrained_nano(Path(tmp) / "nano")
        proc, base = start_server(model, args.threads, allow_reload=True)
        try:
            cfg = dict(model=str(model), n_train=args.n_train, n_eval=16, rounds=1, samples=args.samples,
                       max_new_tokens=64, epochs=1, batch_size=8)  # fmt: skip
            times = {}
            for name, extra in (("in process", {}), ("through reasonloop serve", {"sampler": f"openai:{base}#m"})):
                t0 = time.perf_counter()
                run_star(StarConfig(**cfg, **extra), Path(tmp) / name, log=lambda s: None)
                times[name] = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        files = sorted(p.name for p in (Path(tmp) / "in process" / "samples").glob("*.jsonl"))
        for f in files:
            a = [(r["problem_id"], r["token_ids"]) for r in read_jsonl(Path(tmp) / "in process" / "samples" / f)]
            b = [(r["problem_id"], r["token_ids"]) for r in read_jsonl(Path(tmp) / "through reasonloop serve" / "samples" / f)]  # fmt: skip
            assert a == b, f"{f}: the served run sampled something else"
        n_samples = sum(len(list(read_jsonl(Path(tmp) / "in process" / "samples" / f))) for f in files)
    print(f"one STaR round, {args.n_train} problems, {n_samples} samples (identical in both runs)")
    print("| run | seconds |\n|---|---|")
    for name, s in times.items():
        print(f"| {name} | {s:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "star_http.json").write_text(json.dumps({**vars(args), "samples_written": n_samples, "seconds": times}))


if __name__ == "__main__":
    sys.exit(main())
