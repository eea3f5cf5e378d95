"""Search on random trees (hypothesis): what every strategy must find, and exact accounting of what it spent.

The trees are small (depth <= 3, up to 3 children), leaves end a solution, and every node has its own value, so
a brute-force pass over all leaves is the peer implementation for "the best solution".
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonloop.search import beam_search, best_of_n, dvts, majority_vote, mcts, tot_bfs, tot_dfs, weighted_vote
from reasonloop.search.beam import _roll_forward, expand_unique
from reasonloop.search.vote import weighted_vote_pick

SETTINGS = settings(max_examples=80, deadline=None)


class Tree:
    """A random tree of steps with distinct values and a token cost per step; counts every model call."""

    def __init__(self, seed: int, depth: int = 3, max_children: int = 3):
        rng = random.Random(seed)
        self.children: dict[tuple, list[str]] = {}
        self.value: dict[tuple, float] = {}
        self.cost: dict[tuple, int] = {}
        values = rng.sample(range(1, 1000), 60)  # distinct: no ties to break
        stack = [()]
        while stack:
            node = stack.pop()
            if len(node) < depth and (not node or rng.random() < 0.8):
                kids = [f"s{len(node)}{i}" for i in range(rng.randint(1, max_children))]
                self.children[node] = kids
                for k in kids:
                    child = node + (k,)
                    self.value[child] = values.pop() / 1000
                    self.cost[child] = rng.randint(1, 5)
                    stack.append(child)
        self.tokens = self.scored = 0

    def final(self, path: tuple) -> bool:
        return path not in self.children

    def expand(self, prefixes, k):
        out = []
        for p in prefixes:
            kids = self.children.get(tuple(p), [])[:k]
            opts = [(c, self.final(tuple(p) + (c,)), self.cost[tuple(p) + (c,)]) for c in kids]
            self.tokens += sum(c for _, _, c in opts)
            out.append(opts)
        return out

    def score(self, prefixes):
        self.scored += len(prefixes)
        return [self.value[tuple(p)] for p in prefixes]

    def leaves(self) -> list[tuple]:
        return [p for p in self.value if self.final(p)]

    def best_leaf(self) -> tuple:
        return max(self.leaves(), key=lambda p: self.value[p])


@SETTINGS
@given(st.integers(0, 10**6))
def test_a_beam_wider_than_the_tree_finds_the_best_solution_and_counts_exactly(seed):
    t = Tree(seed)
    res = beam_search(t.expand, t.score, beam_width=50, expansions=3, max_depth=5)
    assert tuple(res.steps) == t.best_leaf() and res.score == t.value[t.best_leaf()] and res.finished
    assert sorted(tuple(p) for p, _ in res.kept) == sorted(t.leaves())  # every solution is finished and kept
    assert all(v == t.value[tuple(p)] for p, v in res.kept)
    assert res.generator_tokens == t.tokens == sum(t.cost.values())  # every step generated once
    assert res.verifier_calls == t.scored == len(t.value)  # and scored once


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
def test_beam_search_answers_its_best_finished_solution_and_counts_what_it_spent(seed, width, expansions, depth):
    t = Tree(seed)
    res = beam_search(t.expand, t.score, beam_width=width, expansions=expansions, max_depth=depth)
    assert res.generator_tokens == t.tokens and res.verifier_calls == t.scored
    assert all(t.final(tuple(p)) and v == t.value[tuple(p)] for p, v in res.kept)
    if res.kept:
        assert res.finished and res.score == max(v for _, v in res.kept)
        assert (res.steps, res.score) in [(p, v) for p, v in res.kept]
    else:  # nothing finished: the best-valued unfinished beam, which is a real node below max_depth
        assert not res.finished and not t.final(tuple(res.steps)) and len(res.steps) <= depth
        assert res.score == t.value[tuple(res.steps)]


def test_greedy_beam_follows_the_best_child_and_stops_at_a_finished_one():
    t = Tree(7)
    res = beam_search(t.expand, t.score, beam_width=1, expansions=3)
    node: tuple = ()
    while not t.final(node):  # the verifier's favourite child, all the way down
        node = max((node + (c,) for c in t.children[node]), key=lambda p: t.value[p])
    assert tuple(res.steps) == node


def test_beam_stops_once_width_solutions_are_finished():
    # root -> f1 (final, 0.2), f2 (final, 0.1), g (0.9) -> g1 (final, 1.0): with width 2, both finals finish at
    # depth 1 and the search stops there, never generating g1
    tree = {(): [("f1", True), ("f2", True), ("g", False)], ("g",): [("g1", True)]}
    values = {("f1",): 0.2, ("f2",): 0.1, ("g",): 0.9, ("g", "g1"): 1.0}
    calls = []

    def expand(ps, k):
        calls.append([tuple(p) for p in ps])
        return [[(s, f, 1) for s, f in tree[tuple(p)]] for p in ps]

    res = beam_search(expand, lambda ps: [values[tuple(p)] for p in ps], beam_width=2, expansions=3)
    assert calls == [[()]] and res.steps == ["f1"] and res.score == 0.2 and res.generator_tokens == 3
    # width 3: g survives beside the two finals; g1 finishes at depth 2 and wins
    calls.clear()
    res = beam_search(expand, lambda ps: [values[tuple(p)] for p in ps], beam_width=3, expansions=3)
    assert calls == [[()], [("g",)]] and res.steps == ["g", "g1"] and res.score == 1.0
    with pytest.raises(ValueError, match="^beam_width and expansions must be at least 1, lookahead at least 0$"):
        beam_search(expand, lambda ps: [], expansions=0)
    with pytest.raises(ValueError):
        beam_search(expand, lambda ps: [], lookahead=-1)
    assert beam_search(expand, lambda ps: [0.0] * len(ps), beam_width=1, lookahead=0).steps == ["f1"]


def test_beam_defaults_width_4_expansions_4_depth_16():
    # root -> c1..c6 (values 0.9 down to 0.4), each ci -> a final li; l5 (1.0) is the best solution, l4 (0.4) the
    # best among the first four. Four expansions see c1..c4 only; a beam of four keeps c1..c4 only.
    values = {("c1",): 0.9, ("c2",): 0.8, ("c3",): 0.7, ("c4",): 0.6, ("c5",): 0.5, ("c6",): 0.4}
    values.update({(f"c{i}", f"l{i}"): v for i, v in zip(range(1, 7), [0.1, 0.2, 0.3, 0.4, 1.0, 0.05])})

    def expand(ps, k):
        return [[(f"c{i}", False, 1) for i in range(1, 7)][:k] if not p else [(f"l{p[0][1:]}", True, 1)] for p in ps]

    score = lambda ps: [values[tuple(p)] for p in ps]  # noqa: E731
    assert beam_search(expand, score, beam_width=10).steps == ["c4", "l4"]  # 4 expansions by default
    assert beam_search(expand, score, beam_width=10, expansions=5).steps == ["c5", "l5"]
    assert beam_search(expand, score, expansions=10).steps == ["c4", "l4"]  # a beam of 4 by default
    assert beam_search(expand, score, expansions=10, beam_width=5).steps == ["c5", "l5"]
    chain = lambda ps, k: [[("s", len(p) == 16, 1)] for p in ps]  # noqa: E731  (a 17-step solution)
    deeper = lambda ps: [len(p) / 100 for p in ps]  # noqa: E731  (a deeper prefix is worth more)
    res = beam_search(chain, deeper)
    assert not res.finished and len(res.steps) == 16  # 16 steps by default
    assert beam_search(chain, deeper, max_depth=17).finished


def test_beam_ties_keep_generation_order_and_every_finished_candidate_is_kept():
    tied = lambda ps, k: [[("a", False, 1), ("b", False, 1)] for _ in ps]  # noqa: E731
    res = beam_search(tied, lambda ps: [0.5] * len(ps), beam_width=2, max_depth=1)
    assert (res.steps, res.finished) == (["a"], False)  # equal values: the first generated
    # width 1: "a" (final, 0.9) fills the finished list, "c" the beam; "b" (final, 0.5) is kept too, and the
    # search stops at depth 1 with "a"
    tree = lambda ps, k: [[("a", True, 1), ("b", True, 1), ("c", False, 1)] for _ in ps]  # noqa: E731
    vals = {"a": 0.9, "b": 0.5, "c": 0.7}
    res = beam_search(tree, lambda ps: [vals[p[-1]] for p in ps], beam_width=1)
    assert res.steps == ["a"] and res.kept == [(["a"], 0.9), (["b"], 0.5)] and res.generator_tokens == 3


def test_lookahead_pays_for_one_rollout_sample_per_step():
    # every expansion offers k copies of the next step (2 tokens each); a candidate ranked 2 steps ahead pays for
    # exactly one sample per rolled step
    def expand(ps, k):
        return [[(f"s{len(p)}", len(p) == 3, 2)] * k for p in ps]

    res = beam_search(expand, lambda ps: [float(len(p)) for p in ps], beam_width=1, expansions=2, lookahead=2)
    # depth 1: 2 samples (4 tokens, one distinct candidate), rolled 2 steps (4); depth 2: 4 + 4 (s2, then s3 final);
    # depth 3: 4 + 2 (s3 rolls one step to the final s3); depth 4: 4 tokens, final
    assert res.steps == ["s0", "s1", "s2", "s3"] and res.generator_tokens == 8 + 8 + 6 + 4


def test_beam_on_a_tree_with_no_steps_returns_an_empty_unfinished_answer():
    res = beam_search(lambda ps, k: [[] for _ in ps], lambda ps: [0.5] * len(ps))
    assert (res.steps, res.score, res.finished, res.generator_tokens, res.verifier_calls) == (
        [],
        -math.inf,
        False,
        0,
        0,
    )


def test_expand_unique_and_roll_forward_by_hand():
    expand = lambda ps, k: [[("x", False, 2), ("x", False, 3), ("y", True, 1)][:k] for _ in ps]  # noqa: E731
    assert expand_unique(expand, [["a"], ["b"]], 3) == (
        [(["a", "x"], False), (["a", "y"], True), (["b", "x"], False), (["b", "y"], True)],
        12,
    )
    assert expand_unique(expand, [["a"]], 1) == ([(["a", "x"], False)], 2)
    # roll forward: one sample per step, stopping at a final step or when nothing is offered
    tree = {("p",): ("q", False), ("p", "q"): ("r", True), ("u",): None}
    roll = lambda ps, k: [[(tree[tuple(p)][0], tree[tuple(p)][1], 4)] * k if tree.get(tuple(p)) else [] for p in ps]  # noqa: E731
    assert _roll_forward(roll, [(["p"], False), (["u"], False)], 5) == ([["p", "q", "r"], ["u"]], 8)
    assert _roll_forward(roll, [(["p"], False)], 1) == ([["p", "q"]], 4)
    assert _roll_forward(roll, [(["p"], False)], 0) == ([["p"]], 0)


# --- votes -------------------------------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1), st.randoms(use_true_random=False))
def test_a_clear_majority_does_not_depend_on_sample_order(answers, rnd):
    counts = {a: answers.count(a) for a in set(answers) if a is not None}
    shuffled = list(answers)
    rnd.shuffle(shuffled)
    if not counts:
        assert majority_vote(answers) is None and majority_vote(shuffled) is None
        return
    top = max(counts.values())
    winners = [a for a in counts if counts[a] == top]
    assert majority_vote(answers) == next(a for a in answers if a in winners)  # ties: the first seen
    if len(winners) == 1:
        assert majority_vote(shuffled) == winners[0]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["1", "2", None]), st.integers(-5, 5)), min_size=1))
def test_weighted_vote_sums_scores_per_answer(pairs):
    answers, scores = [a for a, _ in pairs], [float(s) for _, s in pairs]
    totals: dict[str, float] = {}
    for a, s in pairs:
        if a is not None:
            totals[a] = totals.get(a, 0.0) + s
    if not totals:
        assert weighted_vote(answers, scores) is None and weighted_vote_pick(answers, scores) == 0
        return
    best = max(totals.values())
    expected = next(a for a in answers if a is not None and totals[a] == best)
    assert weighted_vote(answers, scores) == expected
    pick = weighted_vote_pick(answers, scores)
    top = max(s for a, s in zip(answers, scores) if a == expected)
    assert answers[pick] == expected and scores[pick] == top
    assert pick == min(i for i, (a, s) in enumerate(zip(answers, scores)) if a == expected and s == top)


def test_votes_by_hand():
    assert majority_vote(["4", "3", "3", "4"]) == "4" and majority_vote([None, "7"]) == "7"
    assert weighted_vote(["3", "4", None], [0.2, 0.3, 5.0]) == "4"  # an unanswered sample's score counts for nobody
    assert weighted_vote(["3", "4", "4"], [1.0, 0.6, 0.6]) == "4"  # 1.2 > 1.0: many fair votes beat one strong
    assert weighted_vote([None], [1.0]) is None
    with pytest.raises(ValueError):
        weighted_vote(["3"], [1.0, 2.0])
    assert best_of_n([-3.0, -1.0, -2.0]) == 1 and best_of_n([0.5]) == 0
    with pytest.raises(ValueError, match="^best_of_n needs at least one sample$"):
        best_of_n([])
    assert weighted_vote_pick(["3", "4", "4"], [0.1, 0.5, 0.9]) == 2 and weighted_vote_pick([None, None], [1, 2]) == 0


# --- ToT, DVTS, MCTS ---------------------------------------------------------------------------------------------


@SETTINGS
@given(st.integers(0, 10**6))
def test_tot_bfs_wider_than_the_tree_finds_the_best_solution(seed):
    t = Tree(seed)
    res = tot_bfs(t.expand, t.score, breadth=50, expansions=3)
    assert tuple(res.steps) == t.best_leaf() and res.finished and res.score == t.value[t.best_leaf()]
    assert res.generator_tokens == t.tokens == sum(t.cost.values()) and res.verifier_calls == len(t.value)
    assert sorted(tuple(p) for p, _ in res.kept) == sorted(t.value)  # every state is kept once


@SETTINGS
@given(st.integers(0, 10**6), st.floats(0.0, 1.0))
def test_tot_bfs_threshold_prunes_low_states_only(seed, threshold):
    t = Tree(seed)
    res = tot_bfs(t.expand, t.score, breadth=50, expansions=3, threshold=threshold)
    for p, v in res.kept:
        assert v == t.value[tuple(p)] and (t.final(tuple(p)) or v >= threshold)
        assert all(t.value[tuple(p[:i])] >= threshold for i in range(1, len(p)))  # its ancestors survived
    assert res.generator_tokens == t.tokens and res.verifier_calls == t.scored


@SETTINGS
@given(st.integers(0, 10**6))
def test_tot_dfs_without_pruning_returns_the_first_greedy_finish(seed):
    t = Tree(seed)
    res = tot_dfs(t.expand, t.score, expansions=3, threshold=0.0, max_nodes=1000)
    node: tuple = ()
    while not t.final(node):  # threshold 0 prunes nothing: DFS walks the best child down to the first leaf
        node = max((node + (c,) for c in t.children[node]), key=lambda p: t.value[p])
    assert [tuple(p) for p, _ in res.kept] == [node[:i] for i in range(1, len(node) + 1)]
    # the answer is the best finished solution it scored on the way (a sibling may beat the leaf it reached)
    scored = [node[:i] + (c,) for i in range(len(node)) for c in t.children[node[:i]]]
    best = max((p for p in scored if t.final(p)), key=lambda p: t.value[p])
    assert tuple(res.steps) == best and res.finished and res.score == t.value[best]
    assert res.generator_tokens == t.tokens and res.verifier_calls == t.scored == sum(
        len(t.children[node[:i]]) for i in range(len(node))
    )


def test_tot_dfs_prunes_everything_above_every_value_and_answers_the_best_partial():
    tree = {(): [("a", False), ("b", False)]}
    values = {("a",): 0.3, ("b",): 0.4}
    ex = lambda ps, k: [[(s, f, 2) for s, f in tree[tuple(p)]][:k] for p in ps]  # noqa: E731
    res = tot_dfs(ex, lambda ps: [values[tuple(p)] for p in ps], threshold=0.9)
    assert (res.steps, res.score, res.finished, res.kept, res.generator_tokens, res.verifier_calls) == (
        ["b"], 0.4, False, [], 4, 2,
    )  # fmt: skip
    assert tot_dfs(ex, lambda ps: [values[tuple(p)] for p in ps], threshold=0.9, max_depth=0).steps == []
    with pytest.raises(ValueError, match="^expansions and max_nodes must be at least 1$"):
        tot_dfs(ex, lambda ps: [], max_nodes=0)
    with pytest.raises(ValueError, match="^breadth and expansions must be at least 1$"):
        tot_bfs(ex, lambda ps: [], breadth=0)


@SETTINGS
@given(st.integers(0, 10**6), st.sampled_from([(4, 2), (6, 3), (4, 1), (2, 2)]))
def test_dvts_with_a_deterministic_sampler_is_greedy_in_every_subtree(seed, budget_width):
    budget, width = budget_width
    t = Tree(seed)
    res = dvts(t.expand, t.score, budget=budget, beam_width=width, max_depth=5)
    node: tuple = ()
    while not t.final(node):  # each subtree keeps the best of the first `width` children, as greedy would
        node = max((node + (c,) for c in t.children[node][:width]), key=lambda p: t.value[p])
    assert len(res.subtrees) == budget // width
    assert all(tuple(s.steps) == node and s.finished and s.score == t.value[node] for s in res.subtrees)
    assert tuple(res.steps) == node and res.finished and res.score == t.value[node]
    assert res.generator_tokens == t.tokens == sum(s.generator_tokens for s in res.subtrees)
    assert res.verifier_calls == t.scored == sum(s.verifier_calls for s in res.subtrees)


def test_dvts_without_a_finished_subtree_answers_the_best_partial_one():
    pool = {(): ["a", "b"], ("a",): ["a1"], ("b",): ["b1"]}
    values = {("a",): 0.2, ("b",): 0.6, ("a", "a1"): 0.1, ("b", "b1"): 0.3}
    drawn = {}

    def expand(ps, k):
        out = []
        for p in ps:
            i = drawn.get(tuple(p), 0)
            drawn[tuple(p)] = i + k
            kids = pool[tuple(p)]
            out.append([(kids[j % len(kids)], False, 1) for j in range(i, i + k)])
        return out

    res = dvts(expand, lambda ps: [values[tuple(p)] for p in ps], budget=2, beam_width=1, max_depth=2)
    assert [s.steps for s in res.subtrees] == [["a", "a1"], ["b", "b1"]]
    assert (res.steps, res.score, res.finished) == (["b", "b1"], 0.3, False)  # the best score among unfinished
    assert [s.kept for s in res.subtrees] == [[], []] and res.generator_tokens == 4 and res.verifier_calls == 4
    with pytest.raises(ValueError, match="^budget must be a positive multiple of beam_width$"):
        dvts(expand, lambda ps: [], budget=3, beam_width=2)
    with pytest.raises(ValueError):
        dvts(expand, lambda ps: [], budget=2, beam_width=0)
    with pytest.raises(ValueError):
        dvts(expand, lambda ps: [], budget=1, beam_width=2)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 40), st.sampled_from([0.5, 1.0, 2.0]))
def test_mcts_backs_up_every_simulation_exactly(seed, simulations, c_puct):
    t = Tree(seed)
    res = mcts(t.expand, t.score, simulations=simulations, expansions=3, c_puct=c_puct, seed=seed)
    nodes = {path: (visits, mean) for path, visits, mean in res.tree}
    assert nodes[()][0] == simulations  # the root is on every simulation's path
    for path, (visits, mean) in nodes.items():
        kids = [path + (c,) for c in t.children.get(path, [])]
        below = sum(nodes[k][0] for k in kids if k in nodes)
        sums = sum(nodes[k][0] * nodes[k][1] for k in kids if k in nodes)
        if path == ():
            assert visits == below and mean * visits == pytest.approx(sums)  # never scored itself
        elif t.final(path) or not below:  # a leaf keeps its one evaluation
            assert mean == pytest.approx(t.value[path])
        else:  # evaluated once as a new leaf, then every later visit went to a child
            assert visits == 1 + below and mean * visits == pytest.approx(t.value[path] + sums)
    assert res.verifier_calls == t.scored == len(nodes) - 1  # every visited node but the root, once
    assert res.generator_tokens == t.tokens
    finished = [(p, m) for p, _, m in res.tree if t.final(p)]
    if finished:  # the best mean among visited solutions, ties to the first created
        best = max(m for _, m in finished)
        assert res.finished and tuple(res.steps) == next(p for p, m in finished if m == best) and res.score == best
    else:
        assert not res.finished


def test_mcts_mixes_verifier_and_rollout_values_by_weight():
    tree = {(): [("x", True)]}
    ex = lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]] for p in ps]  # noqa: E731
    res = mcts(ex, lambda ps: [0.8] * len(ps), simulations=3, rollout=lambda ps: [0.2] * len(ps), value_weight=0.25)
    assert res.score == pytest.approx(0.25 * 0.8 + 0.75 * 0.2) and (res.verifier_calls, res.rollout_calls) == (1, 1)
    only = mcts(ex, lambda ps: [0.8], simulations=2, rollout=lambda ps: [0.2], value_weight=0.0)
    assert only.score == pytest.approx(0.2) and (only.verifier_calls, only.rollout_calls) == (0, 1)
    with pytest.raises(ValueError, match="^pass a rollout exactly when value_weight < 1$"):
        mcts(ex, lambda ps: [0.8], value_weight=0.5)
    with pytest.raises(ValueError, match=r"^simulations and expansions must be at least 1, value_weight in \[0, 1\]$"):
        mcts(ex, lambda ps: [0.8], simulations=0)
    empty = mcts(lambda ps, k: [[]], lambda ps: [1.0], simulations=3)
    assert (empty.steps, empty.score, empty.finished, empty.tree) == ([], 0.0, False, [])


def test_dvts_defaults_ties_duplicates_and_stuck_subtrees():
    calls = []

    def chain(ps, k):  # a 17-step solution, the same step k times
        calls.append((len(ps), k))
        return [[("s", len(p) == 16, 1)] * k for p in ps]

    deeper = lambda ps: [len(p) / 100 for p in ps]  # noqa: E731
    res = dvts(chain, deeper)
    assert calls[0] == (4, 4) and len(res.subtrees) == 4  # 16 candidates per depth: 4 subtrees of 4 by default
    assert not res.finished and len(res.steps) == 16 and len(calls) == 16  # 16 steps by default
    assert res.verifier_calls == 4 * 16  # identical samples are one candidate
    assert dvts(chain, deeper, max_depth=17).finished
    # a subtree's finished answer is its kept solution; ties go to the first sampled candidate
    two = lambda ps, k: [[("x", True, 1), ("y", True, 1)] for _ in ps]  # noqa: E731
    res = dvts(two, lambda ps: [0.5] * len(ps), budget=2, beam_width=2)
    assert res.steps == ["x"] and res.subtrees[0].kept == [(["x"], 0.5)]

    def nothing(ps):
        raise AssertionError("no candidate: the verifier is not called")

    stuck = dvts(lambda ps, k: [[] for _ in ps], nothing, budget=4, beam_width=2)
    assert (stuck.steps, stuck.finished, stuck.verifier_calls) == ([], False, 0)
    assert [(s.steps, s.finished, s.kept) for s in stuck.subtrees] == [([], False, [])] * 2


def test_mcts_defaults_arguments_and_what_an_empty_or_unfinished_search_reports():
    ks = []

    def chain(ps, k):  # a 17-step solution
        ks.append(k)
        return [[("s", len(p) == 16, 1)] for p in ps]

    res = mcts(chain, lambda ps: [0.5] * len(ps))
    assert ks[0] == 4 and dict((p, v) for p, v, _ in res.tree)[()] == 32  # 4 expansions, 32 simulations
    assert not res.finished and len(res.steps) == 16  # a chain of 16 steps at most: never finished
    assert mcts(chain, lambda ps: [0.5] * len(ps), max_depth=17).finished
    # ties are broken at random with seed 0 by default (seeds 0 and 1 pick different children here)
    four = lambda ps, k: [[(c, True, 1) for c in "abcd"][:k] for _ in ps]  # noqa: E731
    flat = lambda ps: [0.5] * len(ps)  # noqa: E731
    picks = [mcts(four, flat, simulations=1, seed=s).steps for s in (0, 1)]
    assert mcts(four, flat, simulations=1).steps == picks[0] != picks[1]
    assert mcts(four, flat, simulations=1, expansions=1).steps == ["a"]  # one expansion is allowed
    for bad in ({"expansions": 0}, {"simulations": 0}, {"value_weight": 1.5}, {"value_weight": -0.1}):
        with pytest.raises(ValueError, match="simulations and expansions must be at least 1"):
            mcts(four, flat, **bad)
    empty = mcts(lambda ps, k: [[] for _ in ps], flat)
    assert (empty.generator_tokens, empty.verifier_calls, empty.rollout_calls) == (0, 0, 0)
    # unfinished with rollouts: the most-visited path, and the rollouts it paid for
    res = mcts(chain, flat, simulations=3, rollout=lambda ps: [0.0] * len(ps), value_weight=0.5)
    assert not res.finished and res.rollout_calls == 3 and res.verifier_calls == 3 and res.steps == ["s", "s", "s"]


def _star(n_children: int, best: int):
    """Root -> c1..cn (values 0.9, 0.85, ...), each ci -> a final li worth 0.1 * i / n, except l<best> worth 1."""
    values = {(f"c{i}",): 0.9 - 0.05 * (i - 1) for i in range(1, n_children + 1)}
    values.update({(f"c{i}", f"l{i}"): 1.0 if i == best else 0.1 * i / n_children for i in range(1, n_children + 1)})
    ks = []

    def expand(ps, k):
        ks.append(k)
        return [[(f"c{i}", False, 1) for i in range(1, n_children + 1)][:k] if not p else [(f"l{p[0][1:]}", True, 1)]
                for p in ps]  # fmt: skip

    return expand, (lambda ps: [values[tuple(p)] for p in ps]), ks


def test_tot_bfs_defaults_edges_and_ties():
    expand, score, ks = _star(7, best=6)
    assert tot_bfs(expand, score, breadth=10).steps == ["c5", "l5"] and ks[0] == 5  # 5 expansions by default
    assert tot_bfs(expand, score, breadth=10, expansions=6).steps == ["c6", "l6"]
    assert tot_bfs(expand, score, expansions=10).steps == ["c5", "l5"]  # 5 states kept by default
    assert tot_bfs(expand, score, expansions=10, breadth=6).steps == ["c6", "l6"]
    one = tot_bfs(expand, score, breadth=1, expansions=1)  # the smallest search is allowed
    assert one.steps == ["c1", "l1"] and [p for p, _ in one.kept] == [["c1"], ["c1", "l1"]]
    chain = lambda ps, k: [[("s", len(p) == 16, 1)] for p in ps]  # noqa: E731
    deeper = lambda ps: [len(p) / 100 for p in ps]  # noqa: E731
    res = tot_bfs(chain, deeper)
    assert not res.finished and len(res.steps) == 16 and tot_bfs(chain, deeper, max_depth=17).finished
    # a state at the threshold survives it; a state that cannot be expanded ends the search with an answer
    dead = lambda ps, k: [[("a", False, 1), ("b", False, 1)] if not p else [] for p in ps]  # noqa: E731
    res = tot_bfs(dead, lambda ps: [0.5] * len(ps), threshold=0.5)
    assert (res.steps, res.finished, [p for p, _ in res.kept]) == (["a"], False, [["a"], ["b"]])  # ties: the first


def test_tot_dfs_defaults_edges_and_ties():
    expand, score, ks = _star(7, best=6)
    res = tot_dfs(expand, score)
    # 5 expansions: c1..c5 are explored (all >= 0.5), none of their solutions reaches 0.5, so the answer is the best
    # finished one it scored, l5; a sixth expansion would have found l6 (1.0)
    assert ks[0] == 5 and res.steps == ["c5", "l5"] and [p for p, _ in res.kept] == [[f"c{i}"] for i in range(1, 6)]
    assert tot_dfs(expand, score, threshold=0.95).finished is False  # every state below the threshold
    assert tot_dfs(expand, score, expansions=1).steps == ["c1", "l1"]
    # a child exactly at the threshold is explored, not pruned
    at = lambda ps, k: [[("a", False, 1)] if not p else [("a1", True, 1)] for p in ps]  # noqa: E731
    assert tot_dfs(at, lambda ps: [0.5] * len(ps), threshold=0.5).steps == ["a", "a1"]
    chain = lambda ps, k: [[("s", len(p) == 16, 1)] for p in ps]  # noqa: E731
    deeper = lambda ps: [0.5 + len(p) / 1000 for p in ps]  # noqa: E731
    res = tot_dfs(chain, deeper)
    assert not res.finished and len(res.steps) == 16 and tot_dfs(chain, deeper, max_depth=17).finished
    long = lambda ps, k: [[("s", len(p) == 100, 1)] for p in ps]  # noqa: E731  (101 steps: 101 expansions)
    assert not tot_dfs(long, deeper, max_depth=1000).finished  # 100 expanded states by default
    assert tot_dfs(long, deeper, max_depth=1000, max_nodes=101).finished
    # a dead end (depth limit, or no children) backtracks to the next sibling instead of stopping the search
    tree = {(): [("a", False, 1), ("b", True, 1)], ("a",): []}
    vals = {("a",): 0.9, ("b",): 0.6}
    ex = lambda ps, k: [tree[tuple(p)] for p in ps]  # noqa: E731
    for kw in ({"max_depth": 1}, {}):
        res = tot_dfs(ex, lambda ps: [vals[tuple(p)] for p in ps], **kw)
        assert res.steps == ["b"] and [p for p, _ in res.kept] == [["a"], ["b"]], kw
    # no finished solution: the first of equally valued states
    flat = lambda ps, k: [[("a", False, 1), ("b", False, 1)] if not p else [] for p in ps]  # noqa: E731
    assert tot_dfs(flat, lambda ps: [0.7] * len(ps)).steps == ["a"]
