"""MCTS, tree of thoughts, beam lookahead and DVTS on hand-built trees whose optimum and costs are known."""

import random

import pytest

from reasonloop.search import beam_search, dvts, mcts, tot_bfs, tot_dfs


class Fake:
    """A hand-built tree: `tree[path]` lists the children, a path not in `tree` is final; a step costs len(step) tokens.

    Counts what it hands out, so the searches' own accounting can be checked against it.
    """

    def __init__(self, tree, values):
        self.tree, self.values = tree, values
        self.tokens = 0
        self.scored: list[tuple[str, ...]] = []

    def expand(self, prefixes, k):
        out = []
        for p in prefixes:
            children = self.tree[tuple(p)][:k]  # KeyError: a search expanded a finished solution
            self.tokens += sum(len(c) for c in children)
            out.append([(c, tuple(p) + (c,) not in self.tree, len(c)) for c in children])
        return out

    def score(self, prefixes):
        self.scored += [tuple(p) for p in prefixes]
        return [self.values[tuple(p)] for p in prefixes]


# The verifier's favourite first step `a` leads only to poor final steps; the best leaf (1.0) is under `b`,
# behind `b1`, which the verifier ranks below its sibling `b2`.
TRAP = {
    (): ["a", "b"],
    ("a",): ["a1", "a2"],
    ("b",): ["b1", "b2"],
    ("b", "b1"): ["b1x"],
    ("b", "b2"): ["b2x"],
}
TRAP_VALUES = {
    ("a",): 0.9, ("b",): 0.5,
    ("a", "a1"): 0.3, ("a", "a2"): 0.2, ("b", "b1"): 0.4, ("b", "b2"): 0.6,
    ("b", "b1", "b1x"): 1.0, ("b", "b2", "b2x"): 0.1,
}  # fmt: skip
TRAP_TOKENS = 2 * 1 + 4 * 2 + 2 * 3  # every step of the tree generated once


# --- MCTS ---


def test_mcts_finds_the_optimum_where_greedy_falls_into_the_trap():
    greedy = beam_search(*_fns(TRAP, TRAP_VALUES), beam_width=1, expansions=2)
    assert greedy.steps == ["a", "a1"] and greedy.score == pytest.approx(0.3)
    res = mcts(*_fns(TRAP, TRAP_VALUES), simulations=32, expansions=2)
    assert res.steps == ["b", "b1", "b1x"] and res.score == pytest.approx(1.0) and res.finished


def test_mcts_accounting_is_exact():
    # one simulation: the root's expansion (a, b) plus the first leaf's evaluation and expansion (2 steps of 2 tokens)
    fake = Fake(TRAP, TRAP_VALUES)
    one = mcts(fake.expand, fake.score, simulations=1, expansions=2)
    assert (one.generator_tokens, one.verifier_calls, one.rollout_calls) == (2 + 4, 1, 0) == (fake.tokens, 1, 0)
    # two simulations: the second goes to the other first step whatever the tie-break (its first-play value wins)
    two = mcts(*_fns(TRAP, TRAP_VALUES), simulations=2, expansions=2)
    assert (two.generator_tokens, two.verifier_calls) == (2 + 4 + 4, 2)
    assert {p: n for p, n, _ in two.tree} == {(): 2, ("a",): 1, ("b",): 1}
    # enough simulations to exhaust the tree: every node scored exactly once, every step generated once
    fake = Fake(TRAP, TRAP_VALUES)
    full = mcts(fake.expand, fake.score, simulations=200, expansions=2)
    assert (full.generator_tokens, full.verifier_calls) == (TRAP_TOKENS, len(TRAP_VALUES)) == (fake.tokens, 8)
    assert sorted(fake.scored) == sorted(TRAP_VALUES)
    tree = {p: (n, q) for p, n, q in full.tree}
    assert set(tree) == {()} | set(TRAP_VALUES)
    assert tree[()][0] == 200 == tree[("a",)][0] + tree[("b",)][0]
    for path in [("a", "a1"), ("a", "a2"), ("b", "b1", "b1x"), ("b", "b2", "b2x")]:  # final: they keep their value
        assert tree[path][1] == pytest.approx(TRAP_VALUES[path])


