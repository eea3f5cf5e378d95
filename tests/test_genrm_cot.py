"""GenRM-CoT with step checks: the worlds' checking rationales, verdict parsing, and the verifier on a tiny model."""

import math
import random

import pytest

from reasonloop.core import Problem, Sample
from reasonloop.tasks import ArithTask, CountdownTask
from reasonloop.verifiers.genrm import (
    QUESTION,
    check_pairs,
    check_rationale,
    combine_step_checks,
    parse_checks,
    verifier_prompt,
)

CD = Problem("x", "Q: 30 from 3 4 6\n", "30", {"numbers": [3, 4, 6], "target": 30})


@pytest.mark.parametrize(
    "steps, wrong_at, says",
    [
        (["4+6=10", "10*4=40", "A: 40"], 1, "no 4"),  # the 4 was used up by the first step
        (["4+6=10", "10*3=31", "A: 31"], 1, "10*3=30 not 31"),  # arithmetic
        (["3+4=7", "7*6=42", "A: 42"], 0, "30 unreachable"),  # legal, but nothing from 6 and 7 makes 30
        (["6/4=1", "A: 1"], 0, "6/4 not whole"),
        (["4+6=10", "10*3=30", "A: 31"], 2, "answer 31 not 30"),
        (["4+6=10", "10*3=30", "A: 30", "x"], 3, "not a step"),
    ],
)
def test_countdown_rationale_names_the_first_wrong_step(steps, wrong_at, says):
    checks = CountdownTask().verification_checks(CD, steps)
    assert len(checks) == wrong_at + 1 and all(ok for _, ok in checks[:-1])
    note, ok = checks[-1]
    assert not ok and note.endswith(says)


def test_countdown_rationale_of_a_right_solution_passes_every_step_and_checks_each_fact():
    checks = CountdownTask().verification_checks(CD, ["4+6=10", "10*3=30", "A: 30"])
    assert checks == [
        ("have 3 4 6; 4+6=10; left 3 10; 30 reachable", True),
        ("have 3 10; 10*3=30; left 30; 30 reachable", True),
        ("answer 30 reached", True),
    ]
    # legal steps with no answer line: every step passes, then the closing note fails
    assert CountdownTask().verification_checks(CD, ["4+6=10", "10*3=30"])[-1] == ("no answer", False)


@pytest.mark.parametrize(
    "steps, wrong_at, says",
    [
        (["12+7=19", "19*3=56", "56-5=51", "A: 51"], 1, "19*3=57 not 56"),
        (["12+7=19", "19-5=14", "A: 14"], 1, "next *3 not -5"),  # the operand taken from the question
        (["12+7=19", "20*3=60"], 1, "value 19 not 20"),
        (["12+7=19", "19*3=57", "A: 57"], 2, "answer 57 with 1 operations left"),
        (["12+7=19", "19*3=57", "57-5=52", "A: 50"], 3, "answer 50 not 52"),
        (["12+7=19", "19*3=57", "57-5=52", "52+1=53"], 3, "no operation left"),
    ],
)
def test_arith_rationale_names_the_first_wrong_step(steps, wrong_at, says):
    task = ArithTask()
    p = Problem("a", "Q: 12+7*3-5\n", "52")
    checks = task.verification_checks(p, steps)
    assert len(checks) == wrong_at + 1 and all(ok for _, ok in checks[:-1])
    assert not checks[-1][1] and checks[-1][0].endswith(says)


@pytest.mark.parametrize("task", [ArithTask(), CountdownTask()], ids=["arith", "countdown"])
def test_checks_stop_where_first_error_does_on_mutated_solutions(task):
    """A peer implementation (`first_error`) agrees with the checks on hundreds of corrupted solutions."""
    rng = random.Random(0)
    for p in task.problems("train", 60, seed=3):
        right = task.steps(p.meta["solution"])
        for _ in range(6):
            steps = list(right)
            i = rng.randrange(len(steps))
            a, _, b = steps[i].partition("=")
            steps[i] = rng.choice([f"{a}={int(b) + rng.choice([-1, 1])}" if b.isdigit() else "A: 0", "A: 7"])
            steps = steps[: rng.randint(i + 1, len(steps))]
            checks = task.verification_checks(p, steps)
            first = task.first_error(p, steps)
            if first is not None:
                assert len(checks) == first + 1 and not checks[-1][1]
            assert all(ok for _, ok in checks[:-1])
            if isinstance(task, CountdownTask):  # the verdict is the grade here (arith grades the answer alone)
                assert all(ok for _, ok in checks) == task.is_correct(p, "\n".join(steps))


