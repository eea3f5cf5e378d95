"""Accuracy metrics over sampled answers: pass@k (Chen et al. 2021), maj@k, greedy accuracy."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from `n` samples of which `c` are correct (Chen et al. 2021, eq. 1).

    pass@k = 1 - C(n - c, k) / C(n, k), computed as a stable product.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 3, 2)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_correct(
    answers: Sequence[str | None], reference: str, rewards: Sequence[float | None] | None = None
) -> float:
    """Credit of a majority vote: 1 if the reference is the unique most common answer,
    1/t if it ties with t-1 others (the expected value of a random tie-break), else 0.
    `None` (no answer) never wins.

    With `rewards` (each sample's grade), the vote picks a sample with the winning
    answer and earns its grade: the credit is the mean reward of the winners'
    samples. This matters where a right answer can come with a wrong solution
    (countdown: every sample states the target, only valid expressions count).

    >>> majority_correct(["3", "3", "4"], "3"), majority_correct(["3", "4"], "3"), majority_correct([None, None, "3"], "3")
    (1.0, 0.5, 1.0)
    >>> majority_correct(["24", "24", "7"], "24", rewards=[1.0, 0.0, 0.0])
    0.5
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    winners = [a for a, c in counts.items() if c == top]
    if rewards is None:
        return 1.0 / len(winners) if reference in winners else 0.0
    credit = 0.0
    for w in winners:
        got = [r or 0.0 for a, r in zip(answers, rewards, strict=True) if a == w]
        credit += sum(got) / len(got)
    return credit / len(winners)


def maj_at_k(
    answers: Sequence[str | None], reference: str, k: int, rewards: Sequence[float | None] | None = None
) -> float:
    """maj@k estimated from n >= k samples: the mean credit of majority votes over all
    n//k disjoint groups of k consecutive samples (exact when k == n); `rewards` as in `majority_correct`.

    >>> maj_at_k(["3", "4", "3", "3"], "3", 2), maj_at_k(["3", "4", "3", "3"], "3", 4)
    (0.75, 1.0)
    """
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    groups = n // k
    cut = (lambda g: rewards[g * k : (g + 1) * k]) if rewards is not None else (lambda g: None)
    return sum(majority_correct(answers[g * k : (g + 1) * k], reference, cut(g)) for g in range(groups)) / groups


def ks_up_to(n: int) -> list[int]:
    """Powers of two up to n, plus n.

    >>> ks_up_to(16), ks_up_to(12)
    ([1, 2, 4, 8, 16], [1, 2, 4, 8, 12])
    """
    ks = [2**i for i in range(int(math.log2(n)) + 1) if 2**i <= n] if n >= 1 else []
    return ks + ([n] if n not in ks else [])
