"""The labels value-head verifiers learn from: outcome labels, Monte-Carlo step values, and where they are read.

Fast and model-free: a scripted generator and a task whose grading is an exact string match, so every string
`mc_step_values` builds and grades is pinned by hand. (Training and scoring: tests/test_verifier_value.py.)
"""

from types import SimpleNamespace

import pytest
import torch

from reasonloop.core import Problem, Sample
from reasonloop.verifiers.value import StepExample, _batch, _encode, mc_step_values, orm_examples, prm_examples

DELIM = " | "  # not the default, so a step joined with "\n" would not grade
P1 = Problem("p1", "Q1?", "c", {"solution": "a | b | c"})
P2 = Problem("p2", "Q2?", "y", {"solution": "x | y"})


class ExactTask:
    """Right means exactly the reference solution; records what it was asked to grade."""

    def __init__(self):
        self.graded = []

    def is_correct(self, problem, completion):
        self.graded.append((problem.id, completion))
        return completion == problem.meta["solution"]

    def __call__(self, problem, completion):  # the same check as a grader, for code that takes one
        return SimpleNamespace(score=float(self.is_correct(problem, completion)))


class Script:
    """From a prefix of `done` steps of a problem, the first `wins[(id, done)]` of the `n` rollouts write the rest of
    the reference solution; the others write a wrong ending."""

    def __init__(self, wins):
        self.wins, self.calls = wins, []

    def generate(self, prompts, n, **kw):
        self.calls.append((list(prompts), n, kw))
        out = []
        for prompt in prompts:
            problem = P1 if prompt.startswith(P1.prompt) else P2
            done = prompt[len(problem.prompt) :].count(DELIM)
            rest = DELIM.join(problem.meta["solution"].split(DELIM)[done:])
            out.append([Sample(problem.id, rest if i < self.wins[(problem.id, done)] else "wrong") for i in range(n)])
        return out


