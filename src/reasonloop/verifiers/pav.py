"""PAV, the process advantage verifier (Setlur et al. 2024, "Rewarding Progress: Scaling Automated Process
Verifiers for LLM Reasoning").

The reward of step i is the value of the prefix under the base policy plus
`alpha` times the step's *advantage* under a prover policy mu:

    r_i = Q_pi(prefix_i) + alpha * (Q_mu(prefix_i) - Q_mu(prefix_{i-1}))

The advantage measures progress: how much the step changed the prover's chance
of finishing correctly. The prover must be distinct from the base; the paper's
default is best-of-K of the base policy, which succeeds from a prefix when any of
K base rollouts does, so with base success rate q its value is 1 - (1 - q)^K.
Both targets therefore come from the same Monte-Carlo rollouts of the base
(`mc_step_values`), and `pav_examples` turns them into training data for two
value heads: one for Q_pi and one for Q_mu.

Departure from the paper: the paper trains one model to predict the advantage
directly; here a value head predicts Q_mu at every prefix (the problem alone
included) and the advantage is the difference of consecutive predictions, which
has the same expectation and lets one network serve every step.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonloop.core import Problem
from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps
from reasonloop.verifiers.value import StepExample, ValueVerifier, prm_examples


def best_of_k_values(values: Sequence[float], k: int) -> list[float]:
    """Success probability of the best-of-k prover from each prefix, given the base's.

    >>> best_of_k_values([0.0, 0.5, 1.0], 2)
    [0.0, 0.75, 1.0]
    """
    if k < 1:
        raise ValueError("the best-of-k prover needs k >= 1")
    return [1.0 - (1.0 - q) ** k for q in values]


def step_advantages(prover_values: Sequence[float]) -> list[float]:
    """A_mu of each step: the change in the prover's value it causes (`len(values) - 1` numbers).

    >>> step_advantages([0.25, 0.75, 0.5, 1.0])
    [0.5, -0.25, 0.5]
    """
    return [b - a for a, b in zip(prover_values, prover_values[1:])]


def pav_examples(
    items: Sequence[tuple[Problem, list[str]]], values: Sequence[list[float]], k: int = 4
) -> tuple[list[StepExample], list[StepExample]]:
    """Training data for the base value head (Q_pi) and the prover value head (Q_mu, best-of-k)."""
    return prm_examples(items, values), prm_examples(items, [best_of_k_values(v, k) for v in values])


class PavVerifier:
    """Step rewards Q_pi + alpha * A_mu from two value heads; `score` aggregates them (`min` by default)."""

    def __init__(self, value: ValueVerifier, prover: ValueVerifier, alpha: float = 1.0, aggregate: str = "min"):
        if aggregate not in STEP_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(STEP_AGGREGATES)}")
        self.value, self.prover, self.alpha, self.aggregate = value, prover, alpha, aggregate

    def step_rewards(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        q_pi = self.value.values(prompts, solutions)
        q_mu = self.prover.values(prompts, solutions)
        return [[v + self.alpha * a for v, a in zip(vs[1:], step_advantages(ms))] for vs, ms in zip(q_pi, q_mu)]

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.step_rewards([problem.prompt], [steps])[0]

    def score(self, problem: Problem, steps: list[str]) -> float:
        return self.score_many([problem.prompt], [steps])[0]

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        # Q_pi lies in [0, 1] and A_mu in [-1, 1]: an empty solution gets the floor, -alpha
        return [aggregate_steps(r, self.aggregate, empty=-self.alpha) for r in self.step_rewards(prompts, solutions)]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        return self.step_rewards(prompts, solutions)

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]:
        """The reward of each partial solution's last step, Q_pi + alpha * A_mu (the paper's beam-search score)."""
        return [r[-1] if r else 0.0 for r in self.step_rewards(prompts, prefixes)]

    @property
    def tokens_scored(self) -> int:
        return self.value.tokens_scored + self.prover.tokens_scored
