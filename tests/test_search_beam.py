"""Beam search on hand-built trees whose best leaf is known, and on a real generator with an exact verifier."""

import pytest

from reasonloop.search.beam import beam_search, generator_expand

# A tree where the verifier's favourites at depths 1 and 2 lead to poor leaves: the best leaf (0.95)
# sits under the worst child at depth 1 and the worst node at depth 2, so only a beam of 4 keeps it.
TREE = {
    (): ["a", "b", "c"],
    ("a",): ["a1", "a2"],
    ("b",): ["b1"],
    ("c",): ["c1"],
    ("a", "a1"): ["a1x"],
    ("a", "a2"): ["a2x"],
    ("b", "b1"): ["b1x"],
    ("c", "c1"): ["c1x"],
}
VALUES = {
    ("a",): 0.9, ("b",): 0.6, ("c",): 0.5,
    ("a", "a1"): 0.8, ("a", "a2"): 0.7, ("b", "b1"): 0.4, ("c", "c1"): 0.3,
    ("a", "a1", "a1x"): 0.1, ("a", "a2", "a2x"): 0.2, ("b", "b1", "b1x"): 0.5, ("c", "c1", "c1x"): 0.95,
}  # fmt: skip


def expand(prefixes, k):
    out = []
    for p in prefixes:
        children = TREE[tuple(p)][:k]
        out.append([(c, tuple(p) + (c,) not in TREE, 2) for c in children])
    return out


def score(prefixes):
    return [VALUES[tuple(p)] for p in prefixes]


def test_narrow_beams_fall_into_the_trap_wide_beams_find_the_optimum():
    assert beam_search(expand, score, beam_width=1).steps == ["a", "a1", "a1x"]
    assert beam_search(expand, score, beam_width=2).steps == ["a", "a2", "a2x"]  # keeps a1, a2 at depth 2
    assert beam_search(expand, score, beam_width=3).steps == ["b", "b1", "b1x"]  # c1 drops out at depth 2
    wide = beam_search(expand, score, beam_width=4)
    assert wide.steps == ["c", "c1", "c1x"] and wide.score == pytest.approx(0.95) and wide.finished
    assert len(wide.kept) == 4
    # 3 + 4 + 4 candidates were generated (2 tokens each) and scored
    assert wide.generator_tokens == 2 * (3 + 4 + 4) and wide.verifier_calls == 3 + 4 + 4


def test_expansion_limit_and_depth_limit():
    # one expansion per beam: only the first child is ever seen
    assert beam_search(expand, score, beam_width=3, expansions=1).steps == ["a", "a1", "a1x"]
    partial = beam_search(expand, score, beam_width=3, max_depth=2)
    assert not partial.finished and partial.steps == ["a"] and partial.kept == []


def test_duplicate_expansions_count_once():
    dup = lambda ps, k: [[("s", True, 1)] * k for _ in ps]  # noqa: E731
    res = beam_search(dup, lambda ps: [1.0] * len(ps), beam_width=2, expansions=5)
    assert res.steps == ["s"] and res.verifier_calls == 1 and res.generator_tokens == 5


def test_bad_arguments():
    with pytest.raises(ValueError):
        beam_search(expand, score, beam_width=0)


def test_beam_search_with_a_generator_and_an_exact_step_verifier(solver_tiny_dir):
    from reasonloop.engine import HFEngine
    from reasonloop.tasks import ArithTask

    task = ArithTask()
    engine = HFEngine.from_pretrained(solver_tiny_dir)
    problems = task.problems("train", 20, seed=100)  # memorised by the solver, some better than others
    greedy = engine.generate([p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=48)
    problem = next(p for p, g in zip(problems, greedy) if task.is_correct(p, g[0].text))
    # oracle process verifier: the fraction of steps that are right so far (exact labels of the arith world)
    oracle = lambda ps: [sum(task.step_labels(problem, p)) / len(p) for p in ps]  # noqa: E731
    before = engine.counts.copy()
    # 2 beams x 8 tempered samples a step: enough that a right next step is among them for a problem greedy
    # solves, whatever the seed draws (with 3 samples at temperature 1 one seed drew only wrong first steps)
    res = beam_search(
        generator_expand(engine, problem.prompt, temperature=0.7, max_new_tokens=24, seed=1),
        oracle,
        beam_width=2,
        expansions=8,
        max_depth=8,
    )
    assert res.finished and task.is_correct(problem, "\n".join(res.steps))
    assert res.generator_tokens == (engine.counts - before).generated > 0