def test_mc_step_values_are_the_success_rates_of_prefix_plus_rollout():
    wins = {("p1", 0): 1, ("p1", 1): 2, ("p1", 2): 4, ("p2", 0): 0, ("p2", 1): 3}
    gen, task = Script(wins), ExactTask()
    items = [(P1, ["a", "b", "c"]), (P2, ["x", "z"])]  # P2's solution is wrong at its last step
    values = mc_step_values(gen, task, items, 4, delimiter=DELIM, temperature=0.7, max_new_tokens=11, seed=5)
    assert values == [[0.25, 0.5, 1.0, 1.0], [0.0, 0.75, 0.0]]
    # one call: every prefix that is not the whole solution, once, sampled 4 times, with the caller's settings
    ((prompts, n, kw),) = gen.calls
    assert prompts == ["Q1?", "Q1?a | ", "Q1?a | b | ", "Q2?", "Q2?x | "] and n == 4
    assert kw == {"temperature": 0.7, "max_new_tokens": 11, "seed": 5}
    # each rollout is graded after its prefix (without the prompt); the whole solutions are graded as they are
    assert ("p1", "a | b | c") in task.graded and ("p1", "a | wrong") in task.graded
    assert ("p2", "x | y") in task.graded and ("p2", "x | z") in task.graded
    assert all(not c.startswith("Q") for _, c in task.graded)
    assert len(task.graded) == 5 * 4 + 2
    hard = mc_step_values(Script(wins), ExactTask(), items, 4, delimiter=DELIM, hard=True)
    assert hard == [[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]


def test_mc_step_values_defaults_and_edge_cases():
    gen = Script({("p1", 0): 1, ("p1", 1): 1, ("p1", 2): 1})
    mc_step_values(gen, ExactTask(), [(P1, ["a", "b", "c"])], 2, delimiter=DELIM)
    assert gen.calls[0][2] == {"temperature": 1.0, "max_new_tokens": 96, "seed": 0}
    # no steps: nothing to roll out, no generator call; the empty solution grades itself
    quiet = Script({})
    assert mc_step_values(quiet, ExactTask(), [(P1, [])], 4) == [[0.0]] and quiet.calls == []
    assert mc_step_values(quiet, ExactTask(), [], 4) == [] and quiet.calls == []
    # the default delimiter is a newline
    nl = Problem("n", "Q:", "2", {"solution": "1+1=2\nA: 2"})
    task = ExactTask()
    values = mc_step_values(_Rest(nl), task, [(nl, ["1+1=2", "A: 2"])], 3)
    assert values == [[1.0, 1.0, 1.0]] and ("n", "1+1=2\nA: 2") in task.graded


class _Rest:
    """Every rollout writes the rest of `problem`'s newline-delimited solution."""

    def __init__(self, problem):
        self.problem = problem

    def generate(self, prompts, n, **kw):
        steps = self.problem.meta["solution"].split("\n")
        return [[Sample("n", "\n".join(steps[p.count("\n") :])) for _ in range(n)] for p in prompts]


def test_orm_examples_label_with_the_outcome_and_skip_what_cannot_be_labelled():
    ps = [Problem("a", "Q: a\n", "2"), Problem("b", "Q: b\n", "3")]
    samples = [
        Sample("a", "s1 | s2", reward=1.0),
        Sample("b", "t1", reward=0.5),  # partial credit is not right
        Sample("a", "u1 | u2 | u3", reward=0.0),
        Sample("a", "v1", reward=None),  # ungraded: skipped
        Sample("a", " | ", reward=1.0),  # no steps: skipped
        Sample("zz", "w1", reward=1.0),  # unknown problem: skipped
    ]
    assert orm_examples(ps, samples, delimiter=DELIM) == [
        StepExample("Q: a\n", ["s1", "s2"], [1.0, 1.0]),
        StepExample("Q: b\n", ["t1"], [0.0]),
        StepExample("Q: a\n", ["u1", "u2", "u3"], [0.0, 0.0, 0.0]),
    ]
    assert orm_examples(ps, [Sample("a", "s1\ns2", reward=1.0)])[0].steps == ["s1", "s2"]  # default delimiter


def test_prm_examples_take_the_prefix_values():
    items = [(P1, ["a", "b", "c"]), (P2, ["x"])]
    ex = prm_examples(items, [[0.25, 0.5, 0.75, 1.0], [0.4, 0.0]])
    assert ex == [
        StepExample("Q1?", ["a", "b", "c"], [0.5, 0.75, 1.0], start=0.25),
        StepExample("Q2?", ["x"], [0.0], 0.4),
    ]


def test_step_example_needs_one_label_per_step():
    with pytest.raises(ValueError, match="one label per step, got 2 for 1"):
        StepExample("Q", ["a"], [1.0, 0.0])
    with pytest.raises(ValueError, match="got 0 for 0"):
        StepExample("Q", [], [])
    assert StepExample("Q", ["a"], [1.0]).start is None


def test_encode_reads_the_value_at_the_last_token_of_the_prompt_and_of_each_step(char_tokenizer):
    prompt = "Q: 7\n"
    p_ids = char_tokenizer(prompt)["input_ids"]
    ids, pos = _encode(char_tokenizer, prompt, ["12", "ab", "A: 7"], DELIM)
    assert ids == p_ids + char_tokenizer("12 | ab | A: 7", add_special_tokens=False)["input_ids"]
    # one token per character: "12 | ab | A: 7" -> '2' at 1, 'b' at 6, '7' at 13
    assert pos == [len(p_ids) - 1, len(p_ids) + 1, len(p_ids) + 6, len(p_ids) + 13]
    assert [char_tokenizer.decode([ids[i]]) for i in pos[1:]] == ["2", "b", "7"]
    # an empty step has no token of its own: it is read where the previous one was
    ids, pos = _encode(char_tokenizer, prompt, ["", "9"], "\n")
    assert pos == [len(p_ids) - 1, len(p_ids) - 1, len(p_ids) + 1]
    assert _encode(char_tokenizer, prompt, [], "\n") == (p_ids, [len(p_ids) - 1])


def test_batch_pads_and_marks_the_valid_positions():
    rows = [([5, 6, 7], [0, 2]), ([8], [0])]
    ids, attention, positions, valid = _batch(SimpleNamespace(pad_token_id=9), rows)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert attention.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert positions.tolist() == [[0, 2], [0, 0]] and valid.tolist() == [[True, True], [True, False]]
    assert ids.dtype == positions.dtype == attention.dtype == torch.long and valid.dtype == torch.bool
    ids, *_ = _batch(SimpleNamespace(pad_token_id=None), rows)  # no pad token: pad with 0
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]


class BosCharTokenizer:
    """One token per character (id = code point), with a BOS (id 1) unless `add_special_tokens=False`."""

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        ids = ([1] if add_special_tokens else []) + [ord(c) for c in text]
        out = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = ([(0, 0)] if add_special_tokens else []) + [(i, i + 1) for i in range(len(text))]
        return out


def test_encode_adds_special_tokens_to_the_prompt_only_and_reads_one_character_steps():
    ids, pos = _encode(BosCharTokenizer(), "Q:", ["9", "", "ab"], "\n")
    # [BOS] Q : | 9 \n \n a b  -> the prompt ends at 2; '9' at 3; the empty step is read at the delimiter before
    # it (4), the last token that starts before its end; 'b' at 7
    assert ids == [1, ord("Q"), ord(":"), ord("9"), 10, 10, ord("a"), ord("b")]
    assert pos == [2, 3, 4, 7]
