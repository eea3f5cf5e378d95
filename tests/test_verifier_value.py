"""Value-head verifiers (ORM, PRM with Monte-Carlo labels): labels, positions, training, scoring."""

import pytest
import torch

from reasonloop.core import Problem, Sample
from reasonloop.engine import HFEngine
from reasonloop.tasks import ArithTask
from reasonloop.verifiers.value import (
    StepExample,
    ValueVerifier,
    ValueVerifierConfig,
    _encode,
    mc_step_values,
    orm_examples,
    train_value_verifier,
)


class FakeRollouts:
    """Completes a prefix with the right rest `round(q * k)` times out of `k`, else with a wrong answer.

    `q` depends on how many steps the prefix holds: known success rates per step.
    """

    def __init__(self, task, rates):
        self.task, self.rates, self.calls = task, rates, []

    def generate(self, prompts, n, **kw):
        self.calls.append((list(prompts), n))
        out = []
        for prompt in prompts:
            problem = next(p for p in PROBLEMS if prompt.startswith(p.prompt))
            done = prompt[len(problem.prompt) :].count("\n")
            steps = self.task.steps(problem.meta["solution"])
            right = "\n".join(steps[done:])
            good = round(self.rates[done] * n)
            out.append([Sample(problem.id, right if i < good else "A: -1") for i in range(n)])
        return out


TASK = ArithTask()
PROBLEMS = TASK.problems("train", 3, seed=7)


def test_mc_values_match_known_success_rates_and_share_prefixes():
    rates = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    gen = FakeRollouts(TASK, rates)
    items = [(p, TASK.steps(p.meta["solution"])) for p in PROBLEMS]
    values = mc_step_values(gen, TASK.grade, items, k=8)
    for (_, steps), v in zip(items, values):
        assert len(v) == len(steps) + 1
        assert v[:-1] == rates[: len(steps)]  # prefixes with 0..n-1 steps: the fake's success rates
        assert v[-1] == 1.0  # the full (correct) solution grades itself
    # one generate call; every prefix is one prompt sampled k times (the engine encodes it once)
    ((prompts, n),) = gen.calls
    assert n == 8 and len(prompts) == len(set(prompts)) == sum(len(s) for _, s in items)
    hard = mc_step_values(gen, TASK.grade, items, k=8, hard=True)
    assert all(x == 1.0 for v in hard for x in v)  # every rate above 0: some rollout succeeds
    wrong = [(PROBLEMS[0], ["1+1=5", "A: 5"])]
    assert mc_step_values(gen, TASK.grade, wrong, k=4)[0][-1] == 0.0


def test_mc_rollouts_reuse_the_prefix_encoding_in_the_engine(solver_tiny_dir):
    engine = HFEngine.from_pretrained(solver_tiny_dir)
    items = [(p, TASK.steps(p.meta["solution"])) for p in PROBLEMS]
    mc_step_values(engine, TASK.grade, items, k=6, max_new_tokens=24)
    prompts = [p.prompt + "".join(s + "\n" for s in steps[:i]) for p, steps in items for i in range(len(steps))]
    assert engine.counts.prefilled == sum(len(engine.encode(x)) for x in prompts)  # once per prefix, not per rollout


def test_positions_are_the_last_token_of_the_prompt_and_of_each_step(char_tokenizer):
    ids, pos = _encode(char_tokenizer, "Q: 1+2\n", ["1+2=3", "A: 3"], "\n")
    text = char_tokenizer.decode(ids)
    assert text.endswith("Q: 1+2\n1+2=3\nA: 3")
    chars = [char_tokenizer.decode([ids[i]]) for i in pos]
    assert chars == ["\n", "3", "3"] and pos[1] == len(ids) - 6 and pos[2] == len(ids) - 1


def test_orm_examples_label_every_step_with_the_outcome():
    ps = [Problem("a", "Q: 1+1\n", "2")]
    ex = orm_examples(ps, [Sample("a", "1+1=2\nA: 2", reward=1.0), Sample("b", "x", reward=1.0)])
    assert ex == [StepExample("Q: 1+1\n", ["1+1=2", "A: 2"], [1.0, 1.0])]  # unknown problems are skipped
    with pytest.raises(ValueError, match="one label per step"):
        StepExample("Q", ["a"], [1.0, 0.0])


