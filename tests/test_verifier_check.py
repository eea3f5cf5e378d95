"""The step checker (log P(claim | left side) of each step in isolation) and the checked verifier, by hand."""

import json
import math

import pytest
import torch

from reasonloop.core import ReasonloopError
from reasonloop.verifiers.check import CheckedVerifier, StepChecker, claim_split


def _by_hand(model, tokenizer, step: str) -> float:
    """log P(claim | left side), one claim token at a time, each from a forward pass over the text before it."""
    left, claim = claim_split(step)
    ids = tokenizer(left + claim)["input_ids"]
    n = len(tokenizer(claim, add_special_tokens=False)["input_ids"])
    total = 0.0
    with torch.no_grad():
        for t in range(len(ids) - n, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
            total += float(logits.log_softmax(-1)[ids[t]])
    return total


def test_claim_logprobs_by_hand_batched_and_cached(solver_tiny_dir):
    checker = StepChecker.from_dir(solver_tiny_dir, batch_size=2)  # batches of 2: padding is exercised
    steps = ["12+3=15", "A: 15", "7*8=56", "12+3=15", "100-1=99", "x=y=3"]
    got = checker.claim_logprobs(steps)
    assert got[1] is None and got[0] == got[3]
    for step, lp in zip(steps, got):
        if lp is not None:
            assert lp == pytest.approx(_by_hand(checker.model, checker.tokenizer, step), abs=1e-4)
            assert lp < 0
    read = checker.tokens_scored
    assert read > 0 and checker.claim_logprobs(["7*8=56", "A: 1"]) == [got[2], None]
    assert checker.tokens_scored == read  # cached: nothing read again
    # the least likely claim of each solution; 0.0 when none has a claim
    assert checker.least_likely([["12+3=15", "7*8=56", "A: 56"], ["A: 3"], []]) == [min(got[0], got[2]), 0.0, 0.0]


class _Value:
    """A value verifier whose value after each step is given, by the solution's first step."""

    tokens_scored = 5

    def __init__(self, values: dict[str, list[float]]):
        self.values = values

    def step_scores_many(self, prompts, solutions):
        return [self.values[s[0]][: len(s)] for s in solutions]

    def score_many(self, prompts, solutions):
        return [self.values[s[0]][len(s) - 1] for s in solutions]

    def score_prefixes(self, prompts, prefixes):
        return self.score_many(prompts, prefixes)


class _Checker:
    tokens_scored = 7

    def __init__(self, lps: dict[str, float]):
        self.lps = lps

    def least_likely(self, solutions):
        return [min([self.lps[s] for s in steps if s in self.lps], default=0.0) for steps in solutions]


def test_checked_verifier_shifts_the_log_odds_by_the_least_likely_claim():
    value = _Value({"3+4=7": [0.6, 0.5, 0.8], "2+7=9": [0.5, 0.9], "A: 9": [0.5]})
    checker = _Checker({"3+4=7": -0.1, "7*1=7": -3.0, "2+7=9": -1.0})
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    v = CheckedVerifier(value, checker, weight=2.0)
    sols = [["3+4=7", "7*1=7", "A: 7"], ["2+7=9", "A: 9"], ["A: 9"]]
    got = v.score_many(["q"] * 3, sols)
    assert got[0] == pytest.approx(sig(logit(0.8) + 2.0 * -3.0))  # the worst claim counts, not the mean
    assert got[1] == pytest.approx(sig(logit(0.9) + 2.0 * -1.0))
    assert got[2] == pytest.approx(0.5)  # no claim: the verifier's own score
    # after each step: the value there, shifted by the least likely claim so far
    assert v.step_scores_many(["q"], [sols[0]])[0] == pytest.approx(
        [sig(logit(0.6) - 0.2), sig(logit(0.5) - 6.0), sig(logit(0.8) - 6.0)]
    )
    assert v.score_prefixes(["q"], [sols[0][:1]]) == pytest.approx([sig(logit(0.6) - 0.2)])
    assert v.tokens_scored == 12
    # weight 0 is the verifier alone; a negative weight is refused
    assert CheckedVerifier(value, checker, 0.0).score_many(["q"], [sols[0]]) == pytest.approx([0.8])
    with pytest.raises(ValueError, match="weight"):
        CheckedVerifier(value, checker, -1.0)


def test_the_checker_learns_the_worlds_claims_and_worlds_without_claims_are_refused(tmp_path, solver_tiny_dir,
                                                                                    monkeypatch):  # fmt: skip
    from reasonloop.recipes import common
    from reasonloop.tasks import ArithTask, ExtractTask

    seen = []
    monkeypatch.setattr(common, "finetune_and_save", lambda start, pairs, ckpt, *a, **kw: seen.append(pairs))
    task = ArithTask()
    common.train_step_checker(solver_tiny_dir, task, tmp_path / "c", tmp_path / "t", 50, seed=3)
    (pairs,) = seen
    facts = task.facts(50, seed=3 + 7919)
    assert len(pairs) == 50 and [left + claim for left, claim in pairs] == facts
    assert all(left.endswith("=") and "=" not in claim for left, claim in pairs)
    with pytest.raises(ReasonloopError, match="extract: its facts have no claims"):
        common.train_step_checker(solver_tiny_dir, ExtractTask(), tmp_path / "e", tmp_path / "t2", 5)


def test_the_checker_on_a_world_without_claims_is_one_line_before_anything_runs(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main

    sets = [f"model={solver_tiny_dir}", "task=extract", "verifier=bt", "verifier_check=true"]
    assert main(["selfplay", "--run-dir", str(tmp_path / "run")] + [x for s in sets for x in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: extract: its facts have no claims (`left=claim`) for a step checker to learn"
    assert not (tmp_path / "run").exists()


def test_selfplay_with_the_step_checker(tmp_path, solver_tiny_dir):
    """verifier_check: the checker is trained once (RUN/checker) and every round's verifier is the value model
    plus it, by a manifest that loads to the same scores as the two put together by hand."""
    from reasonloop.recipes.selfplay import SelfPlayConfig, run_selfplay
    from reasonloop.verifiers import ValueVerifier
    from reasonloop.verifiers.registry import load_verifier
    from tests.test_selfplay import TINY

    cfg = SelfPlayConfig(model=str(solver_tiny_dir), **TINY, verifier="bt", verifier_check=True, check_weight=0.5)
    records = run_selfplay(cfg, tmp_path / "run", log=lambda *_: None)["records"]
    run = tmp_path / "run"
    assert (run / "checker" / "config.json").exists()
    for r in (1, 2):
        vdir = run / f"round{r}" / "verifier"
        spec = json.loads((vdir / "reasonloop_verifier.json").read_text())
        assert spec == {"kind": "checked", "model": "verifier", "aggregate": "last", "checker": "../../checker",
                        "weight": 0.5}  # fmt: skip
        assert records[r]["auroc_within"] is None or 0 <= records[r]["auroc_within"] <= 1
    loaded = load_verifier(run / "round2" / "verifier")
    by_hand = CheckedVerifier(ValueVerifier.from_dir(run / "round2" / "verifier" / "verifier"),
                              StepChecker.from_dir(run / "checker"), 0.5)  # fmt: skip
    sols = [["1+2=3", "3*4=12", "A: 12"], ["1+2=4", "A: 4"]]
    assert loaded.score_many(["Q: 1+2*4\n"] * 2, sols) == pytest.approx(by_hand.score_many(["Q: 1+2*4\n"] * 2, sols))
    plain = ValueVerifier.from_dir(run / "round2" / "verifier" / "verifier").score_many(["Q: 1+2*4\n"] * 2, sols)
    assert loaded.score_many(["Q: 1+2*4\n"] * 2, sols) != pytest.approx(plain)  # the checker moved the scores


def test_the_checker_with_rl_dense_rewards_is_refused_up_front():
    from reasonloop.recipes.selfplay import SelfPlayConfig

    with pytest.raises(ValueError, match="verifier_check: update rl reads V"):
        SelfPlayConfig(verifier_check=True, update="rl", verifier="orm")
    SelfPlayConfig(verifier_check=True, update="rl", verifier="bt")  # no dense rewards from a BT verifier
