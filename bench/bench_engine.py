"""Generation benchmarks of the `hf` engine on the nano model, side by side with `transformers.generate`.

    python bench/bench_engine.py [--model nano] [--threads 2]

Measures, in one process and one run:
1. throughput: 64 arith prompts x 16 samples, full solutions, temperature 1,
   our engine vs `model.generate()` on the same model, prompts, batch and settings;
   tokens/s of both, and the engine's achieved FLOP/s as a fraction of the
   machine's measured matmul FLOP/s;
2. shared-prefix rollouts: 32 continuations of an 8-step prefix, encoded once
   vs re-encoded for every rollout;
3. memory: peak RSS of the throughput run, and peak RSS for n = 64 vs n = 1024
   samples of one prompt at a fixed batch (separate processes), to show the KV
   cache is bounded by the batch, not by n.
Writes bench/results/engine.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from reasonloop.cli import resolve_model
from reasonloop.core import set_threads
from reasonloop.engine import HFEngine
from reasonloop.models import load_model
from reasonloop.tasks import ArithConfig, ArithTask

RESULTS = Path(__file__).parent / "results"


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: on Linux that survives fork+exec, so a
    child would report its parent's high-water mark."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops(size: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - t)


def flops_per_token(model, context: float) -> float:
    """2 x (weights used per token) + attention over `context` positions: QK^T and AV, 2 x 2 x d_attn x ctx per layer."""
    cfg = model.config
    n_weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    if cfg.tie_word_embeddings:
        n_weights += model.get_output_embeddings().weight.numel()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * n_weights + 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * context


def hf_generate(model, tok, prompts: list[str], n: int, max_new: int, batch_prompts: int, seed: int) -> int:
    """transformers' own generate(), same chunks of rows; returns tokens generated up to each row's EOS."""
    tok.padding_side = "left"
    torch.manual_seed(seed)
    total = 0
    for c in range(0, len(prompts), batch_prompts):
        enc = tok(prompts[c : c + batch_prompts], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new,
                num_return_sequences=n,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        for row in new.tolist():
            total += next((i + 1 for i, x in enumerate(row) if x == tok.eos_token_id), len(row))
    return total


def throughput(model_dir: Path, n_prompts: int, n: int, max_new: int, batch_rows: int, reps: int) -> dict:
    model, tok = load_model(model_dir)
    prompts = [p.prompt for p in ArithTask().problems("test", n_prompts, seed=7)]
    engine = HFEngine(model, tok, max_batch=batch_rows)
    engine.generate(prompts[:4], 4, max_new_tokens=16)  # warm-up
    ours, theirs = [], []
    for r in range(reps):  # interleaved, so machine noise hits both alike
        before = engine.counts.copy()
        t = time.perf_counter()
        engine.generate(prompts, n, temperature=1.0, max_new_tokens=max_new, seed=r)
        spent = engine.counts - before
        ours.append((spent.generated, spent.prefilled, time.perf_counter() - t))
        t = time.perf_counter()
        toks = hf_generate(model, tok, prompts, n, max_new, batch_rows // n, seed=r)
        theirs.append((toks, time.perf_counter() - t))
    gen = sum(o[0] for o in ours)
    ours_tps = gen / sum(o[2] for o in ours)
    hf_tps = sum(t[0] for t in theirs) / sum(t[1] for t in theirs)
    avg_len = gen / (reps * n_prompts * n)
    avg_prompt = sum(o[1] for o in ours) / (reps * n_prompts)  # prompts are encoded once per chunk
    per_tok = flops_per_token(model, avg_prompt + avg_len / 2)
    peak = matmul_flops()
    return {
        "prompts": n_prompts,
        "samples_per_prompt": n,
        "batch_rows": batch_rows,
        "reps": reps,
        "avg_completion_tokens": avg_len,
        "engine_tokens_per_s": ours_tps,
        "transformers_generate_tokens_per_s": hf_tps,
        "speedup": ours_tps / hf_tps,
        "engine_flops_per_s": per_tok * ours_tps,
        "matmul_flops_per_s": peak,
        "fraction_of_matmul_peak": per_tok * ours_tps / peak,
        "peak_rss_mib": peak_rss_mib(),
    }


def shared_prefix(model_dir: Path, rollouts: int, reps: int) -> dict:
    model, tok = load_model(model_dir)
    task = ArithTask(ArithConfig(min_ops=10, max_ops=10, start_max=20, operand_max=9, mul_max=5, value_max=99))
    problem = task.problems("test", 1, seed=3)[0]
    steps = task.steps(problem.meta["solution"])
    prefix = problem.prompt + "\n".join(steps[:8]) + "\n"
    shared, plain = HFEngine(model, tok, share_prefix=True), HFEngine(model, tok, share_prefix=False)
    times = {"shared": 0.0, "re-encoded": 0.0}
    for r in range(reps):
        for name, eng, prompts, n in (
            ("shared", shared, [prefix], rollouts),
            ("re-encoded", plain, [prefix] * rollouts, 1),
        ):
            t = time.perf_counter()
            eng.generate(prompts, n, temperature=1.0, max_new_tokens=64, seed=r)
            times[name] += time.perf_counter() - t
    return {
        "prefix_tokens": len(tok(prefix)["input_ids"]),
        "rollouts": rollouts,
        "seconds_shared": times["shared"] / reps,
        "seconds_reencoded": times["re-encoded"] / reps,
        "time_ratio": times["re-encoded"] / times["shared"],
        "prefilled_tokens_shared": shared.counts.prefilled // reps,
        "prefilled_tokens_reencoded": plain.counts.prefilled // reps,
    }


def memory_child(model_dir: Path, n: int, batch_rows: int) -> None:
    engine = HFEngine.from_pretrained(model_dir, max_batch=batch_rows)
    engine.generate(["Q: 12+7*3-5\n"], n, temperature=1.0, max_new_tokens=128, seed=0)
    print(json.dumps({"n": n, "peak_rss_mib": peak_rss_mib(), "kv_cache_mib": engine.last_cache_bytes / 2**20}))


def memory(model_dir: Path, threads: int, batch_rows: int) -> list[dict]:
    out = []
    for n in (64, 1024):
        cmd = [
            sys.executable,
            __file__,
            "--model",
            str(model_dir),
            "--threads",
            str(threads),
            "--memory-child",
            str(n),
            "--batch-rows",
            str(batch_rows),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nano")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch-rows", type=int, default=256)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_threads(args.threads)
    model_dir = resolve_model(args.model)
    if args.memory_child:
        memory_child(model_dir, args.memory_child, args.batch_rows)
        return
    res = {
        "threads": args.threads,
        "throughput": throughput(model_dir, 64, 16, 128, args.batch_rows, args.reps),
        "shared_prefix": shared_prefix(model_dir, 32, 10),
        "memory_fixed_batch": memory(model_dir, args.threads, 64),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(res, indent=2))
    t, s = res["throughput"], res["shared_prefix"]
    print("| measure | value |\n|---|---|")
    print(f"| engine tokens/s | {t['engine_tokens_per_s']:.0f} |")
    print(f"| transformers generate() tokens/s | {t['transformers_generate_tokens_per_s']:.0f} |")
    print(f"| speedup | {t['speedup']:.2f}x |")
    print(
        f"| engine FLOP/s / matmul FLOP/s | {t['engine_flops_per_s'] / 1e9:.2f} / {t['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s = {100 * t['fraction_of_matmul_peak']:.1f}% |"
    )
    print(f"| peak RSS, throughput run (both engines) | {t['peak_rss_mib']:.0f} MiB |")
    print(
        f"| shared prefix: 32 rollouts of a {s['prefix_tokens']}-token prefix | {s['seconds_shared'] * 1e3:.0f} ms vs {s['seconds_reencoded'] * 1e3:.0f} ms re-encoded ({s['time_ratio']:.2f}x) |"
    )
    for m in res["memory_fixed_batch"]:
        print(
            f"| n={m['n']} samples of one prompt at batch 64: KV cache, peak RSS | {m['kv_cache_mib']:.2f} MiB, {m['peak_rss_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
