import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonloop.eval.metrics import ks_up_to, maj_at_k, majority_correct, pass_at_k


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


def test_pass_at_k_equals_the_combinatorial_formula_everywhere():
    # Chen et al. eq. 1 with exact binomials, for every valid (n, c, k) up to n = 12 (c = n included)
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_bad_counts_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"need 0 <= c <= n and 1 <= k <= n, got n=4, c=5, k=1"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match=r"got n=4, c=-1, k=1"):
        pass_at_k(4, -1, 1)
    with pytest.raises(ValueError, match=r"got n=4, c=1, k=0"):
        pass_at_k(4, 1, 0)
    with pytest.raises(ValueError, match=r"need 1 <= k <= n, got k=0, n=2"):
        maj_at_k(["1", "2"], "1", 0)
    with pytest.raises(ValueError, match=r"need 1 <= k <= n, got k=3, n=2"):
        maj_at_k(["1", "2"], "1", 3)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_grows_with_k_from_the_fraction_correct(nc):
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert values[0] == pytest.approx(c / n)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == (1.0 if c else 0.0)


def test_majority_credit_with_rewards_and_ties():
    # a tie between "5" (grades 1) and "6" (grade 0): each winner earns its samples' mean grade, the tie halves it
    assert majority_correct(["5", "6"], "5", rewards=[1.0, 0.0]) == pytest.approx(0.5)
    assert majority_correct(["5", "6", "6"], "5", rewards=[1.0, 1.0, None]) == pytest.approx(0.5)  # None grades 0
    assert majority_correct(["5", "5", "6"], "6", rewards=[1.0, 0.0, 1.0]) == pytest.approx(0.5)  # winner: "5"
    with pytest.raises(ValueError):
        majority_correct(["5", "6"], "5", rewards=[1.0])  # one grade per answer
    # two groups of 3: "5" wins the first with grades 1, 1 -> 1; "6" wins the second with grades 0, 1 -> 0.5
    answers, rewards = ["5", "5", "6", "6", "6", "5"], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert maj_at_k(answers, "5", 3, rewards) == pytest.approx(0.75)
    assert maj_at_k(answers, "5", 3) == pytest.approx(0.5)  # by answer alone: the second group votes "6"
    assert maj_at_k(answers, "5", 6, rewards) == pytest.approx(2 / 3)  # a 3-3 tie: (3/3 + 1/3) / 2
    assert maj_at_k(["3"], "3", 1) == 1.0 and maj_at_k(["3", "4", "4"], "3", 1) == pytest.approx(1 / 3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["1", "2", "3", None]), st.sampled_from([0.0, 0.5, 1.0, None])), min_size=1),
    st.randoms(use_true_random=False),
)
def test_majority_credit_is_invariant_under_sample_order(pairs, rnd):
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    a, r = [x for x, _ in pairs], [y for _, y in pairs]
    sa, sr = [x for x, _ in shuffled], [y for _, y in shuffled]
    assert majority_correct(sa, "2") == pytest.approx(majority_correct(a, "2"))
    assert majority_correct(sa, "2", sr) == pytest.approx(majority_correct(a, "2", r))


def test_ks_up_to_powers_of_two_then_n():
    assert ks_up_to(1) == [1] and ks_up_to(2) == [1, 2] and ks_up_to(3) == [1, 2, 3]
    assert ks_up_to(64) == [1, 2, 4, 8, 16, 32, 64] and ks_up_to(100) == [1, 2, 4, 8, 16, 32, 64, 100]