def test_mcts_visit_counts_follow_puct_and_mix_rollouts():
    # two final steps; value = 0.5 * verifier + 0.5 * rollout (always 0.5): x is worth 0.75, y 0.25.
    # sim 1 tries one at random, sim 2 the other (first-play value = root mean, plus c * P * sqrt(1) = 0.5);
    # sims 3 and 4: x scores 0.75 + 0.5 * sqrt(N) / 2 (N = 2) and 0.75 + 0.5 * sqrt(3) / 3, above y's 0.25 + ...
    tree, values = {(): ["x", "y"]}, {("x",): 1.0, ("y",): 0.0}
    res = mcts(*_fns(tree, values), simulations=4, rollout=lambda ps: [0.5] * len(ps), value_weight=0.5)
    assert res.tree == [((), 4, pytest.approx((3 * 0.75 + 0.25) / 4)), (("x",), 3, 0.75), (("y",), 1, 0.25)]
    assert res.steps == ["x"] and (res.verifier_calls, res.rollout_calls, res.generator_tokens) == (2, 2, 2)
    # rollouts alone (value_weight=0): the verifier is never called and the rollouts decide
    only = mcts(*_fns(tree, values), simulations=4, rollout=lambda ps: [float(p == ["y"]) for p in ps], value_weight=0)
    assert only.steps == ["y"] and only.score == 1.0 and (only.verifier_calls, only.rollout_calls) == (0, 2)


def test_mcts_is_deterministic_for_a_seed_and_the_seed_breaks_ties():
    runs = []
    for global_seed in range(6):  # the global generator must not matter
        random.seed(global_seed)
        runs.append(mcts(*_fns(TRAP, TRAP_VALUES), simulations=12, expansions=2, seed=3))
    assert all(run == runs[0] for run in runs)
    # with one simulation the first step is a tie between a and b, broken by the seed
    chosen = {mcts(*_fns(TRAP, TRAP_VALUES), simulations=1, seed=s).tree[1][0] for s in range(10)}
    assert chosen == {("a",), ("b",)}


def test_puct_exploration_grows_with_sqrt_of_parent_visits():
    # x (1.0) and y (0.0), c_puct = 6.5: after one visit each, sim 3 picks x (equal visits, Q decides);
    # sim 4 (N = 3, x visited twice): x - y = 1 + 6.5 * 0.5 * sqrt(3) * (1/3 - 1/2) = 0.06 > 0, so x again
    tree, values = {(): ["x", "y"]}, {("x",): 1.0, ("y",): 0.0}
    res = mcts(*_fns(tree, values), simulations=4, c_puct=6.5)
    assert {p: n for p, n, _ in res.tree} == {(): 4, ("x",): 3, ("y",): 1}


def test_mcts_answers_the_best_mean_finished_solution_not_the_most_visited():
    # s is final (0.7), t (0.1) leads to t1 (final, 1.0). After sims 1-2 visit s and t, sim k picks t once
    # 0.1 + 0.5 sqrt(N) / 2 > 0.7 + 0.5 sqrt(N) / N with N = k - 1: first at N = 10, so sim 11 reaches t1.
    tree = {(): ["s", "t"], ("t",): ["t1"]}
    values = {("s",): 0.7, ("t",): 0.1, ("t", "t1"): 1.0}
    res = mcts(*_fns(tree, values), simulations=11)
    assert {p: n for p, n, _ in res.tree} == {(): 11, ("s",): 9, ("t",): 2, ("t", "t1"): 1}
    assert (res.steps, res.score, res.finished) == (["t", "t1"], 1.0, True)
    assert mcts(*_fns(tree, values), simulations=10).steps == ["s"]


def test_mcts_without_a_finished_solution_returns_the_most_visited_path():
    # depth 1 only: a (0.9) and b (0.5) are evaluated once each, then a wins sim 3 (0.9 + 0.5 sqrt(2) / 2 > 0.5 + same)
    res = mcts(*_fns(TRAP, TRAP_VALUES), simulations=3, expansions=2, max_depth=1)
    assert (res.steps, res.score, res.finished) == (["a"], pytest.approx(0.9), False)
    assert {p: n for p, n, _ in res.tree} == {(): 3, ("a",): 2, ("b",): 1}
    assert (res.generator_tokens, res.verifier_calls) == (2, 2)


def test_mcts_bad_arguments():
    expand, score = _fns(TRAP, TRAP_VALUES)
    with pytest.raises(ValueError):
        mcts(expand, score, rollout=lambda ps: [0.0] * len(ps))  # value_weight=1 would ignore it
    with pytest.raises(ValueError):
        mcts(expand, score, value_weight=0.5)  # nothing to mix with
    with pytest.raises(ValueError):
        mcts(expand, score, simulations=0)


# --- beam search with lookahead ---


