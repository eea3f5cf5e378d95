"""`solve` connects every strategy to a generator and a verifier: tested with a fake generator over the arith
world (right or wrong next steps in a known pattern) and the world's exact step labels as an oracle verifier."""

import pytest

from reasonloop.core import Sample
from reasonloop.search.solve import STRATEGIES, solve
from reasonloop.tasks import ArithTask

TASK = ArithTask()
PROBLEMS = TASK.problems("test", 6, seed=3)


class FakeGenerator:
    """Continues a prefix of the canonical solution: sample i is right when i % 3 == 0, else its next result is
    off by one and every later step repeats the slip. With `stop`, it writes one step; without, the rest."""

    def generate(self, prompts, n, *, temperature=1.0, max_new_tokens=64, stop=None, seed=0, **_):
        out = []
        for prompt in prompts:
            problem = next(p for p in PROBLEMS if prompt.startswith(p.prompt))
            done = prompt[len(problem.prompt) :].count("\n")
            right = TASK.steps(problem.meta["solution"])
            rows = []
            for i in range(n):
                rest = right[done:]
                if i % 3 and len(rest) > 1:  # a wrong result in the next operation, carried to the answer
                    lhs, value = rest[0].split("=")
                    rest = [f"{lhs}={int(value) + 1}", f"A: {int(value) + 1}"]
                text = rest[0] if stop else "\n".join(rest)
                final = not stop or len(rest) == 1
                rows.append(
                    Sample(
                        problem.id,
                        text,
                        token_ids=list(range(len(text))),
                        meta={"finish_reason": "eos" if final else "stop"},
                    )
                )
            out.append(rows)
        return out


class OracleVerifier:
    """1.0 while every step so far is right, else 0.0 (the arith world checks steps exactly)."""

    def __init__(self):
        self.tokens_scored = 0

    def _ok(self, prompt, steps):
        problem = next(p for p in PROBLEMS if p.prompt == prompt)
        self.tokens_scored += len(prompt) + sum(len(s) for s in steps)
        return float(all(TASK.step_labels(problem, steps)))

    def score_prefixes(self, prompts, prefixes):
        return [self._ok(p, s) for p, s in zip(prompts, prefixes)]

    score_many = score_prefixes


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "majority"])
def test_every_verifier_guided_strategy_finds_the_answer_with_an_oracle(strategy):
    gen, verifier = FakeGenerator(), OracleVerifier()
    for p in PROBLEMS:
        before = verifier.tokens_scored
        o = solve(p, TASK, gen, verifier, strategy, 8)
        assert o.answer == p.answer and TASK.is_correct(p, o.text), (strategy, p.prompt, o.text)
        assert o.generator_tokens > 0 and o.verifier_tokens == verifier.tokens_scored - before > 0
        assert o.kept


def test_sampling_strategies_count_tokens_and_majority_follows_the_crowd():
    gen, verifier = FakeGenerator(), OracleVerifier()
    p = PROBLEMS[0]
    samples = gen.generate([p.prompt], 6)[0]
    o = solve(p, TASK, gen, None, "majority", 6)
    assert o.generator_tokens == sum(len(s.text) for s in samples) and o.verifier_tokens == 0
    # 4 of 6 samples carry the same wrong answer: the vote takes it, best-of-n with the oracle does not
    assert o.answer != p.answer
    assert solve(p, TASK, gen, verifier, "best_of_n", 6).answer == p.answer
    assert solve(p, TASK, gen, verifier, "weighted_vote", 6).answer == p.answer


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown strategy"):
        solve(PROBLEMS[0], TASK, FakeGenerator(), None, "astar", 4)
    with pytest.raises(ValueError, match="needs a verifier"):
        solve(PROBLEMS[0], TASK, FakeGenerator(), None, "beam", 4)
    with pytest.raises(ValueError, match="budget"):
        solve(PROBLEMS[0], TASK, FakeGenerator(), OracleVerifier(), "beam", 0)


def test_weighted_vote_answers_with_its_best_sample_where_a_right_answer_can_hide_a_wrong_solution():
    from reasonloop.core import Problem
    from reasonloop.tasks import CountdownTask

    task = CountdownTask()
    p = Problem("cd", "Q: 24 from 3 4 6 8\n", "24", {"numbers": [3, 4, 6, 8], "target": 24})
    texts = ["3*8=24\nA: 24", "6*4=25\nA: 24", "4*6=24\nA: 24", "8+6=14\nA: 14"]  # the second states 24 wrongly

    class Fixed:
        def generate(self, prompts, n, **_):
            return [[Sample("cd", t, token_ids=[0] * len(t)) for t in texts[:n]] for _ in prompts]

    class Scores:  # prefers the invalid sample a little over the first valid one, the second valid one most
        tokens_scored = 0

        def score_many(self, prompts, solutions):
            return [{"3*8=24": 0.5, "6*4=25": 0.6, "4*6=24": 0.9, "8+6=14": 0.1}[s[0]] for s in solutions]

    o = solve(p, task, Fixed(), Scores(), "weighted_vote", 4)
    assert o.answer == "24" and o.text == texts[2] and task.is_correct(p, o.text)


def test_beam_lookahead_rolls_candidates_forward_and_pays_for_it():
    gen, verifier = FakeGenerator(), OracleVerifier()
    p = PROBLEMS[0]
    plain = solve(p, TASK, gen, verifier, "beam", 8)
    ahead = solve(p, TASK, gen, verifier, "beam", 8, lookahead=2)
    assert ahead.answer == p.answer and TASK.is_correct(p, ahead.text)
    assert ahead.generator_tokens > plain.generator_tokens and ahead.verifier_tokens >= plain.verifier_tokens
