"""How a process verifier's per-step scores become one solution score, for best-of-N and weighted voting.

    score = aggregate_steps(verifier.score_steps(problem, steps), "min")

The rules are the ones compared in the PRM literature: the weakest step ("min",
Lightman et al. 2023; Wang et al. 2024, Math-Shepherd), the last step ("last",
the PRM's view of the whole prefix), the product of step probabilities
("product", Lightman et al. 2023: the chance that every step is right if steps
err independently) and the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

STEP_AGGREGATES = ("min", "last", "product", "mean")


def aggregate_steps(step_scores: Sequence[float], how: str, empty: float | None = None) -> float:
    """One score from the per-step scores of a solution (higher is better).

    A solution with no steps (the generator stopped at once) scores `empty`,
    which verifiers set to the lowest score of their kind, so best-of-N never
    picks it over a real attempt; with `empty=None` it is an error.

    "product" treats the scores as probabilities that each step is right, so it
    assumes they lie in [0, 1]; on raw logits or log-ratios it is meaningless
    (and not monotone), so use "min", "last" or "mean" there.

    >>> [aggregate_steps([0.5, 0.25, 0.75], how) for how in STEP_AGGREGATES]
    [0.25, 0.75, 0.09375, 0.5]
    >>> aggregate_steps([0.9], "product"), aggregate_steps([], "min", empty=0.0)
    (0.9, 0.0)
    """
    if how not in STEP_AGGREGATES:
        raise ValueError(f"unknown step aggregate '{how}', expected one of {', '.join(STEP_AGGREGATES)}")
    if not step_scores:
        if empty is None:
            raise ValueError("aggregate_steps needs at least one step score")
        return empty
    if how == "min":
        return float(min(step_scores))
    if how == "last":
        return float(step_scores[-1])
    if how == "product":
        return float(math.prod(step_scores))
    return math.fsum(step_scores) / len(step_scores)