def test_orm_trains_to_rank_correct_above_incorrect_and_resumes(tmp_path, solver_tiny_dir):
    problems = TASK.problems("train", 24, seed=100)
    samples = []
    for p in problems:
        steps = TASK.steps(p.meta["solution"])
        lhs, value = steps[0].split("=")
        bad = "\n".join([f"{lhs}={int(value) + 1}"] + steps[1:])
        samples += [Sample(p.id, p.meta["solution"], reward=1.0), Sample(p.id, bad, reward=0.0)]
    examples = orm_examples(problems, samples)
    cfg = ValueVerifierConfig(epochs=60, batch_size=8, lr=1e-2)
    out = train_value_verifier(solver_tiny_dir, examples, tmp_path / "orm", cfg)
    orm = ValueVerifier.from_dir(out)
    scores = orm.score_many([e.prompt for e in examples], [e.steps for e in examples])
    wins = sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(problems)))
    assert wins >= 18  # of 24; a verifier at chance gets there with probability 0.011
    state = torch.load(out.parent / "train" / "last" / "trainer_state.pt", weights_only=False)
    assert state["history"][-1]["bce"] < 0.5 < state["history"][0]["bce"]  # below chance (0.69) by the end
    p, steps = problems[0], examples[0].steps
    per_step = orm.score_steps(p, steps)
    assert len(per_step) == len(steps) and all(0 < v < 1 for v in per_step)
    assert orm.score(p, steps) == pytest.approx(per_step[-1], abs=1e-6)
    assert ValueVerifier.from_dir(out, aggregate="min").score(p, steps) == pytest.approx(min(per_step), abs=1e-6)
    assert train_value_verifier(solver_tiny_dir, examples, tmp_path / "orm", cfg) == out  # done: not redone
    with pytest.raises(ValueError, match="unknown aggregate"):
        ValueVerifier.from_dir(out, aggregate="max")
    with pytest.raises(ValueError, match="no examples"):
        train_value_verifier(solver_tiny_dir, [], tmp_path / "none")


def _pairs_and_items(n=24):
    problems = TASK.problems("train", n, seed=100)
    pairs, items = [], []
    for p in problems:
        steps = TASK.steps(p.meta["solution"])
        lhs, value = steps[0].split("=")
        bad = [f"{lhs}={int(value) + 1}"] + steps[1:]
        pairs.append((p.prompt, steps, bad))
        items += [(p, steps), (p, bad)]
    return problems, pairs, items


def test_bradley_terry_learns_its_pairs(tmp_path, solver_tiny_dir):
    from reasonloop.verifiers import train_bt_verifier

    _, pairs, _ = _pairs_and_items()
    out = train_bt_verifier(
        solver_tiny_dir, pairs, tmp_path / "bt", ValueVerifierConfig(epochs=40, batch_size=8, lr=1e-2)
    )
    bt = ValueVerifier.from_dir(out, aggregate="last")
    good = bt.score_many([p for p, _, _ in pairs], [g for _, g, _ in pairs])
    bad = bt.score_many([p for p, _, _ in pairs], [b for _, _, b in pairs])
    assert sum(g > b for g, b in zip(good, bad)) >= 18
    with pytest.raises(ValueError, match="no pairs"):
        train_bt_verifier(solver_tiny_dir, [], tmp_path / "none")


def test_prm_and_pav_train_on_mc_labels_and_combine(tmp_path, solver_tiny_dir):
    from reasonloop.verifiers import PavVerifier, pav_examples, prm_examples

    _, _, items = _pairs_and_items(8)
    # known values: the right solution keeps 0.5 then 1.0 after each step, the wrong one drops to 0 at its slip
    values = [[0.5] + [1.0] * len(s) if i % 2 == 0 else [0.5] + [0.0] * len(s) for i, (_, s) in enumerate(items)]
    prm_ex = prm_examples(items, values)
    assert prm_ex[0].start == 0.5 and prm_ex[1].labels == [0.0] * len(items[1][1])
    base_ex, prover_ex = pav_examples(items, values, k=2)
    assert prover_ex[0].start == 0.75 and prover_ex[0].labels == [1.0] * len(items[0][1])
    cfg = ValueVerifierConfig(epochs=30, batch_size=8, lr=1e-2)
    prm = ValueVerifier.from_dir(train_value_verifier(solver_tiny_dir, prm_ex, tmp_path / "prm", cfg), aggregate="min")
    prover = ValueVerifier.from_dir(train_value_verifier(solver_tiny_dir, prover_ex, tmp_path / "prover", cfg))
    p, steps = items[1]
    v = prm.values([p.prompt], [steps])[0]
    assert abs(v[0] - 0.5) < 0.25  # the prompt's position learned its start target
    pav = PavVerifier(prm, prover, alpha=0.5)
    q_pi, q_mu = prm.values([p.prompt], [steps])[0], prover.values([p.prompt], [steps])[0]
    expected = [q_pi[i + 1] + 0.5 * (q_mu[i + 1] - q_mu[i]) for i in range(len(steps))]
    assert pav.score_steps(p, steps) == pytest.approx(expected, abs=1e-6)
    assert pav.score(p, steps) == pytest.approx(min(expected), abs=1e-6)
    prompts = [q.prompt for q, _ in items]
    good = pav.score_many(prompts[0::2], [s for _, s in items[0::2]])
    bad = pav.score_many(prompts[1::2], [s for _, s in items[1::2]])
    assert sum(g > b for g, b in zip(good, bad)) >= 6  # of 8
