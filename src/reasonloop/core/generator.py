"""The `Generator` and `Verifier` protocols, declared here so any layer can take one without importing its module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reasonloop.core.seeding import derive_seed
from reasonloop.core.types import Problem, Sample


def prompt_keys(prompts: list[str], n: int, max_new_tokens: int, seed: int, seeds: list[int] | None) -> list[int]:
    """Check the arguments of a `generate` call (a one-line `ValueError`) and return each prompt's key: `seeds[i]`,
    or `derive_seed(seed, i)`. Every backend keys prompt i's random streams by it.

    >>> prompt_keys(["a", "b"], 1, 8, 0, [5, 6])
    [5, 6]
    """
    if n < 1 or max_new_tokens < 1:
        raise ValueError("need n >= 1 and max_new_tokens >= 1")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds has {len(seeds)} entries for {len(prompts)} prompts")
    return list(seeds) if seeds is not None else [derive_seed(seed, i) for i in range(len(prompts))]


@dataclass
class TokenCounts:
    """Compute spent by a generator: tokens it generated, prompt tokens it encoded, tokens it scored."""

    generated: int = 0
    prefilled: int = 0
    scored: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.generated + self.prefilled + self.scored

    def __sub__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.generated - other.generated,
            self.prefilled - other.prefilled,
            self.scored - other.scored,
            self.calls - other.calls,
        )

    def copy(self) -> TokenCounts:
        return TokenCounts(self.generated, self.prefilled, self.scored, self.calls)


@runtime_checkable
class Generator(Protocol):
    """Anything that writes and scores completions.

    `generate` returns, for each prompt, `n` samples. With `stop=[delimiter]` it
    yields one step at a time. A sample's randomness is its own: the `hf` backend
    draws sample j of prompt i from a stream keyed by (`seed`, i, j), or by
    (`seeds[i]`, j) when the caller keys prompts itself, never from a stream the
    whole batch shares. `logprobs` returns, per (prompt, completion) pair,
    the log-probability of each completion token. `counts` accumulates compute.
    """

    counts: TokenCounts

    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        *,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[list[Sample]]: ...

    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]: ...


@runtime_checkable
class Verifier(Protocol):
    """Anything that scores solutions (lists of steps) and their steps: ORM, PRM, PAV, GenRM, DPO verifier.

    `score` is one number for a whole solution (higher is better); `score_steps`
    one number per step. The batched forms take parallel lists of prompts and
    solutions; `score_prefixes` scores unfinished solutions (what beam search and
    MCTS rank). `tokens_scored` counts the tokens read so far, so search and RL
    report verifier compute next to the generator's.
    """

    tokens_scored: int

    def score(self, problem: Problem, steps: list[str]) -> float: ...

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]: ...

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]: ...

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]: ...

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]: ...
