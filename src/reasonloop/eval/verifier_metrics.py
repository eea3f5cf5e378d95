"""How well a verifier tells right from wrong: AUROC of solution scores, and ProcessBench's
first-error F1 for process verifiers (Zheng et al. 2024, "ProcessBench").

    auroc(scores, [int(s.reward == 1.0) for s in samples])        # outcome verifier
    t = best_threshold(calib_step_scores, calib_first_errors)     # on a calibration set
    pred = [predicted_first_error(s, t) for s in test_step_scores]
    error_step_f1(pred, test_first_errors)["f1"]                  # process verifier

A process verifier's guess of the first wrong step is the first step scored
below a threshold. ProcessBench scores that guess with the accuracy on
erroneous samples (guess == true first-error index), the accuracy on correct
samples (no step flagged) and their harmonic mean, F1. True first errors come
from exact step labels, e.g. `ArithTask.first_error`.

Departure from ProcessBench: it picks the PRM threshold on held-out data;
`best_threshold` picks it on whatever it is given, which is optimistic if that
is the evaluation set, so pass a separate calibration set.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of telling label 1 from label 0 by score: the chance that a random
    positive outscores a random negative, ties counted as half (Mann-Whitney U / (n_pos * n_neg)).

    Computed from mid-ranks in O(n log n).

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])  # pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4; lost: 0.35<0.4
    0.75
    >>> auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1])  # (0.5 vs 0.5) is a tie worth 1/2: (1/2 + 1 + 1 + 1) / 4
    0.875
    >>> auroc([3, 3, 3], [1, 0, 1]), auroc([0, 1], [1, 0])
    (0.5, 0.0)
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc: {len(scores)} scores but {len(labels)} labels")
    if any(y not in (0, 1) for y in labels):
        raise ValueError("auroc: labels must be 0 or 1")
    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    pos_rank_sum = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mid_rank = (start + end) / 2 + 1  # 1-based ranks start+1 .. end+1 share their mean
        pos_rank_sum += mid_rank * sum(1 for i in order[start : end + 1] if labels[i] == 1)
        start = end + 1
    u = pos_rank_sum - n_pos * (n_pos + 1) / 2  # pairs a positive wins, ties as half
    return u / (n_pos * n_neg)


def auroc_or_none(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """`auroc`, or None when every label is the same (all right or all wrong).

    >>> auroc_or_none([0.1, 0.9], [1, 1]) is None
    True
    """
    return auroc(scores, labels) if 0 < sum(labels) < len(labels) else None


def auroc_within(scores: Sequence[float], labels: Sequence[int], n: int) -> float | None:
    """Mean AUROC within consecutive groups of `n` (the samples of one problem) over the groups with both labels:
    the ranking best-of-n needs. None when no group has both.

    >>> auroc_within([0.9, 0.1, 0.3, 0.2, 0.5, 0.6], [1, 0, 0, 1, 1, 1], 2)  # 1.0 and 0.0; the third group all right
    0.5
    """
    values = [auroc_or_none(scores[i : i + n], labels[i : i + n]) for i in range(0, len(scores), n)]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def predicted_first_error(step_scores: Sequence[float], threshold: float) -> int | None:
    """A process verifier's guess of the first wrong step: the first step scored below `threshold`,
    None if no step is.

    >>> predicted_first_error([0.9, 0.8, 0.3, 0.1], 0.5), predicted_first_error([0.9, 0.5], 0.5)
    (2, None)
    """
    for i, s in enumerate(step_scores):
        if s < threshold:
            return i
    return None


def _harmonic_mean(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def error_step_f1(predicted: Sequence[int | None], truth: Sequence[int | None]) -> dict:
    """ProcessBench's score of first-error guesses against true first-error indices (None: no error).

    error_accuracy: share of erroneous samples (truth not None) whose guess is the true index;
    correct_accuracy: share of correct samples (truth None) guessed None;
    f1: the harmonic mean of the two (0 when both are 0).
    If a class has no samples its accuracy is nan, and so is f1.

    >>> r = error_step_f1([1, 2, None, None, 0], [1, 3, None, None, None])
    >>> r["error_accuracy"], r["correct_accuracy"], round(r["f1"], 6), r["n_error"], r["n_correct"]
    (0.5, 0.6666666666666666, 0.571429, 2, 3)
    >>> r = error_step_f1([None, 0], [None, None])
    >>> r["error_accuracy"], r["correct_accuracy"], r["f1"]
    (nan, 0.5, nan)
    """
    if len(predicted) != len(truth):
        raise ValueError(f"error_step_f1: {len(predicted)} predictions but {len(truth)} true indices")
    n_error = sum(1 for t in truth if t is not None)
    n_correct = len(truth) - n_error
    hits_error = sum(1 for p, t in zip(predicted, truth, strict=True) if t is not None and p == t)
    hits_correct = sum(1 for p, t in zip(predicted, truth, strict=True) if t is None and p is None)
    error_accuracy = hits_error / n_error if n_error else math.nan
    correct_accuracy = hits_correct / n_correct if n_correct else math.nan
    return {
        "error_accuracy": error_accuracy,
        "correct_accuracy": correct_accuracy,
        "f1": _harmonic_mean(error_accuracy, correct_accuracy),
        "n_error": n_error,
        "n_correct": n_correct,
    }


def best_threshold(step_scores_list: Sequence[Sequence[float]], truth: Sequence[int | None]) -> float:
    """The threshold that maximises `error_step_f1`'s f1 when `predicted_first_error` uses it.

    Candidates are the distinct observed scores (a threshold t flags scores < t, so every
    threshold between two observed scores acts like the upper one) and one just above the
    largest (flag every step). Ties go to the smallest threshold, the one flagging least.
    Choosing it on the evaluation set is optimistic: pass a separate calibration set.

    >>> best_threshold([[0.9, 0.2, 0.1], [0.8, 0.7], [0.4, 0.9]], [1, None, 0])
    0.7
    """
    if len(step_scores_list) != len(truth):
        raise ValueError(f"best_threshold: {len(step_scores_list)} score lists but {len(truth)} true indices")
    n_error = sum(1 for t in truth if t is not None)
    n_correct = len(truth) - n_error
    if n_error == 0 or n_correct == 0:
        raise ValueError(f"best_threshold needs both classes, got {n_error} erroneous and {n_correct} correct samples")
    observed = sorted({s for scores in step_scores_list for s in scores})
    if not observed:
        raise ValueError("best_threshold needs at least one step score")
    candidates = observed + [math.nextafter(observed[-1], math.inf)]
    # Trying every candidate on every sample is O(candidates * steps), too slow for a
    # ProcessBench-sized set. Instead: a sample's guess is right exactly for thresholds t
    # in (lo, hi], with hi = the minimum score before the true first error (inf if none)
    # and lo = the score at the true first error (-inf for a correct sample), so count
    # the intervals covering each candidate with a difference array over sorted candidates.
    hits_error = [0] * (len(candidates) + 1)
    hits_correct = [0] * (len(candidates) + 1)
    for scores, t in zip(step_scores_list, truth, strict=True):
        if t is not None and t >= len(scores):
            continue  # the true first error lies past the scored steps: no threshold guesses it
        k = len(scores) if t is None else t
        hi = min(scores[:k], default=math.inf)
        lo = -math.inf if t is None else scores[k]
        first, last = bisect.bisect_right(candidates, lo), bisect.bisect_right(candidates, hi)
        if first < last:
            counts = hits_correct if t is None else hits_error
            counts[first] += 1
            counts[last] -= 1
    best_f1, best_t = -1.0, candidates[0]
    running_error = running_correct = 0
    for i, threshold in enumerate(candidates):
        running_error += hits_error[i]
        running_correct += hits_correct[i]
        f1 = _harmonic_mean(running_error / n_error, running_correct / n_correct)
        if f1 > best_f1:
            best_f1, best_t = f1, threshold
    return best_t
