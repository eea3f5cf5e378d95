"""The overhead of `executor: ray` against the local executor for the same eval, with its parts.

    python bench/bench_ray.py [--model nano-countdown] [--problems 200] [--n 16] [--cpus 2] [--local-threads 1]

Runs `evaluate` (greedy plus `n` samples per problem, graded) on the built-in
countdown world (3 numbers up to 9, targets up to 100: the `nano-countdown`
base's world) twice in this process: locally (`HFEngine`, `--local-threads`
torch threads), then on a private local Ray cluster of `--cpus` CPUs (one
generator actor per CPU, one torch thread each). For Ray it times the parts:
starting the cluster, starting the actors (each imports torch and loads the
model), and the eval itself (generation on the actors, grading in Ray tasks).
Asserts the two results are identical (metrics, per-problem answers, tokens
generated). Prints one Markdown row per executor.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from reasonloop.engine import HFEngine
from reasonloop.engine.fanout import RayConfig, RayExecutor
from reasonloop.eval import EvalConfig, evaluate
from reasonloop.models import resolve_model
from reasonloop.tasks import get_task

WORLD = "countdown:n_numbers=3,number_max=9,target_max=100"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nano-countdown", help="model directory or built-in name")
    ap.add_argument("--problems", type=int, default=200, help="test problems")
    ap.add_argument("--n", type=int, default=16, help="samples per problem")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (= generator actors)")
    ap.add_argument("--local-threads", type=int, default=1, help="torch threads of the local run")
    args = ap.parse_args()

    task = get_task(WORLD)
    problems = task.problems("test", args.problems, seed=0)
    cfg = EvalConfig(n=args.n, max_new_tokens=128, seed=0)
    path = resolve_model(args.model)
    load = os.getloadavg()[0]

    torch.set_num_threads(args.local_threads)
    t0 = time.perf_counter()
    engine = HFEngine.from_pretrained(path)
    t_load = time.perf_counter() - t0
    local = evaluate(engine, task, problems, cfg)
    t_local = time.perf_counter() - t0

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    executor = RayExecutor(RayConfig(num_cpus=args.cpus))
    t_cluster = time.perf_counter() - t0
    generator = executor.open_generator(str(path))
    t_actors = time.perf_counter() - t0 - t_cluster
    remote = evaluate(generator, task, problems, cfg, executor=executor)
    t_ray = time.perf_counter() - t0
    t_eval = t_ray - t_cluster - t_actors
    executor.close()

    def same(r: dict) -> tuple:
        return (
            {k: v for k, v in r.items() if k not in ("samples", "tokens")},
            r["tokens"]["generated"],
            [(s.text, s.reward) for s in r["samples"]],
        )

    assert same(local) == same(remote), "the Ray eval differs from the local one"
    rows = len(problems) * (1 + args.n)
    print(f"load average at start {load:.1f}; {rows} completions, {local['tokens']['generated']:,} tokens; identical")
    print("| executor | total s | start-up s | eval s | tokens/s in eval |")
    print("|---|---|---|---|---|")
    gen = local["tokens"]["generated"]
    print(
        f"| local, {args.local_threads} thread(s) | {t_local:.1f} | {t_load:.1f} (model) | {t_local - t_load:.1f} "
        f"| {gen / (t_local - t_load):,.0f} |"
    )
    print(
        f"| ray, {args.cpus} actors x 1 thread | {t_ray:.1f} | {t_cluster:.1f} (cluster) + {t_actors:.1f} (actors) "
        f"| {t_eval:.1f} | {gen / t_eval:,.0f} |"
    )


if __name__ == "__main__":
    main()