def test_lookahead_escapes_the_trap_plain_greedy_falls_into():
    fake = Fake(TRAP, TRAP_VALUES)
    res = beam_search(fake.expand, fake.score, beam_width=1, expansions=2, lookahead=1)
    assert res.steps == ["b", "b1", "b1x"] and res.score == pytest.approx(1.0) and res.finished
    # depth 1: a, b (1 + 1 tokens) and their continuations a1, b1 (2 + 2); depth 2: b1, b2 (2 + 2) and b1x, b2x (3 + 3);
    # depth 3: b1x (3). Scored: 2 + 2 + 1 candidates, each by its continuation.
    assert (res.generator_tokens, res.verifier_calls) == (2 + 4 + 4 + 6 + 3, 5) == (fake.tokens, len(fake.scored))
    assert fake.scored[:2] == [("a", "a1"), ("b", "b1")]


def test_lookahead_stops_at_final_steps_and_keeps_the_candidate_not_the_rollout():
    fake = Fake(TRAP, TRAP_VALUES)
    res = beam_search(fake.expand, fake.score, beam_width=1, expansions=2, lookahead=2)
    assert res.steps == ["b", "b1", "b1x"]
    assert fake.scored[:2] == [("a", "a1"), ("b", "b1", "b1x")]  # a1 is final: a's continuation stops there
    assert res.generator_tokens == 2 + (4 + 3) + (4 + 6) + 3 and res.verifier_calls == 5
    # cut at depth 1: the beam holds `b` itself, worth its continuation's value
    cut = beam_search(*_fns(TRAP, TRAP_VALUES), beam_width=1, expansions=2, lookahead=1, max_depth=1)
    assert (cut.steps, cut.score, cut.finished) == (["b"], pytest.approx(0.4), False)


# --- tree of thoughts ---

# `a` looks best, but all its children fall below 0.5: a dead end once pruned. The optimum b1 is under `b`.
DFS = {
    (): ["a", "b"],
    ("a",): ["a1", "a2"],
    ("a", "a1"): ["a1x"],
    ("a", "a2"): ["a2x", "a2y"],
    ("b",): ["b1", "b2"],
    ("b", "b2"): ["b2x"],
}
DFS_VALUES = {
    ("a",): 0.8, ("b",): 0.7,
    ("a", "a1"): 0.3, ("a", "a2"): 0.2, ("a", "a1", "a1x"): 0.1, ("a", "a2", "a2x"): 0.15, ("a", "a2", "a2y"): 0.05,
    ("b", "b1"): 0.9, ("b", "b2"): 0.6, ("b", "b2", "b2x"): 0.4,
}  # fmt: skip


def test_tot_dfs_prunes_and_backtracks_out_of_a_dead_end():
    fake = Fake(DFS, DFS_VALUES)
    res = tot_dfs(fake.expand, fake.score, expansions=2, threshold=0.5)
    assert res.steps == ["b", "b1"] and res.score == pytest.approx(0.9) and res.finished
    assert [p for p, _ in res.kept] == [["a"], ["b"], ["b", "b1"]]  # entered a, backed out, entered b, done
    # root, a and b expanded (2 children each); exhaustive search would score all 10 nodes
    assert res.verifier_calls == 6 < len(DFS_VALUES) and res.generator_tokens == 2 + 4 + 4 == fake.tokens
    # without pruning, DFS commits to the first finished solution under `a`
    blind = tot_dfs(*_fns(DFS, DFS_VALUES), expansions=2, threshold=0.0)
    assert blind.steps == ["a", "a1", "a1x"] and blind.verifier_calls == 2 + 2 + 1


def test_tot_dfs_node_budget_returns_the_best_finished_so_far():
    # threshold 0.25: root, a and a1 are expanded; a1x (0.1) is finished but below the threshold
    spent = tot_dfs(*_fns(DFS, DFS_VALUES), expansions=2, threshold=0.25, max_nodes=3)
    assert (spent.steps, spent.score, spent.finished) == (["a", "a1", "a1x"], pytest.approx(0.1), True)
    assert spent.verifier_calls == 2 + 2 + 1
    enough = tot_dfs(*_fns(DFS, DFS_VALUES), expansions=2, threshold=0.25, max_nodes=4)
    assert enough.steps == ["b", "b1"] and enough.verifier_calls == 2 + 2 + 1 + 2
    nothing = tot_dfs(*_fns(DFS, DFS_VALUES), expansions=2, threshold=0.5, max_nodes=1)
    assert (nothing.steps, nothing.finished, nothing.verifier_calls) == (["a"], False, 2)


