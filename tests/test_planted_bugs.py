"""Bugs once planted in a scratch copy slipped through the suite (issue 18); each check here catches one.

Every check takes the code under test as an argument. `test_<check>` runs it on the real code;
`test_each_check_catches_its_bug` rebuilds the function from its current source with the bug put
back (one textual replacement, which must still apply) and asserts that the check then fails:
a test of the test. Expected values are worked out by hand in the comments, never by the code.
"""

from __future__ import annotations
import __future__

import inspect
import math
import random
import textwrap
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from reasonloop.core import Problem, Sample, read_jsonl
from reasonloop.recipes.common import sample_jsonl
from reasonloop.search import beam_search
from reasonloop.tasks import ArithTask, CountdownTask
from reasonloop.train import dpo_loss
from reasonloop.verifiers.dpo import train_dpo_verifier
from reasonloop.verifiers.value import mc_step_rollouts


def mutant(fn: Callable, old: str, new: str) -> Callable:
    """`fn` rebuilt from its source with `old` replaced by `new`, in a copy of its module's globals."""
    src = textwrap.dedent(inspect.getsource(fn))
    assert src.count(old) == 1, f"{fn.__name__}: the planted bug's anchor {old!r} is gone; update this test"
    namespace = dict(fn.__globals__)
    flags = __future__.annotations.compiler_flag
    exec(
        compile(src.replace(old, new), f"<mutant of {fn.__name__}>", "exec", flags=flags, dont_inherit=True), namespace
    )
    return namespace[fn.__name__]


# --- Monte-Carlo step labels: a rollout is graded together with its prefix ---------------------------------------


class TaskAndGrader(CountdownTask):
    """Countdown, whose exact check also serves as a grader `(problem, completion) -> grade with .score`."""

    def __call__(self, problem, completion):
        return SimpleNamespace(score=float(self.is_correct(problem, completion)))


CD = TaskAndGrader()
CD_PROBLEM = Problem("cd-30", "Q: 30 from 3 4 6\n", "30", {"numbers": [3, 4, 6], "target": 30})
CD_STEPS = ["4+6=10", "10*3=30", "A: 30"]


class RestOfTheSolution:
    """A generator whose every rollout from a prefix of `CD_STEPS` writes exactly the remaining steps."""

    def generate(self, prompts, n, **kw):
        out = []
        for prompt in prompts:
            done = prompt[len(CD_PROBLEM.prompt) :].count("\n")
            out.append([Sample(CD_PROBLEM.id, "\n".join(CD_STEPS[done:])) for _ in range(n)])
        return out


def check_mc_labels_grade_prefix_plus_rollout(mc_step_rollouts=mc_step_rollouts) -> None:
    # Every prefix, completed with the rest of a right solution, is right: values 1, 1, 1 and the solution's own 1.
    # Graded alone, the rollout "10*3=30\nA: 30" uses a 10 that {3, 4, 6} does not hold, so it is wrong on countdown.
    assert CD.is_correct(CD_PROBLEM, "\n".join(CD_STEPS)) and not CD.is_correct(CD_PROBLEM, "10*3=30\nA: 30")
    (out,) = mc_step_rollouts(RestOfTheSolution(), CD, [(CD_PROBLEM, CD_STEPS)], k=3)  # mc_step_values' rollouts
    assert out.values == [1.0, 1.0, 1.0, 1.0]
    assert [r.reward for rs in out.rollouts for r in rs] == [1.0] * 9  # each rollout's grade, with its prefix


def test_mc_labels_grade_prefix_plus_rollout():
    check_mc_labels_grade_prefix_plus_rollout()


# --- beam search returns the best-scored finished solution, not the first -----------------------------------------


def check_beam_returns_best_finished(beam_search=beam_search) -> None:
    # root -> "a" (final, 0.3) and "b" (0.5); "b" -> "b1" (final, 1.0). Width 2: "a" finishes at depth 1,
    # "b1" at depth 2; the answer is b1 (1.0), not the first finished one.
    tree = {(): [("a", True), ("b", False)], ("b",): [("b1", True)]}
    values = {("a",): 0.3, ("b",): 0.5, ("b", "b1"): 1.0}
    res = beam_search(
        lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]] for p in ps],
        lambda ps: [values[tuple(p)] for p in ps],
        beam_width=2,
        expansions=2,
    )
    assert (res.steps, res.score, res.finished) == (["b", "b1"], 1.0, True)
    assert sorted(v for _, v in res.kept) == [0.3, 1.0]


def test_beam_returns_best_finished():
    check_beam_returns_best_finished()


# --- resumable sampling tops a partly sampled problem up from where it stopped ------------------------------------


class SeededEngine:
    """Sample j of prompt i drawn from (seeds[i], j), as the real engine draws it: the same whatever the batch."""

    max_batch = 64

    def generate(self, prompts, n, *, temperature, max_new_tokens, seeds, top_p=1.0, stop=None):
        return [[Sample("", f"A: {random.Random(f'{s}/{j}').randint(0, 9)}") for j in range(n)] for s in seeds]