def test_check_pairs_write_one_line_per_step_and_the_verdict():
    samples = [Sample("x", "3+4=7\n7*6=42\nA: 42", reward=0.0), Sample("x", "4+6=10\n10*3=30\nA: 30", reward=1.0)]
    (p0, c0), (_, c1) = check_pairs([CD], samples, CountdownTask().verification_checks, "\n")
    assert p0 == "Q: 30 from 3 4 6\n3+4=7\n7*6=42\nA: 42\nVerify:\n"
    assert c0 == "have 3 4 6; 3+4=7; left 6 7; 30 unreachable: wrong\nCorrect? No"
    assert c1.count(": ok") == 3 and c1.endswith("answer 30 reached: ok\nCorrect? Yes")


def test_verdict_parsing():
    text = "have 3 4 6; 4+6=10: ok\nsomething else\nanswer 31 not 30: wrong" + QUESTION
    found = parse_checks(text)
    assert found == [(20, True), (len("have 3 4 6; 4+6=10: ok\nsomething else\nanswer 31 not 30: "), False)]
    assert [text[at : at + 2] for at, _ in found] == ["ok", "wr"]
    assert parse_checks("no verdicts here\nok\n: okay") == []  # a verdict is a whole word after ': '
    assert check_rationale([]).endswith("Correct? No")  # nothing checked is never a pass
    # step scores: running products; steps past the checks get min(product, P(Yes)); extra checks are ignored
    assert combine_step_checks([0.5, 0.5], 4, 0.9) == [0.5, 0.25, 0.25, 0.25]
    assert combine_step_checks([0.8, 0.5, 0.1], 2, 0.0) == pytest.approx([0.8, 0.4])
    assert combine_step_checks([], 2, 0.3) == [0.3, 0.3]


@pytest.fixture(scope="module")
def cot_dir(tmp_path_factory, solver_tiny_dir):
    """GenRM-CoT trained on arith step checks of right and slipped solutions (the smoke test of training)."""
    from reasonloop.verifiers import GenRMConfig, train_genrm

    task = ArithTask()
    problems = task.problems("train", 12, seed=100)
    samples = []
    for p in problems:
        steps = task.steps(p.meta["solution"])
        lhs, value = steps[0].split("=")  # a slip in the first operation
        samples += [Sample(p.id, p.meta["solution"], reward=1.0), Sample(p.id, f"{lhs}={int(value) + 1}", reward=0.0)]
    texts = check_pairs(problems, samples, task.verification_checks, task.step_delimiter)
    out = train_genrm(solver_tiny_dir, texts, tmp_path_factory.mktemp("cot") / "g", GenRMConfig(60, 8, 1e-2))
    return out, problems, samples


