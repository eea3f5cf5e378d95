"""Reinforcement fine-tuning against supervised fine-tuning on the same 32 `extract` examples.

    reasonloop init --out runs/nano-extract --set task=extract
    python bench/bench_rft_extract.py --base runs/nano-extract              # seeds 0,1,2
    python bench/bench_rft_extract.py --base runs/nano-extract --seeds 0 --threads 2

RFT is the shipped preset `examples/rft/extract.yaml` (GRPO, 8 examples x 8
samples per step, 4 steps a pass, 15 passes, KL 0.02 to the start, the grader
`examples/graders/extract.yaml`). SFT trains the same base on the same 32
(prompt, answer) pairs, batch 8 (4 steps a pass) for the same 15 passes, at
three learning rates (the best is SFT's figure; all are reported). Both are
measured by the same grader on greedy completions of the first 100 held-out
examples of `examples/rft/extract_val.jsonl`, after every pass. RFT runs are
resumable run directories under `--out`; SFT results are kept there too.
Writes `summary.json` in `--out` and `docs/figures/rft_vs_sft_extract.png`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reasonloop.core import load_config
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy
from reasonloop.graders import load_grader
from reasonloop.models import load_model
from reasonloop.recipes import RLConfig, run_rl
from reasonloop.recipes.common import draw_problems
from reasonloop.train import TrainConfig, sft_on_pairs

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "examples" / "rft" / "extract.yaml"
SFT_LRS = (1e-4, 3e-4, 1e-3)


def rft(cfg: RLConfig, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    res = run_rl(cfg, run_dir, log=lambda *_: None)
    curve = [(r["step"], r["held_out_accuracy"]) for r in res["records"] if "held_out_accuracy" in r]
    kl = [(r["step"], r["kl_k3"]) for r in res["records"] if "kl_k3" in r]
    return {"curve": curve, "kl_k3": kl, "seconds": time.perf_counter() - t0}


def sft(cfg: RLConfig, lr: float, grader) -> dict:
    """SFT on the examples' (prompt, answer) pairs for as many passes as the RFT run, graded after every pass."""
    _, train, val = draw_problems(cfg)
    model, tokenizer = load_model(cfg.model)
    steps_per_pass = len(train) // cfg.prompts_per_step
    steps = cfg.steps
    pairs = [(p.prompt, p.answer) for p in train]
    curve = [(0, greedy_accuracy(HFEngine(model, tokenizer), grader, val, cfg.max_new_tokens))]

    def progress(record: dict) -> None:
        if record["step"] % steps_per_pass == 0:
            model.eval()
            curve.append((record["step"], greedy_accuracy(HFEngine(model, tokenizer), grader, val, cfg.max_new_tokens)))
            model.train()

    t0 = time.perf_counter()
    train_cfg = TrainConfig(steps=steps, lr=lr, warmup=max(1, steps // 20), seed=cfg.seed)
    sft_on_pairs(model, tokenizer, pairs, train_cfg, cfg.prompts_per_step, None, cfg.seed, progress=progress)
    return {"curve": curve, "lr": lr, "seconds": time.perf_counter() - t0}


def per_field(model: str, problems) -> dict[str, float]:
    """Share of greedy completions whose field equals the answer's (lists as sets), field by field."""
    from reasonloop.graders.base import extract_json

    out = HFEngine.from_pretrained(model).generate([p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=128)
    hits: dict[str, list[int]] = {}
    for p, s in zip(problems, out):
        ref, (pred, _) = json.loads(p.answer), extract_json(s[0].text)
        for f, want in ref.items():
            got = (pred or {}).get(f)
            same = set(got) == set(want) if isinstance(want, list) and isinstance(got, list) else got == want
            hits.setdefault(f, []).append(int(same))
    return {f: sum(h) / len(h) for f, h in hits.items()}


def cached(path: Path, compute) -> dict:
    """`compute()`, kept in `path` so that a rerun (to summarise several seeds) does not redo it."""
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.write_text(json.dumps(result))
    return result


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    series = {"RFT (GRPO, preset)": [v["rft"]["curve"] for v in summary.values()]}
    for lr in SFT_LRS:
        series[f"SFT, lr {lr:g}"] = [next(s["curve"] for s in v["sft"] if s["lr"] == lr) for v in summary.values()]
    for label, runs in series.items():
        steps = np.array([s for s, _ in runs[0]], dtype=float)
        ys = np.stack([[100 * g for _, g in r] for r in runs])
        ax.plot(steps, ys.mean(0), label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.15)
    ax.set_xlabel("optimiser steps (4 per pass over the 32 examples)")
    ax.set_ylabel("held-out mean grade (%)")
    ax.set_title("extract: RFT vs SFT on the same 32 examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the extract nano base (reasonloop init --set task=extract)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rft_extract"))
    ap.add_argument("--fields", nargs="+", metavar="MODEL", help="only print per-field exact match of these models")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.fields:
        cfg = load_config(RLConfig, PRESET, [f"model={args.base}"])
        _, train, val = draw_problems(cfg)
        for model in args.fields:
            for name, problems in (("train", train), ("held-out", val)):
                fields = per_field(model, problems)
                print(model, name, ", ".join(f"{f} {100 * v:.1f}%" for f, v in fields.items()))
        return 0
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[int, dict] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = load_config(RLConfig, PRESET, [f"model={args.base}", f"seed={seed}"])
        grader = load_grader(cfg.grader)
        r = rft(cfg, out / f"rft-s{seed}")
        s = [cached(out / f"sft-s{seed}-lr{lr:g}.json", functools.partial(sft, cfg, lr, grader)) for lr in SFT_LRS]
        summary[seed] = {"rft": r, "sft": s}
        best = max(s, key=lambda x: x["curve"][-1][1])
        print(f"seed {seed}: start {100 * r['curve'][0][1]:.1f}%; RFT {100 * r['curve'][-1][1]:.1f}% "
              f"(peak {100 * max(g for _, g in r['curve']):.1f}%, KL {r['kl_k3'][-1][1]:.4f}, {r['seconds']:.0f} s); "
              + "; ".join(f"SFT lr {x['lr']:g} {100 * x['curve'][-1][1]:.1f}% (peak "
                          f"{100 * max(g for _, g in x['curve']):.1f}%)" for x in s)
              + f"; best SFT lr {best['lr']:g}")  # fmt: skip
    (out / f"summary-{args.seeds.replace(',', '-')}.json").write_text(json.dumps(summary, indent=1))
    plot(summary, ROOT / "docs" / "figures" / "rft_vs_sft_extract.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
