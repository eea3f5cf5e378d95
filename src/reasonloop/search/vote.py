"""Selection over sampled solutions: majority vote, weighted vote, best-of-N. Pure functions.

Inputs are per-sample parsed answers (None when a sample has none) and, for the
verifier-guided rules, per-sample scores (higher is better). Ties go to the
earliest sample, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most common answer (ties: the one that appeared first); None if no sample has an answer.

    >>> majority_vote(["3", "4", "4", "3", None, None, None])
    '3'
    >>> majority_vote([None, None]) is None
    True
    """
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    return max(counts, key=lambda a: counts[a]) if counts else None  # dicts keep first-seen order; max keeps the first


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    """The answer whose samples' scores sum highest (Li et al. 2023; Uesato et al. 2022).

    >>> weighted_vote(["3", "4", "4"], [0.9, 0.3, 0.4])
    '3'
    """
    totals: dict[str, float] = {}
    for a, s in zip(answers, scores, strict=True):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + s
    return max(totals, key=lambda a: totals[a]) if totals else None


def best_of_n(scores: Sequence[float]) -> int:
    """Index of the highest-scoring sample (ties: the first).

    >>> best_of_n([0.2, 0.7, 0.7, -1.0])
    1
    """
    if not scores:
        raise ValueError("best_of_n needs at least one sample")
    return max(range(len(scores)), key=lambda i: scores[i])


def weighted_vote_pick(answers: Sequence[str | None], scores: Sequence[float]) -> int:
    """Index of the sample a weighted vote answers with: the top-scored sample among those with the winning answer.

    Where a right answer can come with a wrong solution (countdown states the
    target whether or not its steps reach it), the vote is only as good as the
    sample it picks; the first sample if none has an answer.

    >>> weighted_vote_pick(["3", "4", "4"], [0.9, 0.3, 0.4]), weighted_vote_pick(["3", "4", "4"], [0.5, 0.3, 0.4])
    (0, 2)
    """
    answer = weighted_vote(answers, scores)
    if answer is None:
        return 0
    return max((i for i, a in enumerate(answers) if a == answer), key=lambda i: scores[i])
