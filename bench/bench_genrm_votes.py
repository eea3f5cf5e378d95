"""Verification-time scaling of GenRM: held-out selection quality against k sampled verifications per solution.

    python bench/bench_genrm_votes.py --run-dir RUN --verifier RUN/genrm_cot [--votes 1,2,4,8,16] [--seed 0]

Reads a finished `reasonloop verifiers` run (its config.yaml and held-out
samples), samples max(votes) verifications of every held-out sample once (in
one batch, seed `--seed`), and for each k scores every sample with its first k
verifications: mean P(Yes) for the score, the mean step scores for error-step
F1, then the recipe's own `evaluate_verifier` (AUROC, within-problem AUROC,
best-of-n, weighted vote, error-step F1). The k verifications are the first k
of the max(votes) sampled in one batch, so the points share verifications (a
nested design, less noise between points); the recipe with `genrm_votes=k` draws
other random numbers, so its figures differ from these by sampling noise only.

Verifier tokens at k: every distinct held-out solution's verifier prompt once
(a problem's duplicate solutions are verified once; the prompt is encoded once
and shared by its verifications) plus, per verification, the tokens it generated
and the tokens read back to score it. Generator tokens: the held-out samples'
prompts and completions. Prints a Markdown table and writes
RUN/genrm_votes-<verifier>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from reasonloop.core import Sample, atomic_write_json, from_dict, read_jsonl
from reasonloop.recipes.verifiers import VerifiersConfig, evaluate_verifier
from reasonloop.tasks import get_task
from reasonloop.verifiers.registry import load_verifier


class FixedScores:
    """Precomputed scores behind the verifier interface `evaluate_verifier` reads."""

    def __init__(self, scores: list[float], step_scores: list[list[float]]):
        self.scores, self.steps = scores, step_scores

    def score_many(self, prompts, solutions) -> list[float]:
        return self.scores

    def step_scores_many(self, prompts, solutions) -> list[list[float]]:
        return self.steps


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--verifier", type=Path, required=True, help="a GenRM directory with checks (genrm_cot)")
    ap.add_argument("--votes", default="1,2,4,8,16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.votes.split(",")]
    cfg = from_dict(VerifiersConfig, yaml.safe_load((args.run_dir / "config.yaml").read_text()))
    task, N = get_task(cfg.task), cfg.best_of
    test = task.problems("test", cfg.n_eval, seed=cfg.seed)
    held = [Sample.from_dict(r) for r in read_jsonl(args.run_dir / "samples" / "heldout.jsonl")]
    by_id = {s.problem_id: [] for s in held}
    for s in held:
        by_id[s.problem_id].append(s)
    held = [s for p in test for s in by_id[p.id][:N]]  # problem-major, as the recipe reads them
    steps = [s.steps or [""] for s in held]
    labels = [int(s.reward == 1.0) for s in held]
    truth = [task.first_error(test[i // N], st) for i, st in enumerate(steps)]
    prompts = [p.prompt for p in test for _ in range(N)]

    verifier = load_verifier(args.verifier)
    if not getattr(verifier, "checks", False):
        raise SystemExit(f"{args.verifier}: not a step-checking GenRM (its manifest lacks checks: true)")
    verifier.votes, verifier.seed = max(ks), args.seed
    t0 = time.time()
    verdicts = verifier.verdicts(prompts, steps)
    seconds = time.time() - t0
    # a solution sampled twice for one problem is verified once (the verifier memoises): count it once
    unique = list({(p, tuple(st)): v for p, st, v in zip(prompts, steps, verdicts)}.values())
    gen_tokens = sum(len(s.prompt_ids) + len(s.token_ids) for s in held)
    rows = []
    for k in ks:
        scores = [mean(v.p_yes[:k]) for v in verdicts]
        step_scores = [[mean(col) for col in zip(*v.step_scores[:k])] for v in verdicts]
        res = evaluate_verifier(FixedScores(scores, step_scores), test, held, steps, labels, truth, N)
        tokens = sum(v.prompt_tokens + sum(v.tokens[:k]) for v in unique)
        rows.append({"k": k, "verifier_tokens": tokens, **res})
    out = {
        "run_dir": str(args.run_dir), "verifier": str(args.verifier), "seed": args.seed, "best_of": N,
        "n_eval": cfg.n_eval, "generator_tokens": gen_tokens, "seconds": seconds,
        "engine_tokens": verifier.tokens_scored, "rows": rows,
    }  # fmt: skip
    atomic_write_json(args.run_dir / f"genrm_votes-{args.verifier.name}.json", out)
    print(
        f"{len(held)} held-out samples ({cfg.n_eval} problems x {N}); {max(ks)} verifications each in {seconds:.0f} s"
    )
    print(f"generator tokens for the held-out samples: {gen_tokens:,}")
    print(f"| k | AUROC within a problem | best-of-{N} | weighted vote@{N} | error-step F1 | verifier tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        f1 = "n/a" if r["error_step"] is None else f"{100 * r['error_step']['f1']:.1f}"
        within = r["auroc_within_problem"]
        print(
            f"| {r['k']} | {'n/a' if within is None else f'{within:.3f}'} | {100 * r['best_of_n'][-1]:.1f}% | "
            f"{100 * r[f'weighted_vote@{N}']:.1f}% | {f1} | {r['verifier_tokens']:,} |"
        )


if __name__ == "__main__":
    main()
