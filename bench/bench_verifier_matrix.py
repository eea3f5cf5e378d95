"""Does the self-play verifier keep up, or do the generator's samples get harder to judge? (issue 13)

    python bench/bench_verifier_matrix.py runs/demo

The per-round AUROC of a self-play run scores V(r) on G(r)'s held-out samples, so it moves with both players. This
separates them: every round's verifier V(i) scores every round's held-out samples (`samples/roundj-heldout.jsonl`,
G(j)'s), and the table gives the within-problem AUROC (the chance that a right sample of a problem outscores a
wrong one of the same problem, ties half; mean over the problems with both) for each pair: a row is one verifier
on the generators in turn, a column one generator's samples judged by the verifiers in turn. Also on the problems
that have both right and wrong samples in every round, so a change of problem mix is not read as a harder
generator. Prints both tables and writes `bench/results/verifier_matrix.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from reasonloop.core import Sample, load_config, read_jsonl
from reasonloop.eval.verifier_metrics import auroc
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.selfplay import SelfPlayConfig
from reasonloop.verifiers.registry import load_verifier


def within(groups: dict[str, list[tuple[float, int]]], problems: set[str]) -> float:
    """Mean within-problem AUROC over `problems`."""
    values = [auroc([s for s, _ in groups[p]], [y for _, y in groups[p]]) for p in sorted(problems)]
    return sum(values) / len(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a self-play run directory with a value verifier (reasonloop demo / selfplay)")
    ap.add_argument("--rounds", type=int, nargs="+", default=None, help="rounds to compare (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = load_config(SelfPlayConfig, run / "config.yaml")
    rounds = args.rounds or list(range(1, cfg.rounds + 1))
    _, _, test = draw_problems(cfg)
    by_id = {p.id: p for p in test}
    held = {j: [Sample.from_dict(x) for x in read_jsonl(run / "samples" / f"round{j}-heldout.jsonl")] for j in rounds}
    mixed = {}
    for j, samples in held.items():
        right: dict[str, list[int]] = {}
        for s in samples:
            right.setdefault(s.problem_id, []).append(int(s.reward == 1.0))
        mixed[j] = {p for p, ys in right.items() if 0 < sum(ys) < len(ys)}
    common = set.intersection(*mixed.values())
    table: dict[int, dict[int, dict[str, float]]] = {}
    for i in rounds:
        verifier = load_verifier(run / f"round{i}" / "verifier")
        table[i] = {}
        for j, samples in held.items():
            scores = verifier.score_many(
                [by_id[s.problem_id].prompt for s in samples], [s.steps or [""] for s in samples]
            )
            groups: dict[str, list[tuple[float, int]]] = {}
            for s, score in zip(samples, scores):
                groups.setdefault(s.problem_id, []).append((score, int(s.reward == 1.0)))
            table[i][j] = {"mixed": within(groups, mixed[j]), "common": within(groups, common)}
    for key, title in (("mixed", "problems with right and wrong samples in that round"),
                       ("common", f"the {len(common)} problems with both in every round")):  # fmt: skip
        print(f"\nWithin-problem AUROC, {title} (rows: verifier V(i); columns: samples of G(j))\n")
        print("| verifier | " + " | ".join(f"G({j}) ({len(mixed[j]) if key == 'mixed' else len(common)})"
                                         for j in rounds) + " |")  # fmt: skip
        print("|---" * (len(rounds) + 1) + "|")
        for i in rounds:
            print(f"| V({i}) | " + " | ".join(f"{table[i][j][key]:.3f}" for j in rounds) + " |")
    path = Path(__file__).parent / "results" / "verifier_matrix.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"run": str(run), "common_problems": len(common), "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
