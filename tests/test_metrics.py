import pytest

from reasonloop.eval.metrics import maj_at_k, majority_correct, pass_at_k


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # n - c < k: some correct sample is always drawn
        (10, 0, 5, 0.0),
        (16, 1, 16, 1.0),
        (16, 3, 4, 1 - 715 / 1820),  # C(13,4) = 715, C(16,4) = 1820
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_ties_and_missing_answers():
    assert majority_correct(["1", "2", "2"], "2") == 1.0
    assert majority_correct(["1", "2", "2"], "1") == 0.0
    assert majority_correct(["1", "2", "3"], "3") == pytest.approx(1 / 3)
    assert majority_correct([None, None], "3") == 0.0
    # groups of two: [3,4] tie -> 0.5, [3,3] -> 1
    assert maj_at_k(["3", "4", "3", "3"], "3", 2) == pytest.approx(0.75)
