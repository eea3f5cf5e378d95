"""The V-STaR DPO verifier on a tiny model: training ranks its correct solutions above the incorrect ones.

This checks that training optimises the DPO objective. Whether the verifier generalises to unseen problems is
a benchmark question on the nano model: a 32-wide model trained on 24 pairs is at chance (54/100) on them.
"""

import pytest

from reasonloop.core import Problem, Sample
from reasonloop.tasks import ArithTask
from reasonloop.verifiers import DpoVerifier, DpoVerifierConfig, preference_pairs, train_dpo_verifier


def corrupt(solution: str) -> str:
    """Change the first step's result by one: a wrong solution of the same shape."""
    steps = solution.split("\n")
    lhs, value = steps[0].split("=")
    steps[0] = f"{lhs}={int(value) + 1}"
    return "\n".join(steps)


def test_preference_pairs_need_both_sides():
    ps = [Problem("a", "Q: a\n", "1"), Problem("b", "Q: b\n", "2")]
    ss = [
        Sample("a", "x", reward=1.0),
        Sample("a", "y", reward=0.0),
        Sample("a", "z", reward=0.0),
        Sample("b", "w", reward=1.0),
    ]
    pairs = preference_pairs(ps, ss, max_pairs_per_problem=5)
    assert sorted(pairs) == [("Q: a\n", "x", "y"), ("Q: a\n", "x", "z")]
    assert len(preference_pairs(ps, ss, max_pairs_per_problem=1)) == 1


def test_dpo_verifier_ranks_correct_above_incorrect(tmp_path, solver_tiny_dir):
    task = ArithTask()
    problems = task.problems("train", 24, seed=100)
    samples = []
    for p in problems:
        samples += [Sample(p.id, p.meta["solution"], reward=1.0), Sample(p.id, corrupt(p.meta["solution"]), reward=0.0)]
    pairs = preference_pairs(problems, samples)
    out = train_dpo_verifier(
        solver_tiny_dir, pairs, tmp_path / "v", DpoVerifierConfig(epochs=8, batch_size=8, lr=3e-3, beta=0.5)
    )
    verifier = DpoVerifier.from_dirs(out, solver_tiny_dir)
    wins = sum(
        verifier.score(p, task.steps(p.meta["solution"])) > verifier.score(p, task.steps(corrupt(p.meta["solution"])))
        for p in problems
    )
    assert wins >= 0.9 * len(problems)
    p = problems[0]
    steps = task.steps(p.meta["solution"])
    per_step = verifier.score_steps(p, steps)
    assert len(per_step) == len(steps) and abs(per_step[-1] - verifier.score(p, steps)) < 1e-4
    # the worst step holds the corrupted operation; per-step sums add up to the total
    worst = DpoVerifier.from_dirs(out, solver_tiny_dir, aggregate="min_step")
    bad_steps = task.steps(corrupt(p.meta["solution"]))
    text = "\n".join(bad_steps)
    ratios = worst.token_ratios([p.prompt], [text])[0]
    by_step = worst.step_ratios(text, ratios)
    assert len(by_step) == len(bad_steps) and abs(sum(by_step) - sum(ratios)) < 1e-4
    assert worst.score(p, bad_steps) == min(by_step)
    with pytest.raises(ValueError, match="unknown aggregate"):
        DpoVerifier.from_dirs(out, solver_tiny_dir, aggregate="max")
    # the untrained policy is its own reference: every score is zero
    same = DpoVerifier.from_dirs(solver_tiny_dir, solver_tiny_dir)
    assert abs(same.score(p, steps)) < 1e-5
    # training again into the same directory is a no-op (resumable)
    assert train_dpo_verifier(solver_tiny_dir, pairs, tmp_path / "v") == out
