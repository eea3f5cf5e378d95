"""Step-level beam search guided by a verifier (as in Snell et al. 2024; Setlur et al. 2024). A pure function.

The model calls are arguments, so the search can be tested on hand-built trees:

- `expand(prefixes, k)`: for each partial solution (a list of steps), `k` candidate
  next steps, each `(step, is_final, tokens_spent)`;
- `score(prefixes)`: a verifier value for each partial solution (higher is better).

Each depth, every live beam is expanded `expansions` times; the `beam_width`
best candidates (by score) survive. A candidate that ends its solution is set
aside; the search stops when `beam_width` solutions are finished or at
`max_depth`, and returns the best-scoring finished solution (or, if none
finished, the best partial one).

With `lookahead=k > 0` (Snell et al. 2024, section 5), an unfinished candidate is
ranked by the verifier value of its continuation `k` steps ahead, one sample per
step (`expand(..., 1)`), stopping early where the continuation finishes; the beam
keeps the candidate itself, not the rolled-out path, and the rollouts' tokens count
as generator tokens. Snell et al. roll out at temperature 0; here the rollout
samples with the same `expand` as the search, so pass a greedy one for their setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Expand = Callable[[list[list[str]], int], list[list[tuple[str, bool, int]]]]
Score = Callable[[list[list[str]]], list[float]]


@dataclass(frozen=True)
class BeamResult:
    steps: list[str]  # the chosen solution
    score: float  # its verifier score
    finished: bool  # whether it ended (else the best partial solution at max_depth)
    kept: list[tuple[list[str], float]] = field(default_factory=list)  # every finished solution with its score
    generator_tokens: int = 0  # tokens the expansions spent
    verifier_calls: int = 0  # partial solutions scored


def beam_search(
    expand: Expand,
    score: Score,
    *,
    beam_width: int = 4,
    expansions: int = 4,
    max_depth: int = 16,
    lookahead: int = 0,
) -> BeamResult:
    """Search for the best-scoring solution; see the module docstring.

    >>> tree = {(): [("a", False), ("b", False)], ("a",): [("a1", True)], ("b",): [("b1", True)]}
    >>> values = {("a",): 0.9, ("b",): 0.1, ("a", "a1"): 0.2, ("b", "b1"): 0.8}
    >>> expand = lambda ps, k: [[(s, f, 1) for s, f in tree[tuple(p)]] for p in ps]
    >>> score = lambda ps: [values[tuple(p)] for p in ps]
    >>> beam_search(expand, score, beam_width=1).steps   # greedy on the verifier: the trap
    ['a', 'a1']
    >>> beam_search(expand, score, beam_width=2).steps
    ['b', 'b1']
    >>> beam_search(expand, score, beam_width=1, lookahead=1).steps   # 'a' is ranked by a1 (0.2), 'b' by b1 (0.8)
    ['b', 'b1']
    """
    if beam_width < 1 or expansions < 1 or lookahead < 0:
        raise ValueError("beam_width and expansions must be at least 1, lookahead at least 0")
    beams: list[list[str]] = [[]]
    finished: list[tuple[list[str], float]] = []
    tokens = calls = 0
    best_partial: tuple[list[str], float] = ([], float("-inf"))
    for _ in range(max_depth):
        if not beams:
            break
        candidates, spent = expand_unique(expand, beams, expansions)
        tokens += spent
        if not candidates:
            break
        scored = [p for p, _ in candidates]
        if lookahead:
            scored, spent = _roll_forward(expand, candidates, lookahead)
            tokens += spent
        values = score(scored)
        calls += len(candidates)
        ranked = sorted(zip(candidates, values), key=lambda cv: -cv[1])  # stable: ties keep generation order
        beams = []
        for (path, final), value in ranked:
            if final:
                finished.append((path, value))
            elif len(beams) < beam_width:
                beams.append(path)
                if value > best_partial[1]:
                    best_partial = (path, value)
        if len(finished) >= beam_width:
            break
    if finished:
        steps, value = max(finished, key=lambda pv: pv[1])
        return BeamResult(steps, value, True, finished, tokens, calls)
    return BeamResult(best_partial[0], best_partial[1], False, finished, tokens, calls)


def expand_unique(expand: Expand, frontier: list[list[str]], k: int) -> tuple[list[tuple[list[str], bool]], int]:
    """`k` expansions of each partial solution as `(path, is_final)`, identical paths once; and the tokens spent.

    >>> expand = lambda ps, k: [[("x", False, 2), ("x", False, 2), ("y", True, 1)] for p in ps]
    >>> expand_unique(expand, [["a"]], 3)
    ([(['a', 'x'], False), (['a', 'y'], True)], 5)
    """
    candidates: list[tuple[list[str], bool]] = []
    seen: set[tuple[str, ...]] = set()
    tokens = 0
    for prefix, options in zip(frontier, expand(frontier, k)):
        for step, final, spent in options:
            tokens += spent
            path = prefix + [step]
            if tuple(path) not in seen:
                seen.add(tuple(path))
                candidates.append((path, final))
    return candidates, tokens


def _roll_forward(expand: Expand, paths: list[tuple[list[str], bool]], steps: int) -> tuple[list[list[str]], int]:
    """Extend each unfinished `(path, finished)` by up to `steps` steps of `expand(..., 1)`; the paths and tokens spent.

    A continuation stops early where a step is final or `expand` offers none.

    >>> expand = lambda ps, k: [[(f"s{len(p)}", len(p) == 2, 3)] for p in ps]
    >>> _roll_forward(expand, [(["x"], False), (["y"], True)], 5)
    ([['x', 's1', 's2'], ['y']], 6)
    """
    out = [list(p) for p, _ in paths]
    live = [i for i, (_, finished) in enumerate(paths) if not finished]
    tokens = 0
    for _ in range(steps):
        if not live:
            break
        still = []
        for i, options in zip(live, expand([out[i] for i in live], 1)):
            tokens += sum(spent for _, _, spent in options)
            if options:
                step, final, _ = options[0]
                out[i].append(step)
                if not final:
                    still.append(i)
        live = still
    return out, tokens


def generator_expand(
    generator, prompt: str, delimiter: str = "\n", *, temperature: float = 1.0, max_new_tokens: int = 64, seed: int = 0
) -> Expand:
    """An `expand` that asks a `Generator` for the next step of each prefix (one call, `stop=[delimiter]`).

    A step is final when generation ended for another reason than the delimiter
    (end of sequence or the token budget). Prefixes sharing a prompt reuse its
    encoding inside the engine.
    """
    calls = iter(range(1 << 30))

    def expand(prefixes: list[list[str]], k: int) -> list[list[tuple[str, bool, int]]]:
        prompts = [prompt + "".join(s + delimiter for s in p) for p in prefixes]
        out = generator.generate(
            prompts,
            k,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            stop=[delimiter],
            seed=seed + next(calls),
        )
        return [
            [(s.text.strip(), s.meta.get("finish_reason") != "stop", len(s.token_ids)) for s in samples]
            for samples in out
        ]

    return expand