BFS = {
    (): ["a", "b", "c"],
    ("a",): ["a1", "a2"],
    ("b",): ["b1"],
    ("c",): ["c1"],
    ("a", "a2"): ["a2x"],
    ("c", "c1"): ["c1x"],
}
BFS_VALUES = {
    ("a",): 0.8, ("b",): 0.6, ("c",): 0.3,
    ("a", "a1"): 0.7, ("a", "a2"): 0.4, ("b", "b1"): 0.9, ("c", "c1"): 0.45,
    ("a", "a2", "a2x"): 0.5, ("c", "c1", "c1x"): 0.2,
}  # fmt: skip


def test_tot_bfs_with_a_threshold_prunes():
    full = tot_bfs(*_fns(BFS, BFS_VALUES), breadth=3, expansions=3)
    assert full.steps == ["b", "b1"] and full.score == pytest.approx(0.9)
    # depth 1: a, b, c; depth 2: a1, a2, b1, c1 (c1 and a2 stay in the frontier); depth 3: c1x, a2x
    assert full.verifier_calls == 3 + 4 + 2
    assert [p for p, _ in full.kept] == [
        ["a"], ["b"], ["c"], ["b", "b1"], ["a", "a1"], ["c", "c1"], ["a", "a2"], ["a", "a2", "a2x"], ["c", "c1", "c1x"]
    ]  # fmt: skip
    fake = Fake(BFS, BFS_VALUES)
    pruned = tot_bfs(fake.expand, fake.score, breadth=3, expansions=3, threshold=0.5)
    assert pruned.steps == ["b", "b1"]
    # c (0.3) and a2 (0.4) fall below 0.5 although the frontier has room: never expanded
    assert [p for p, _ in pruned.kept] == [["a"], ["b"], ["b", "b1"], ["a", "a1"]]
    assert (pruned.verifier_calls, pruned.generator_tokens) == (3 + 3, 3 + 6) == (len(fake.scored), fake.tokens)


# --- DVTS ---

POOL = {(): ["a", "b", "c", "d"], ("a",): ["a1", "a2"], ("c",): ["c1", "c2"]}
POOL_VALUES = {
    ("a",): 0.6, ("b",): 0.5, ("c",): 0.7, ("d",): 0.2,
    ("a", "a1"): 0.9, ("a", "a2"): 0.3, ("c", "c1"): 0.4, ("c", "c2"): 0.5,
}  # fmt: skip


def sampler():
    """An `expand` that hands out a node's children in turn, as sampling would (different draws per call); depth 2 is final."""
    drawn: dict[tuple[str, ...], int] = {}

    def expand(prefixes, k):
        out = []
        for p in prefixes:
            pool, i = POOL[tuple(p)], drawn.get(tuple(p), 0)
            drawn[tuple(p)] = i + k
            out.append([(pool[j % len(pool)], len(p) == 1, len(pool[j % len(pool)])) for j in range(i, i + k)])
        return out

    return expand


def test_dvts_returns_the_best_of_its_subtrees():
    score = lambda ps: [POOL_VALUES[tuple(p)] for p in ps]  # noqa: E731
    res = dvts(sampler(), score, budget=4, beam_width=2)
    # subtree 0 draws a, b and keeps a, then a1, a2 and keeps a1 (0.9); subtree 1 draws c, d, keeps c, then c2 (0.5)
    assert [(t.steps, t.score, t.finished) for t in res.subtrees] == [
        (["a", "a1"], 0.9, True),
        (["c", "c2"], 0.5, True),
    ]
    assert (res.steps, res.score, res.finished) == (["a", "a1"], 0.9, True)
    assert [(t.generator_tokens, t.verifier_calls) for t in res.subtrees] == [(1 + 1 + 2 + 2, 4), (1 + 1 + 2 + 2, 4)]
    assert (res.generator_tokens, res.verifier_calls) == (12, 8)
    # one greedy beam with the same four samples per step follows c, the best-looking first step, to 0.5
    assert beam_search(sampler(), score, beam_width=1, expansions=4).steps == ["c", "c2"]


def test_dvts_depth_limit_and_bad_budget():
    score = lambda ps: [POOL_VALUES[tuple(p)] for p in ps]  # noqa: E731
    cut = dvts(sampler(), score, budget=4, beam_width=2, max_depth=1)
    assert (cut.steps, cut.score, cut.finished) == (["c"], 0.7, False)
    with pytest.raises(ValueError):
        dvts(sampler(), score, budget=6, beam_width=4)


def _fns(tree, values):
    fake = Fake(tree, values)
    return fake.expand, fake.score
