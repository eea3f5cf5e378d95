"""Throughput of `reasonloop serve` with 1, 4 and 16 concurrent requests, against the in-process `hf` engine.

    python bench/bench_serve.py [--model DIR|nano] [--requests 32] [--n 4] [--max-tokens 64] [--threads 1]

Starts `reasonloop serve` in a subprocess on a free port (the nano model's
architecture, untrained, unless `--model` names a built model), then sends the
same `--requests` completion requests (one arith prompt each, `n` samples,
`max_tokens` new tokens, temperature 1, a distinct seed each) with 1, 4 and 16
in flight. For each: wall time, requests/s, generated tokens/s (the server's
`usage`), median latency. The reference row is one in-process `HFEngine.generate`
call over all prompts (the same samples: the server keys each prompt as the
engine does): the batch the server would reach if every request came at once.
The server batches requests that wait together with the same settings, so
throughput rises with concurrency until the engine's batch is the bottleneck.
Writes bench/results/serve.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

from reasonloop.core import set_threads
from reasonloop.engine import HFEngine
from reasonloop.models import build_model, build_tokenizer, resolve_model, save_model
from reasonloop.recipes.nano import NanoConfig
from reasonloop.tasks import ArithTask

RESULTS = Path(__file__).parent / "results"


def untrained_nano(path: Path) -> Path:
    """The nano model's architecture with random weights: the same compute per token as the trained model."""
    cfg = NanoConfig()
    tok = build_tokenizer()
    model = build_model(
        tok, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
        mlp_size=cfg.mlp_size, seed=0,
    )  # fmt: skip
    return save_model(model, tok, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, threads: int, allow_reload: bool = False) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "reasonloop.cli", "--threads", str(threads), "serve", str(model), "--name", "m",
           "--port", str(port), "--max-prompts", "64", *(["--allow-reload"] if allow_reload else [])]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"the server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


def run_level(base: str, prompts: list[str], concurrency: int, n: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    tokens = 0

    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as http:

        def one(i: int) -> int:
            body = {"model": "m", "prompt": prompts[i], "n": n, "max_tokens": max_tokens, "temperature": 1.0,
                    "seed": 1000 + i, "logprobs": 0, "return_token_ids": True}  # fmt: skip
            t = time.perf_counter()
            resp = http.post(f"{base}/completions", json=body)
            resp.raise_for_status()
            latencies.append(time.perf_counter() - t)
            return resp.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(one, range(len(prompts))))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(prompts),
        "seconds": wall,
        "requests_per_s": len(prompts) / wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "median_latency_s": statistics.median(latencies),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model directory or built-in name (default: untrained nano architecture)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model = resolve_model(args.model) if args.model else untrained_nano(Path(tmp.name) / "nano")
    prompts = [p.prompt for p in ArithTask().problems("test", args.requests, seed=0)]

    proc, base = start_server(model, args.threads)
    try:
        rows = [run_level(base, prompts, c, args.n, args.max_tokens) for c in (1, 4, 16)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    engine = HFEngine.from_pretrained(model)
    t0 = time.perf_counter()
    out = engine.generate(
        prompts, args.n, temperature=1.0, max_new_tokens=args.max_tokens, seeds=[1000 + i for i in range(len(prompts))]
    )
    wall = time.perf_counter() - t0
    generated = sum(len(s.token_ids) for row in out for s in row)
    reference = {"seconds": wall, "tokens": generated, "tokens_per_s": generated / wall}
    # the same samples whatever the concurrency, and the engine's own (same keys): the same token counts
    assert all(r["tokens"] == generated for r in rows), (generated, [r["tokens"] for r in rows])

    result = {
        "model": str(args.model or "untrained nano architecture"),
        "threads": args.threads,
        "torch": torch.__version__,
        "settings": {"requests": args.requests, "n": args.n, "max_tokens": args.max_tokens},
        "levels": rows,
        "in_process_one_call": reference,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=2))
    print(f"{args.requests} requests x n={args.n} x max_tokens={args.max_tokens}, {args.threads} thread(s)\n")
    print("| in flight | seconds | requests/s | tokens/s | median latency (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['seconds']:.2f} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['median_latency_s']:.2f} |"
        )
    print(f"| in-process, one call | {wall:.2f} | {args.requests / wall:.2f} | {generated / wall:.0f} | - |")


if __name__ == "__main__":
    main()
