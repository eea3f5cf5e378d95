"""Graded completions per second for the gsm8k, math and python graders, in-process and with 1 and 2 workers;
with --similarity, for every text_similarity metric instead.

    python bench/bench_graders.py [--python-items 120]
    python bench/bench_graders.py --similarity [--workers 0 2]

With --similarity each metric grades 1,000 GSM8K reference solutions with their
calculator annotations (`<<48/2=24>>`) taken out against the solutions as
written: near-copies of a few hundred characters, as a text-similarity reward
sees them. `cosine` runs a random-weight encoder of all-MiniLM-L6-v2's shape
(6 layers, hidden 384, 12 heads, a word vocabulary built from the data): no
pretrained encoder can be downloaded here, and the speed depends on the shape,
not the weights.

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
import re
import tempfile
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


def similarity_items(n: int) -> tuple[list[Problem], list[str]]:
    problems = JsonlTask(DATA / "gsm8k" / "test.jsonl", "gsm8k").problems()[:n]
    solutions = [p.meta["solution"] for p in problems]
    refs = [Problem(p.id, p.prompt, s) for p, s in zip(problems, solutions)]
    return refs, [re.sub(r"<<[^>]*>>", "", s) for s in solutions]


def minilm_shaped_encoder(texts: list[str], directory: Path) -> Path:
    """A random-weight BERT of all-MiniLM-L6-v2's shape, with a word vocabulary from `texts`, saved to `directory`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512)  # fmt: skip
    BertModel(cfg).save_pretrained(directory)
    return directory


def similarity_rows(n: int, workers_list: list[int]) -> list[dict]:
    from reasonloop.graders.similarity import METRICS

    problems, completions = similarity_items(n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        encoder = minilm_shaped_encoder([p.answer for p in problems], Path(tmp))
        for metric in METRICS:
            config = {"type": "text_similarity", "evaluation_metric": metric}
            if metric == "cosine":
                config["embedding_model"] = str(encoder)
            grader = grader_from_config(config)
            rows += [timed(metric, grader, problems, completions, w, chunk_size=50) for w in workers_list]
    return rows


def timed(name: str, grader, problems: list[Problem], completions: list[str], workers: int, chunk_size: int) -> dict:
    """Grade everything once; the row of the results table (wall time includes starting the workers)."""
    t0 = time.perf_counter()
    res = grade_batch(grader, problems, completions, workers=workers, chunk_size=chunk_size)
    wall = time.perf_counter() - t0
    row = {
        "grader": name,
        "workers": workers,
        "items": len(problems),
        "seconds": round(wall, 3),
        "samples_per_s": round(len(problems) / wall, 1),
        "mean_score": round(res.mean_score, 4),
        "errors": res.errors,
    }
    print(f"{name:11s} workers={workers}: {row['samples_per_s']:8.1f} samples/s", flush=True)
    return row


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread per process (the workers inherit it)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-items", type=int, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--similarity", action="store_true", help="time every text_similarity metric instead")
    ap.add_argument("--similarity-items", type=int, default=1000)
    args = ap.parse_args()
    suites = (
        {}
        if args.similarity
        else {"gsm8k": gsm8k_items(), "math": math_items(), "python": python_items(args.python_items)}
    )
    rows = similarity_rows(args.similarity_items, args.workers) if args.similarity else []
    for name, (config, problems, completions) in suites.items():
        grader = grader_from_config(config)
        chunk_size = 16 if name != "python" else 4
        rows += [timed(name, grader, problems, completions, w, chunk_size) for w in args.workers]
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("similarity.json" if args.similarity else "graders.json")
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
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