def check_top_up_continues_the_sample_index(sample_jsonl=sample_jsonl, tmp_path=None) -> None:
    task = ArithTask()
    problems = task.problems("train", 3, seed=5)

    def run(name: str) -> list[dict]:
        path = tmp_path / name / "samples" / "s.jsonl"
        sample_jsonl(path, SeededEngine(), task, problems, lambda p: p.prompt, 4,
                     temperature=1.0, max_new_tokens=8, seed=0)  # fmt: skip
        return list(read_jsonl(path))

    whole = run("whole")
    assert [(r["problem_id"], r["meta"]["sample_index"]) for r in whole] == [
        (p.id, j) for p in problems for j in range(4)
    ]
    # killed after problem 0's first two samples, mid-way through a third line
    killed = tmp_path / "killed" / "samples" / "s.jsonl"
    killed.parent.mkdir(parents=True)
    lines = (tmp_path / "whole" / "samples" / "s.jsonl").read_text().splitlines(keepends=True)
    killed.write_text("".join(lines[:2]) + lines[2][:10])
    with pytest.warns(UserWarning, match="torn"):
        resumed = run("killed")
    key = lambda r: (r["problem_id"], r["meta"]["sample_index"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, whole))  # each (problem, index) once, none lost
    assert {key(r): r["text"] for r in resumed} == {key(r): r["text"] for r in whole}  # the very samples of a whole run


def test_top_up_continues_the_sample_index(tmp_path):
    check_top_up_continues_the_sample_index(tmp_path=tmp_path)


# --- DPO: each policy log-prob is compared with the reference log-prob of the same completion ---------------------


def check_dpo_hand_values(dpo_loss=dpo_loss) -> None:
    # beta 0.5; chosen: policy -1, reference -1.5 -> reward 0.5 * 0.5 = 0.25;
    # rejected: policy -3, reference -4 -> reward 0.5 * 1 = 0.5; margin -0.25; loss = -log sigmoid(-0.25) = log(1 + e^0.25).
    # With the references swapped: rewards 0.5 * (-1 + 4) = 1.5 and 0.5 * (-3 + 1.5) = -0.75, margin 2.25.
    loss, m = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-1.5]), torch.tensor([-4.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.25)), abs=1e-6)
    assert (m["reward_chosen"], m["reward_rejected"]) == pytest.approx((0.25, 0.5))
    assert m["reward_margin"] == pytest.approx(-0.25) and m["reward_accuracy"] == 0.0


def test_dpo_hand_values():
    check_dpo_hand_values()


def check_dpo_verifier_pairs_each_logprob_with_its_reference(train_dpo_verifier, start, out, monkeypatch) -> None:
    # The verifier starts as its own reference, so at the first step the reference log-probs of the chosen
    # completions equal the policy's (and likewise for the rejected ones), whatever the model.
    seen = []

    def spy(pc, pr, rc, rr, beta):
        seen.append([t.detach().clone() for t in (pc, pr, rc, rr)])
        return dpo_loss(pc, pr, rc, rr, beta)

    monkeypatch.setitem(train_dpo_verifier.__globals__, "dpo_loss", spy)
    pairs = [("Q: 1+2\n", "1+2=3\nA: 3", "1+2=4\nA: 4"), ("Q: 5*3\n", "5*3=15\nA: 15", "A: 7")]
    from reasonloop.verifiers import DpoVerifierConfig

    train_dpo_verifier(start, pairs, out, DpoVerifierConfig(epochs=0.5, batch_size=2, lr=1e-3))
    pc, pr, rc, rr = seen[0]
    assert not torch.allclose(pc, pr)  # the check below could not tell chosen from rejected otherwise
    assert torch.allclose(rc, pc, atol=1e-5) and torch.allclose(rr, pr, atol=1e-5)


def test_dpo_verifier_pairs_each_logprob_with_its_reference(tmp_path, solver_tiny_dir, monkeypatch):
    check_dpo_verifier_pairs_each_logprob_with_its_reference(
        train_dpo_verifier, solver_tiny_dir, tmp_path / "v", monkeypatch
    )


# --- the tests of the tests ---------------------------------------------------------------------------------------

BUGS = {
    "mc labels grade the rollout without its prefix": (
        mc_step_rollouts,
        "prompt[len(problem.prompt) :] + r.text",
        "r.text",
        check_mc_labels_grade_prefix_plus_rollout,
    ),
    "beam search returns the first finished solution": (
        beam_search,
        "max(finished, key=lambda pv: pv[1])",
        "finished[0]",
        check_beam_returns_best_finished,
    ),
    "top-up restarts the sample index at 0": (
        sample_jsonl,
        "enumerate(samples[start:], start=start)",
        "enumerate(samples[start:])",
        check_top_up_continues_the_sample_index,
    ),
    "top-up samples from index 0 again": (
        sample_jsonl,
        "enumerate(samples[start:], start=start)",
        "enumerate(samples[: n - start])",
        check_top_up_continues_the_sample_index,
    ),
    "DPO loss swaps the reference log-probs": (
        dpo_loss,
        "beta * (policy_chosen_logps - ref_chosen_logps)",
        "beta * (policy_chosen_logps - ref_rejected_logps)",
        check_dpo_hand_values,
    ),
    "DPO verifier passes the reference halves swapped": (
        train_dpo_verifier,
        "ref_logps[:n], ref_logps[n:]",
        "ref_logps[n:], ref_logps[:n]",
        check_dpo_verifier_pairs_each_logprob_with_its_reference,
    ),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_each_check_catches_its_bug(bug, tmp_path, request, monkeypatch):
    fn, old, new, check = BUGS[bug]
    buggy = mutant(fn, old, new)
    with pytest.raises(AssertionError):
        if check is check_top_up_continues_the_sample_index:
            check(buggy, tmp_path=tmp_path)
        elif check is check_dpo_verifier_pairs_each_logprob_with_its_reference:
            check(buggy, request.getfixturevalue("solver_tiny_dir"), tmp_path / "v", monkeypatch)
        else:
            check(buggy)
