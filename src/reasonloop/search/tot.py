"""Tree of thoughts (Yao et al. 2023): breadth-first and depth-first search over steps. Pure functions.

The model calls are arguments, as in `beam.py`: `expand(prefixes, k)` proposes `k`
next steps per partial solution, each `(step, is_final, tokens_spent)`, and
`score(prefixes)` is the state evaluator (the paper's value prompt; here any
verifier, higher is better).

- `tot_bfs` keeps the `breadth` best states per depth (the paper's b). That is
  step-level beam search, with two differences that are the point of ToT BFS: a
  state whose value is below `threshold` is dropped even when the frontier has
  room (the paper's evaluator prunes "impossible" states), and the search runs
  until the frontier is empty or `max_depth`, rather than stopping once
  `beam_width` solutions are finished.
- `tot_dfs` explores the most promising child first, prunes subtrees whose value
  is below `threshold` (the paper's v_th) and backtracks; it stops at the first
  finished solution worth at least `threshold`, or when `max_nodes` states (the
  root included) have been expanded.

Both return the best finished solution they scored (below the threshold too: it
is still an answer), else the best unfinished state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reasonloop.search.beam import Expand, Score, expand_unique


@dataclass(frozen=True)
class TotResult:
    steps: list[str]  # the chosen solution
    score: float  # its verifier value
    finished: bool  # whether it ended (else the best unfinished state)
    kept: list[tuple[list[str], float]] = field(default_factory=list)  # BFS: states kept, by depth; DFS: visit order
    generator_tokens: int = 0  # tokens the expansions spent
    verifier_calls: int = 0  # states scored


def tot_bfs(
    expand: Expand,
    score: Score,
    *,
    breadth: int = 5,
    expansions: int = 5,
    max_depth: int = 16,
    threshold: float | None = None,
) -> TotResult:
    """Breadth-first tree of thoughts; see the module docstring.

    Both first steps are worth more than 0.5, but only `b` leads anywhere good:

    >>> tree = {(): [("a", False), ("b", False)], ("a",): [("a1", False)], ("a", "a1"): [("a2", True)],
    ...         ("b",): [("b1", True)]}
    >>> values = {("a",): 0.9, ("b",): 0.6, ("a", "a1"): 0.2, ("a", "a1", "a2"): 0.3, ("b", "b1"): 0.8}
    >>> expand = lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]][:k] for p in ps]
    >>> score = lambda ps: [values[tuple(p)] for p in ps]
    >>> res = tot_bfs(expand, score, breadth=2)
    >>> res.steps, res.verifier_calls
    (['b', 'b1'], 5)
    >>> tot_bfs(expand, score, breadth=2, threshold=0.5).verifier_calls   # a1 is pruned, a2 never made
    4
    """
    if breadth < 1 or expansions < 1:
        raise ValueError("breadth and expansions must be at least 1")
    frontier: list[list[str]] = [[]]
    kept: list[tuple[list[str], float]] = []
    solutions: list[tuple[list[str], float]] = []
    best_partial: tuple[list[str], float] = ([], float("-inf"))
    tokens = calls = 0
    for _ in range(max_depth):
        if not frontier:
            break
        candidates, spent = expand_unique(expand, frontier, expansions)  # identical expansions are one state
        tokens += spent
        if not candidates:
            break
        values = score([p for p, _ in candidates])
        calls += len(candidates)
        ranked = sorted(zip(candidates, values), key=lambda cv: -cv[1])  # stable: ties keep generation order
        frontier = []
        for (path, final), value in ranked:
            if final:
                solutions.append((path, value))
                kept.append((path, value))
            elif len(frontier) < breadth and (threshold is None or value >= threshold):
                frontier.append(path)
                kept.append((path, value))
                if value > best_partial[1]:
                    best_partial = (path, value)
    return _result(solutions, best_partial, kept, tokens, calls)


def tot_dfs(
    expand: Expand,
    score: Score,
    *,
    expansions: int = 5,
    threshold: float = 0.5,
    max_depth: int = 16,
    max_nodes: int = 100,
) -> TotResult:
    """Depth-first tree of thoughts with pruning and backtracking; see the module docstring.

    `a` looks best but all its children fall below the threshold: DFS backs out and finds `b1`.

    >>> tree = {(): [("a", False), ("b", False)], ("a",): [("a1", True)], ("b",): [("b1", True)]}
    >>> values = {("a",): 0.9, ("b",): 0.6, ("a", "a1"): 0.1, ("b", "b1"): 0.8}
    >>> expand = lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]][:k] for p in ps]
    >>> score = lambda ps: [values[tuple(p)] for p in ps]
    >>> res = tot_dfs(expand, score, threshold=0.5)
    >>> res.steps, [p for p, _ in res.kept]
    (['b', 'b1'], [['a'], ['b'], ['b', 'b1']])
    >>> tot_dfs(expand, score, threshold=0.5, max_nodes=2).steps   # budget spent before b: best finished so far
    ['a', 'a1']
    """
    if expansions < 1 or max_nodes < 1:
        raise ValueError("expansions and max_nodes must be at least 1")
    kept: list[tuple[list[str], float]] = []
    solutions: list[tuple[list[str], float]] = []
    best_partial: tuple[list[str], float] = ([], float("-inf"))
    tokens = calls = expanded = 0

    def visit(prefix: list[str]) -> bool:
        """Search below `prefix`; True once a finished solution worth `threshold` is found."""
        nonlocal tokens, calls, expanded, best_partial
        if len(prefix) >= max_depth or expanded >= max_nodes:
            return False
        expanded += 1
        (options,) = expand([prefix], expansions)
        children: dict[str, bool] = {}
        for step, final, spent in options:
            tokens += spent
            children.setdefault(step, final)  # identical expansions are one child
        if not children:
            return False
        paths = [prefix + [step] for step in children]
        values = score(paths)
        calls += len(paths)
        for path, final, value in zip(paths, children.values(), values):
            if final:
                solutions.append((path, value))
            elif value > best_partial[1]:
                best_partial = (path, value)
        ranked = sorted(zip(paths, children.values(), values), key=lambda pfv: -pfv[2])  # stable
        for path, final, value in ranked:
            if value < threshold:
                break  # this child and every later one are pruned
            kept.append((path, value))
            if final or visit(path):
                return True
        return False

    visit([])
    return _result(solutions, best_partial, kept, tokens, calls)


def _result(
    solutions: list[tuple[list[str], float]],
    best_partial: tuple[list[str], float],
    kept: list[tuple[list[str], float]],
    tokens: int,
    calls: int,
) -> TotResult:
    if solutions:
        steps, value = max(solutions, key=lambda pv: pv[1])  # ties: the first found
        return TotResult(steps, value, True, kept, tokens, calls)
    return TotResult(best_partial[0], best_partial[1], False, kept, tokens, calls)
