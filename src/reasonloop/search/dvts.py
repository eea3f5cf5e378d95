"""Diverse verifier tree search (DVTS; Beeching, Tunstall and Rush 2024, "Scaling test-time compute"). A pure function.

The model calls are arguments, as in `beam.py`: `expand(prefixes, k)` gives `k`
candidate next steps per partial solution, each `(step, is_final, tokens_spent)`,
and `score(prefixes)` a verifier value per partial solution.

Beam search with a budget of N candidates per step and beam width M lets the
verifier's favourites crowd out the rest: all N candidates often descend from one
or two early steps. DVTS splits the budget into N / M independent subtrees; each is
a beam of width 1 that samples M next steps and keeps the one the verifier values
most, until it takes a final step or reaches `max_depth`. Subtrees diverge because
each samples its own steps (with a greedy `expand` they would all be one tree).
The answer is the best finished solution over the subtrees.

All live subtrees advance together, one `expand` and one `score` call per depth,
so a real generator sees one batch. A subtree's candidates that end a solution but
are not its best are dropped, as in the blog's code (huggingface/search-and-learn).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reasonloop.search.beam import BeamResult, Expand, Score


@dataclass(frozen=True)
class DvtsResult:
    steps: list[str]  # the chosen solution
    score: float  # its verifier score
    finished: bool  # whether it ended (else the best partial solution at max_depth)
    subtrees: list[BeamResult] = field(default_factory=list)  # each subtree's own result and accounting
    generator_tokens: int = 0  # tokens all expansions spent
    verifier_calls: int = 0  # partial solutions scored


def dvts(expand: Expand, score: Score, *, budget: int = 16, beam_width: int = 4, max_depth: int = 16) -> DvtsResult:
    """Search `budget // beam_width` subtrees, each greedy on the verifier; see the module docstring.

    A sampler that hands out a node's children in turn: subtree 0 sees a and b, subtree 1 sees c and d.
    Subtree 1 starts better (c: 0.7) but subtree 0 ends better.

    >>> tree = {(): ["a", "b", "c", "d"], ("a",): ["a1"], ("c",): ["c1"]}
    >>> values = {("a",): 0.6, ("b",): 0.5, ("c",): 0.7, ("d",): 0.2, ("a", "a1"): 0.9, ("c", "c1"): 0.4}
    >>> drawn = {}
    >>> def expand(ps, k):
    ...     out = []
    ...     for p in ps:
    ...         pool, i = tree[tuple(p)], drawn.get(tuple(p), 0)
    ...         drawn[tuple(p)] = i + k
    ...         out.append([(pool[j % len(pool)], len(p) == 1, 1) for j in range(i, i + k)])
    ...     return out
    >>> score = lambda ps: [values[tuple(p)] for p in ps]
    >>> res = dvts(expand, score, budget=4, beam_width=2)
    >>> res.steps, [t.steps for t in res.subtrees]
    (['a', 'a1'], [['a', 'a1'], ['c', 'c1']])
    """
    if beam_width < 1 or budget < beam_width or budget % beam_width:
        raise ValueError("budget must be a positive multiple of beam_width")
    n = budget // beam_width
    paths: list[list[str]] = [[] for _ in range(n)]
    values = [float("-inf")] * n
    finished = [False] * n
    tokens, calls = [0] * n, [0] * n
    live = list(range(n))
    for _ in range(max_depth):
        if not live:
            break
        candidates: list[tuple[int, list[str], bool]] = []  # (subtree, path, final)
        for i, options in zip(live, expand([paths[i] for i in live], beam_width)):
            seen: set[str] = set()
            for step, final, spent in options:
                tokens[i] += spent
                if step not in seen:  # identical samples are one candidate
                    seen.add(step)
                    candidates.append((i, paths[i] + [step], final))
        scores = score([p for _, p, _ in candidates]) if candidates else []
        best: dict[int, tuple[list[str], bool, float]] = {}
        for (i, path, final), value in zip(candidates, scores):
            calls[i] += 1
            if i not in best or value > best[i][2]:  # ties: the first sampled
                best[i] = (path, final, value)
        for i in live:
            if i in best:
                paths[i], finished[i], values[i] = best[i]
        live = [i for i in live if i in best and not finished[i]]  # a subtree with no candidates is stuck
    subtrees = [
        BeamResult(
            paths[i], values[i], finished[i], [(paths[i], values[i])] if finished[i] else [], tokens[i], calls[i]
        )
        for i in range(n)
    ]
    done = [t for t in subtrees if t.finished] or subtrees
    chosen = max(done, key=lambda t: t.score)  # ties: the first subtree
    return DvtsResult(chosen.steps, chosen.score, chosen.finished, subtrees, sum(tokens), sum(calls))
