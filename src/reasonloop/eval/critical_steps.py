"""How often the Monte-Carlo critical step of a wrong solution is its true first error, against the rollouts k.

The built-in worlds check every step exactly (`task.first_error`), so the first pit found from k rollouts per
prefix (`reasonloop.train.step_pairs.critical_step`) can be scored against the truth. Values at a smaller k are
read off the same rollouts (the first k of each prefix), so every k is measured on the same solutions.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonloop.train.step_pairs import critical_step


def values_at_k(wins: Sequence[Sequence[float]], final: float, k: int) -> list[float]:
    """Prefix values from the first `k` rollout grades of each prefix, then the solution's own grade.

    >>> values_at_k([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], 0.0, 2)
    [0.5, 0.0, 0.0]
    """
    return [sum(w[:k]) / len(w[:k]) for w in wins] + [final]


def critical_step_agreement(
    solutions: Sequence[tuple[Sequence[Sequence[float]], int]], ks: Sequence[int], pit: float = 0.0
) -> list[dict[str, float | int]]:
    """For each k: the share of wrong solutions whose first pit is their true first error (`agreement`), has a pit
    at all (`found`), has it before the true error (`early`: rollouts failed from a still-sound prefix) or after it
    (`late`: rollouts recovered past the error). `solutions` are (rollout grades per prefix, true first error)
    of wrong solutions (final grade 0) whose first error is known.

    >>> sols = [([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], 1), ([[0.0, 0.0], [1.0, 1.0]], 0)]  # (wins, true error)
    >>> critical_step_agreement(sols, [1, 2])  # k=1 blames step 0 of the first too early; k=2 finds step 1
    [{'k': 1, 'n': 2, 'agreement': 0.0, 'found': 0.5, 'early': 0.5, 'late': 0.0}, {'k': 2, 'n': 2, 'agreement': 0.5, 'found': 0.5, 'early': 0.0, 'late': 0.0}]
    """
    out = []
    n = len(solutions)
    for k in ks:
        picks = [(critical_step(values_at_k(wins, 0.0, k), correct=False, pit=pit), truth) for wins, truth in solutions]
        out.append(
            {
                "k": k,
                "n": n,
                "agreement": sum(c == t for c, t in picks) / max(1, n),
                "found": sum(c is not None for c, _ in picks) / max(1, n),
                "early": sum(c is not None and c < t for c, t in picks) / max(1, n),
                "late": sum(c is not None and c > t for c, t in picks) / max(1, n),
            }
        )
    return out
