"""One entry point for every search strategy: `solve(problem, task, generator, verifier, strategy, budget)`.

The strategies themselves are pure functions (`vote.py`, `beam.py`, `dvts.py`,
`mcts.py`, `tot.py`); this module connects them to a real generator and
verifier and counts what they spend:

- generator tokens: tokens the generator wrote (prompt encodings are not counted;
  the engine shares a prompt's encoding across the samples drawn from it);
- verifier tokens: tokens the verifier read to score (prompt and solution).

A tree search whose budget runs out before any solution finishes completes its
best partial solution greedily (those tokens count too), so every strategy
gives an answer; `Outcome.finished` says whether the search itself finished.

`budget` is the one knob a compute-matched comparison turns:

| strategy | budget N means |
|---|---|
| `majority`, `best_of_n`, `weighted_vote` | N complete samples |
| `beam` | N candidates per depth: beam width N/4 (at least 1), 4 expansions each (N if N < 4); with `lookahead=k` each candidate is ranked by the value k sampled steps ahead (those tokens count) |
| `dvts` | N candidates per depth split into N/4 independent subtrees of 4 |
| `mcts` | 4N simulations, 4 children per expanded node (N if N < 4) |
| `tot_bfs` | keeps N/4 states (at least 1), 4 expansions each |
| `tot_dfs` | at most 2N expanded nodes, 4 children each, prune below 0.5 |

Verifiers are anything with `score_prefixes(prompts, prefixes)` (a value per
partial solution, used inside the tree searches) and `score_many(prompts,
solutions)` (a score per complete solution, used by best-of-N and weighted
vote), plus a `tokens_scored` counter; every verifier in `reasonloop.verifiers`
has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasonloop.core import Problem, join_steps, split_steps
from reasonloop.search.beam import beam_search, generator_expand
from reasonloop.search.dvts import dvts
from reasonloop.search.mcts import mcts
from reasonloop.search.tot import tot_bfs, tot_dfs
from reasonloop.search.vote import best_of_n, majority_vote, weighted_vote_pick

STRATEGIES = ("majority", "best_of_n", "weighted_vote", "beam", "dvts", "mcts", "tot_bfs", "tot_dfs")
SAMPLING = ("majority", "best_of_n", "weighted_vote")  # whole solutions; these batch across problems
NEEDS_VERIFIER = set(STRATEGIES) - {"majority"}


@dataclass
class Outcome:
    """What a search returns for one problem."""

    answer: str | None
    text: str  # the chosen solution
    generator_tokens: int
    verifier_tokens: int
    finished: bool = True
    kept: list[Any] = field(default_factory=list)  # candidates or tree, strategy-specific (JSON-friendly)


def solve(
    problem: Problem,
    task,
    generator,
    verifier,
    strategy: str,
    budget: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    max_depth: int = 12,
    lookahead: int = 0,
    seed: int = 0,
) -> Outcome:
    """Answer `problem` with `strategy` at `budget`; see the module docstring (`lookahead`: beam search only)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if strategy in NEEDS_VERIFIER and verifier is None:
        raise ValueError(f"strategy {strategy!r} needs a verifier")
    if budget < 1:
        raise ValueError("budget must be at least 1")
    if strategy in SAMPLING:
        return solve_sampling([problem], task, generator, verifier, strategy, budget,
                              temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)[0]  # fmt: skip
    delim = task.step_delimiter
    v_before = verifier.tokens_scored

    expand = generator_expand(
        generator, problem.prompt, delim, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )

    def score(prefixes: list[list[str]]) -> list[float]:
        return verifier.score_prefixes([problem.prompt] * len(prefixes), prefixes)

    k = 4 if budget >= 4 else budget
    width = max(1, budget // 4)
    if strategy == "beam":
        res = beam_search(expand, score, beam_width=width, expansions=k, max_depth=max_depth, lookahead=lookahead)
        kept = [[join_steps(s, delim), v] for s, v in res.kept]
    elif strategy == "dvts":
        res = dvts(expand, score, budget=width * k, beam_width=k, max_depth=max_depth)
        kept = [[join_steps(r.steps, delim), r.score] for r in res.subtrees]
    elif strategy == "mcts":
        res = mcts(expand, score, simulations=4 * budget, expansions=k, max_depth=max_depth, seed=seed)
        kept = [[join_steps(list(p), delim), n, q] for p, n, q in res.tree]
    elif strategy == "tot_bfs":
        res = tot_bfs(expand, score, breadth=width, expansions=k, max_depth=max_depth)
        kept = [[join_steps(s, delim), v] for s, v in res.kept]
    else:
        res = tot_dfs(expand, score, expansions=k, threshold=0.5, max_depth=max_depth, max_nodes=2 * budget)
        kept = [[join_steps(s, delim), v] for s, v in res.kept]
    text, tokens = join_steps(res.steps, delim), res.generator_tokens
    if not res.finished:  # the budget ran out mid-solution: finish the best partial one greedily, so there is an answer
        prefix = "".join(s + delim for s in res.steps)
        ((rest,),) = generator.generate([problem.prompt + prefix], 1, temperature=0.0, max_new_tokens=max_new_tokens)
        text, tokens = prefix + rest.text, tokens + len(rest.token_ids)
    return Outcome(task.extract_answer(text), text, tokens, verifier.tokens_scored - v_before, res.finished, kept)


def solve_sampling(
    problems: list[Problem],
    task,
    generator,
    verifier,
    strategy: str,
    budget: int,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
) -> list[Outcome]:
    """Majority vote, best-of-N or weighted vote for many problems at once: one generator call for all of them and
    one verifier call per problem, so small problems do not pay a generator call each. The same rules as `solve`
    (the samples differ: one seed serves the whole batch)."""
    if strategy not in SAMPLING:
        raise ValueError(f"solve_sampling handles {', '.join(SAMPLING)}, not {strategy!r}")
    if strategy != "majority" and verifier is None:
        raise ValueError(f"strategy {strategy!r} needs a verifier")
    delim = task.step_delimiter
    outs = generator.generate(
        [p.prompt for p in problems], budget, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    scores: list[list[float]] = [[] for _ in problems]
    spent = [0] * len(problems)
    if strategy != "majority":
        for i, (p, samples) in enumerate(zip(problems, outs)):  # per problem, so verifier tokens are attributed
            before = verifier.tokens_scored
            scores[i] = verifier.score_many([p.prompt] * len(samples), [split_steps(s.text, delim) for s in samples])
            spent[i] = verifier.tokens_scored - before
    results = []
    for samples, sc, v_tokens in zip(outs, scores, spent):
        tokens = sum(len(s.token_ids) for s in samples)
        answers = [task.extract_answer(s.text) for s in samples]
        if strategy == "majority":
            answer = majority_vote(answers)
            text = next((s.text for s, a in zip(samples, answers) if a == answer), samples[0].text)
            results.append(Outcome(answer, text, tokens, 0, kept=answers))
        elif strategy == "best_of_n":
            i = best_of_n(sc)
            results.append(Outcome(answers[i], samples[i].text, tokens, v_tokens, kept=list(zip(answers, sc))))
        else:
            i = weighted_vote_pick(answers, sc)
            results.append(Outcome(answers[i], samples[i].text, tokens, v_tokens, kept=list(zip(answers, sc))))
    return results