def test_genrm_cot_scores_right_above_wrong_and_step_scores_line_up(cot_dir):
    from reasonloop.engine import HFEngine
    from reasonloop.verifiers import GenRMVerifier

    out, problems, samples = cot_dir
    task = ArithTask()
    v = GenRMVerifier.from_dir(out, votes=2, max_new_tokens=120, checks=True)
    prompts = [p.prompt for p in problems]
    good = v.score_many(prompts, [task.steps(p.meta["solution"]) for p in problems])
    bad = v.score_many(prompts, [task.steps(s.text) for s in samples[1::2]])
    assert all(0.0 <= x <= 1.0 for x in good + bad)
    assert sum(g > b for g, b in zip(good, bad)) >= 9  # of 12
    assert v.tokens_scored > 0

    # step scores from the rationale, checked against a second reading: sample the same verification again
    # (same seed, same batch), then score each verdict with the engine's plain `logprobs`, prompt cut there
    one = GenRMVerifier.from_dir(out, votes=1, max_new_tokens=120, checks=True, seed=5)
    sols = [task.steps(p.meta["solution"]) for p in problems[:4]] + [task.steps(s.text) for s in samples[1:8:2]]
    got = one.step_scores_many(prompts[:4] * 2, sols)
    assert [len(g) for g in got] == [len(s) for s in sols]
    engine = HFEngine.from_pretrained(out)
    vps = [verifier_prompt(p, "\n".join(s)) for p, s in zip(prompts[:4] * 2, sols)]
    texts = [o[0].text for o in engine.generate(vps, 1, temperature=1.0, max_new_tokens=120, stop=["?"], seed=5)]
    checked = 0
    for vp, text, steps, scores in zip(vps, texts, sols, got):
        rationale = text.removesuffix("\nCorrect")
        cuts = parse_checks(rationale)
        p_ok = [math.exp(engine.logprobs([vp + rationale[:at]], ["o"])[0][0]) for at, _ in cuts]
        p_yes = math.exp(engine.logprobs([vp + rationale + QUESTION], ["Y"])[0][0])
        want, run = [], 1.0
        for i in range(len(steps)):
            run = run * p_ok[i] if i < len(p_ok) else run
            want.append(run if i < len(p_ok) else min(run, p_yes))
        assert scores == pytest.approx(want, abs=1e-5)
        checked += len(cuts)
    assert checked >= 4  # the trained verifier writes step checks
    # a prefix scores as its last step: the chance every step so far is right (its P(Yes) would judge it unfinished)
    prefix = [sols[0][:1]]
    assert one.score_prefixes(prompts[:1], prefix) == [one.step_scores_many(prompts[:1], prefix)[0][-1]]


def test_genrm_cot_scoring_is_deterministic_for_a_seed(cot_dir):
    from reasonloop.verifiers import GenRMVerifier

    out, problems, samples = cot_dir
    prompts, sols = [p.prompt for p in problems], [ArithTask().steps(s.text) for s in samples]
    prompts = [p.prompt for p in problems for _ in range(2)]
    a = GenRMVerifier.from_dir(out, votes=3, max_new_tokens=120, checks=True, seed=1)
    b = GenRMVerifier.from_dir(out, votes=3, max_new_tokens=120, checks=True, seed=1)
    c = GenRMVerifier.from_dir(out, votes=3, max_new_tokens=120, checks=True, seed=2)
    steps_first = b.step_scores_many(prompts, sols)  # scored the other way round first: the same verifications
    assert a.score_many(prompts, sols) == b.score_many(prompts, sols)
    assert a.step_scores_many(prompts, sols) == steps_first
    assert a.score_many(prompts, sols) != c.score_many(prompts, sols)  # another seed samples other verifications
    vs = a.verdicts(prompts[:1], sols[:1])[0]
    assert len(vs.p_yes) == len(vs.step_scores) == len(vs.tokens) == 3 and vs.prompt_tokens > 0


def test_next_token_logprobs_after_each_segment_match_plain_logprobs(tiny_model_dir):
    """One forward pass over a row of segments reads what `logprobs` reads with the prompt cut at each boundary."""
    from reasonloop.engine import HFEngine

    engine = HFEngine.from_pretrained(tiny_model_dir)
    ids = [engine.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("o", "Y")]
    rows = [["Q: 1+2\n", "1+2=3: ", "ok\nCorrect? "], ["Q: 30 from 3 4 6\n4+6=10\nVerify:\n", "x: "]]
    got = engine.next_token_logprobs(rows, ids)
    assert [len(r) for r in got] == [3, 2] and all(len(x) == 2 for r in got for x in r)
    for row, out in zip(rows, got):
        for i in range(len(row)):
            context = "".join(row[: i + 1])
            for j, w in enumerate(("o", "Y")):
                assert out[i][j] == pytest.approx(engine.logprobs([context], [w])[0][0], abs=1e-5)
