"""Accuracy of a generator and of answer-selection rules over samples: greedy accuracy, majority / best-of-n curves."""

from __future__ import annotations

from reasonloop.core import Generator, Grader, Problem, Sample, mean_score
from reasonloop.eval.metrics import majority_correct
from reasonloop.search import best_of_n


def greedy_accuracy(generator: Generator, grader: Grader, problems: list[Problem], max_new_tokens: int) -> float:
    """Mean grade of one greedy completion per problem (the accuracy when `grader` is a 0/1 check)."""
    out = generator.generate([p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=max_new_tokens)
    return mean_score(grader, problems, [s[0].text for s in out])


def majority_curve(problems: list[Problem], held: list[Sample], N: int) -> list[float]:
    """Majority-vote accuracy over the first n of each problem's N samples (`held` problem-major), n = 1..N;
    the vote earns the grade of a sample with the winning answer."""
    return [
        sum(
            majority_correct([s.answer for s in ss], p.answer, [s.reward for s in ss])
            for i, p in enumerate(problems)
            for ss in [held[i * N : i * N + n]]
        )
        / len(problems)
        for n in range(1, N + 1)
    ]


def best_of_n_curve(problems: list[Problem], held: list[Sample], scores: list[float], N: int) -> list[float]:
    """Accuracy of the top-scored of the first n of each problem's N samples, n = 1..N."""
    return [
        sum(held[i * N + best_of_n(scores[i * N : i * N + n])].reward or 0.0 for i in range(len(problems)))
        / len(problems)
        for n in range(1, N + 1)
    ]
