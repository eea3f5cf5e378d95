"""Monte-Carlo tree search over solution steps with PUCT selection. A pure function.

The model calls are arguments, as in `beam.py`:

- `expand(prefixes, k)`: `k` candidate next steps per partial solution, each `(step, is_final, tokens_spent)`;
- `score(prefixes)`: a verifier value per partial solution (higher is better);
- `rollout(prefixes)` (optional): a value in [0, 1] per partial solution from completing it, e.g. the
  fraction of sampled completions a grader accepts.

Each simulation walks from the root to a leaf choosing, at every node, the child
with the largest PUCT score (Silver et al. 2017, AlphaGo Zero; Silver et al. 2018, AlphaZero)

    Q(child) + c_puct * P(child) * sqrt(N(parent)) / (1 + N(child)),

evaluates the leaf once (`value_weight * score + (1 - value_weight) * rollout`),
expands it by one step (one `expand` call for `expansions` children), and adds the
value to the visit count and value sum of every node on the way (Q is the mean).
A final step is never expanded and keeps its value; so does a leaf at `max_depth`
or one `expand` gives no children. The answer is the visited finished solution
with the highest mean value, or, if none finished, the most-visited path.

Where this departs from AlphaZero:

- Priors P are uniform over a node's distinct children: `expand` does not give
  step probabilities. (Identical samples are merged, as in beam search.)
- An unvisited child's Q is its parent's mean value (first-play value as in mctx's
  `qtransform_by_parent_and_siblings`), not 0: values here lie in [0, 1], so 0 would
  be pessimistic, not neutral.
- The root is expanded before the first simulation and never scored: the empty
  prefix has no verifier value. It does not count as a simulation.
- Ties between equally promising children are broken at random with `seed`.
- One leaf per simulation, no virtual loss: the calls are sequential, batch 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from reasonloop.search.beam import Expand, Score

Rollout = Callable[[list[list[str]]], list[float]]


@dataclass(frozen=True)
class MctsResult:
    steps: list[str]  # the chosen solution
    score: float  # its mean value in the tree
    finished: bool  # whether it ended (else the most-visited path)
    tree: list[tuple[tuple[str, ...], int, float]] = field(
        default_factory=list
    )  # (path, visits, mean) per visited node
    generator_tokens: int = 0  # tokens the expansions spent
    verifier_calls: int = 0  # partial solutions scored
    rollout_calls: int = 0  # partial solutions rolled out


@dataclass
class _Node:  # mutable, private to one search
    path: tuple[str, ...]
    final: bool = False
    prior: float = 1.0
    visits: int = 0
    value_sum: float = 0.0
    value: float | None = None  # the leaf evaluation, once made
    children: list[_Node] | None = None  # None until expanded

    @property
    def mean(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


def mcts(
    expand: Expand,
    score: Score,
    *,
    simulations: int = 32,
    c_puct: float = 1.0,
    expansions: int = 4,
    max_depth: int = 16,
    rollout: Rollout | None = None,
    value_weight: float = 1.0,
    seed: int = 0,
) -> MctsResult:
    """Search for the solution with the best mean value; see the module docstring.

    `value_weight` mixes the verifier with `rollout`: 1 (the default) uses the
    verifier alone and needs `rollout=None`; 0 uses rollouts alone; anything in
    between needs both and calls both on every new leaf.

    Two final steps worth 1 and 0: the first simulation tries one at random; the
    second tries the other (its Q is the root's mean, plus more exploration); the
    next two go to the good one, as the PUCT scores 1.35 > 0.35 and 1.29 > 0.43 say.

    >>> tree = {(): [("x", True), ("y", True)]}
    >>> values = {("x",): 1.0, ("y",): 0.0}
    >>> expand = lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]] for p in ps]
    >>> score = lambda ps: [values[tuple(p)] for p in ps]
    >>> res = mcts(expand, score, simulations=4)
    >>> res.steps, res.score, res.tree
    (['x'], 1.0, [((), 4, 0.75), (('x',), 3, 1.0), (('y',), 1, 0.0)])
    >>> res.generator_tokens, res.verifier_calls   # terminal nodes are scored once
    (2, 2)
    """
    if simulations < 1 or expansions < 1 or not 0.0 <= value_weight <= 1.0:
        raise ValueError("simulations and expansions must be at least 1, value_weight in [0, 1]")
    if (rollout is None) != (value_weight == 1.0):
        raise ValueError("pass a rollout exactly when value_weight < 1")
    rng = random.Random(seed)
    tokens = calls = rollouts = 0
    root = _Node(())
    nodes = [root]  # creation order, for the tree summary

    def expand_node(node: _Node) -> None:
        nonlocal tokens
        (options,) = expand([list(node.path)], expansions)
        children: dict[str, _Node] = {}
        for step, final, spent in options:
            tokens += spent
            if step not in children:  # identical samples are one child
                children[step] = _Node(node.path + (step,), final)
        for child in children.values():
            child.prior = 1.0 / len(children)
        node.children = list(children.values())
        nodes.extend(node.children)

    def evaluate(node: _Node) -> float:
        nonlocal calls, rollouts
        value = 0.0
        if value_weight > 0.0:
            value += value_weight * score([list(node.path)])[0]
            calls += 1
        if rollout is not None:
            value += (1.0 - value_weight) * rollout([list(node.path)])[0]
            rollouts += 1
        return value

    expand_node(root)
    if not root.children:
        return MctsResult([], 0.0, False, [], tokens, calls, rollouts)
    for _ in range(simulations):
        node, trail = root, [root]
        while node.children:  # selection
            node = _select(node, c_puct, rng)
            trail.append(node)
        if node.value is None:  # a new leaf: evaluate, then expand one step
            node.value = evaluate(node)
            if not node.final and len(node.path) < max_depth:
                expand_node(node)
        for visited in trail:  # backup
            visited.visits += 1
            visited.value_sum += node.value

    tree = [(n.path, n.visits, n.mean) for n in nodes if n.visits]
    done = [n for n in nodes if n.final and n.visits]
    if done:
        best = max(done, key=lambda n: n.mean)  # ties: the first created
        return MctsResult(list(best.path), best.mean, True, tree, tokens, calls, rollouts)
    node = root
    while node.children and any(c.visits for c in node.children):
        node = max(node.children, key=lambda c: c.visits)
    return MctsResult(list(node.path), node.mean, False, tree, tokens, calls, rollouts)


def _select(parent: _Node, c_puct: float, rng: random.Random) -> _Node:
    """The child with the largest PUCT score; ties at random."""
    assert parent.children
    explore = c_puct * math.sqrt(parent.visits)
    scores = [(c.mean if c.visits else parent.mean) + explore * c.prior / (1 + c.visits) for c in parent.children]
    best = max(scores)
    return rng.choice([c for c, s in zip(parent.children, scores) if s == best])
