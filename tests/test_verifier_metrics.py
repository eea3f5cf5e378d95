import math
import random

import pytest

from reasonloop.eval.verifier_metrics import auroc, auroc_or_none, best_threshold, error_step_f1, predicted_first_error
from reasonloop.tasks import ArithTask
from reasonloop.tasks.arith import parse_expression
from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps


def auroc_by_pairs(scores, labels):
    """Peer implementation: count every (positive, negative) pair, ties as half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def f1_at(step_scores_list, truth, threshold):
    """Peer implementation of the sweep in best_threshold: try the threshold on every sample."""
    return error_step_f1([predicted_first_error(s, threshold) for s in step_scores_list], truth)["f1"]


# --- aggregate_steps ---


def test_aggregate_steps_hand_values():
    scores = [0.8, 0.5, 0.9, 0.6]
    assert aggregate_steps(scores, "min") == 0.5
    assert aggregate_steps(scores, "last") == 0.6
    assert aggregate_steps(scores, "product") == pytest.approx(0.8 * 0.5 * 0.9 * 0.6)  # 0.216
    assert aggregate_steps(scores, "mean") == pytest.approx(2.8 / 4)
    assert all(aggregate_steps([0.3], how) == pytest.approx(0.3) for how in STEP_AGGREGATES)


def test_aggregate_steps_errors():
    with pytest.raises(ValueError, match="'max'.*min, last, product, mean"):
        aggregate_steps([0.5], "max")
    with pytest.raises(ValueError, match="at least one"):
        aggregate_steps([], "min")


# --- auroc ---


@pytest.mark.parametrize(
    "scores,labels,expected",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfectly separated
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0),  # perfectly reversed
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
        ([1, 2, 2, 3], [0, 1, 0, 1], 0.875),  # pairs (2,1)=1, (2,2)=1/2, (3,1)=1, (3,2)=1: 3.5/4
        ([0.3, 0.7, 0.5], [1, 0, 0], 0.0),  # the one positive loses to both negatives
        ([0.6, 0.7, 0.5], [1, 0, 0], 0.5),  # wins one, loses one
    ],
)
def test_auroc_hand_cases(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_matches_pair_counting_on_random_data():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 30)
        labels = [rng.randint(0, 1) for _ in range(n)]
        labels[0], labels[1] = 0, 1  # both classes present
        rng.shuffle(labels)
        scores = [rng.randint(0, 5) / 5 for _ in range(n)]  # few values: many ties
        assert auroc(scores, labels) == pytest.approx(auroc_by_pairs(scores, labels), abs=1e-12)


def test_auroc_errors():
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        auroc([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        auroc([0.1, 0.2], [2, 0])


# --- first-error prediction and ProcessBench F1 ---


def test_predicted_first_error():
    assert predicted_first_error([0.9, 0.4, 0.2], 0.5) == 1
    assert predicted_first_error([0.9, 0.6], 0.5) is None
    assert predicted_first_error([0.5], 0.5) is None  # "below" is strict
    assert predicted_first_error([], 0.5) is None


def test_error_step_f1_hand_cases():
    # 4 erroneous samples, 2 guessed exactly (one guess too early, one error missed); 2 correct samples, 1 unflagged
    r = error_step_f1([0, 2, 1, None, None, 3], [0, 2, 2, 1, None, None])
    assert (r["n_error"], r["n_correct"]) == (4, 2)
    assert r["error_accuracy"] == 0.5 and r["correct_accuracy"] == 0.5
    assert r["f1"] == pytest.approx(0.5)
    r = error_step_f1([1, None, None], [1, 0, None])
    assert r["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # 2/3
    assert error_step_f1([None, None], [3, None])["f1"] == 0.0  # error accuracy 0: harmonic mean 0
    assert error_step_f1([0, 0], [3, None])["f1"] == 0.0  # both accuracies 0


def test_error_step_f1_empty_class_is_nan():
    r = error_step_f1([1, 2], [1, 0])
    assert r["error_accuracy"] == 0.5 and math.isnan(r["correct_accuracy"]) and math.isnan(r["f1"])
    assert r["n_correct"] == 0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        error_step_f1([1, 2], [1])


def test_best_threshold_separable_data_gives_f1_one():
    # right steps score in [0.6, 1], wrong ones in [0, 0.4]: a threshold in (highest wrong, lowest right] is perfect.
    # Erroneous solutions stop at their first error, so every wrong step is a first error.
    rng = random.Random(1)
    step_scores_list, truth, right, wrong = [], [], [], []
    for _ in range(40):
        good = [rng.uniform(0.6, 1.0) for _ in range(rng.randint(0, 5))]
        bad = [rng.uniform(0.0, 0.4)] if rng.random() < 0.5 or not good else []
        right += good
        wrong += bad
        step_scores_list.append(good + bad)
        truth.append(len(good) if bad else None)
    t = best_threshold(step_scores_list, truth)
    assert max(wrong) < t <= min(right)
    assert t == min(right)  # ties go to the smallest threshold
    assert error_step_f1([predicted_first_error(s, t) for s in step_scores_list], truth)["f1"] == 1.0


def test_best_threshold_matches_trying_every_candidate():
    rng = random.Random(2)
    for _ in range(50):
        step_scores_list, truth = [], []
        for _ in range(rng.randint(2, 12)):
            n_steps = rng.randint(0, 5)
            step_scores_list.append([rng.randint(0, 8) / 8 for _ in range(n_steps)])
            truth.append(rng.choice([None, *range(n_steps + 1)]))  # n_steps: an error no guess can hit
        truth[0], truth[1] = None, 0
        step_scores_list[1] = step_scores_list[1] or [0.5]
        observed = sorted({s for ss in step_scores_list for s in ss})
        candidates = observed + [observed[-1] + 1.0]
        f1s = [f1_at(step_scores_list, truth, c) for c in candidates]
        smallest_best = candidates[f1s.index(max(f1s))]
        t = best_threshold(step_scores_list, truth)
        assert f1_at(step_scores_list, truth, t) == pytest.approx(max(f1s))
        if smallest_best == candidates[-1]:
            assert t > observed[-1]  # "flag every step", whatever value stands for it
        else:
            assert t == smallest_best


def test_best_threshold_errors():
    with pytest.raises(ValueError, match="both classes"):
        best_threshold([[0.5], [0.2]], [None, None])
    with pytest.raises(ValueError, match="at least one step score"):
        best_threshold([[], []], [None, 0])


def test_oracle_process_verifier_on_arith_gets_f1_one():
    """Exact step labels as a process verifier (1 for a right step, 0 for a wrong one) find every first error."""
    task = ArithTask()
    p = task.problem_from_chain(parse_expression("12+7*3-5"))
    solutions = {
        "right": ["12+7=19", "19*3=57", "57-5=52", "A: 52"],
        "slip": ["12+7=19", "19*3=56", "56-5=51", "A: 51"],  # later steps consistent with the slip
        "operand": ["12+7=19", "19*4=76", "76-5=71", "A: 71"],
        "first": ["12+7=18", "18*3=54", "54-5=49", "A: 49"],
        "answer": ["12+7=19", "19*3=57", "57-5=52", "A: 50"],
        "skipped": ["12+7=19", "19*3=57", "A: 57"],
    }
    truth = [task.first_error(p, steps) for steps in solutions.values()]
    assert truth == [None, 1, 1, 0, 3, 2]  # by hand
    oracle = [[1.0 if ok else 0.0 for ok in task.step_labels(p, steps)] for steps in solutions.values()]
    predicted = [predicted_first_error(scores, 0.5) for scores in oracle]
    assert error_step_f1(predicted, truth)["f1"] == 1.0
    assert best_threshold(oracle, truth) == 1.0  # the smallest observed score that flags the zeros


def test_error_messages_are_exact():
    with pytest.raises(ValueError, match=r"^auroc: labels must be 0 or 1$"):
        auroc([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match=r"^auroc: 2 scores but 3 labels$"):
        auroc([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match=r"^auroc needs both classes, got 2 positives and 0 negatives$"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match=r"^best_threshold: 1 score lists but 2 true indices$"):
        best_threshold([[0.5]], [None, 0])
    with pytest.raises(ValueError, match=r"^best_threshold needs at least one step score$"):
        best_threshold([[], []], [None, 0])
    with pytest.raises(ValueError, match=r"^best_threshold needs both classes, got 0 erroneous and 2 correct samples$"):
        best_threshold([[0.5], [0.2]], [None, None])
    with pytest.raises(ValueError, match=r"^error_step_f1: 1 predictions but 2 true indices$"):
        error_step_f1([None], [None, 1])


def test_auroc_or_none_is_auroc_whenever_both_classes_are_present():
    # one positive among three (0 < sum < len at its lower edge): it outscores one negative of two -> 1/2
    assert auroc_or_none([0.5, 0.9, 0.1], [1, 0, 0]) == pytest.approx(0.5)
    # one negative among three (the upper edge): both positives outscore it -> 1
    assert auroc_or_none([0.5, 0.9, 0.1], [1, 1, 0]) == 1.0
    assert auroc_or_none([0.5, 0.9], [0, 0]) is None and auroc_or_none([0.5, 0.9], [1, 1]) is None
