"""The one grading path: a `Grader` turns (problem, completion) into a `Grade`; `grade_sample` records it on a sample.

A grader is any plain function `grader(problem, completion) -> Grade` with a
score in [0, 1]: a built-in world's own check (`task.grade`), or one built
from a YAML config by `reasonloop.graders` (string checks, numeric, math
equivalence, JSON fields, sandboxed code, an LM judge, formulas over several).
Everything that needs a reward (evaluation, recipes, Monte-Carlo step values,
search, online RL) takes a grader and calls it through here, so swapping the
world's check for a grader file changes every one of them at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reasonloop.core.types import Problem, Sample, split_steps


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion: `score` in [0, 1], the answer parsed from it, a short reason."""

    score: float
    parsed: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # sub-scores, precision/recall, ...

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside [0, 1]")


Grader = Callable[[Problem, str], Grade]


def grade_sample(grader: Grader, problem: Problem, sample: Sample, delimiter: str = "\n") -> Sample:
    """Fill in `problem_id`, `steps`, the parsed `answer` and the `reward` of `sample` from `grader`.

    >>> g = lambda p, c: Grade(float(c.endswith(p.answer)), c[-1:], "last character")
    >>> s = grade_sample(g, Problem("q", "1+1?", "2"), Sample("", "1+1=2\\nA: 2"))
    >>> s.problem_id, s.steps, s.answer, s.reward
    ('q', ['1+1=2', 'A: 2'], '2', 1.0)
    """
    verdict = grader(problem, sample.text)
    sample.problem_id = problem.id
    sample.steps = split_steps(sample.text, delimiter)
    sample.answer = verdict.parsed
    sample.reward = float(verdict.score)
    return sample


def mean_score(grader: Grader, problems: list[Problem], completions: list[str]) -> float:
    """The mean grade of one completion per problem (greedy accuracy when the grader is a 0/1 check).

    >>> g = lambda p, c: Grade(float(c == p.answer), c, "")
    >>> mean_score(g, [Problem("a", "?", "1"), Problem("b", "?", "2")], ["1", "3"])
    0.5
    """
    if len(problems) != len(completions) or not problems:
        raise ValueError("need one completion per problem, and at least one problem")
    return sum(grader(p, c).score for p, c in zip(problems, completions)) / len(problems)


FENCE_RE = re.compile(r"```[ \t]*(\w*)[ \t]*\n(.*?)```", re.DOTALL)


def extract_json(text: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in `text`: the whole text, else the last ```json fence, else the first `{...}` that parses.

    Returns `(object, "")` or `(None, reason)`.

    >>> extract_json('Sure! ```json\\n{"a": 1}\\n``` done')
    ({'a': 1}, '')
    >>> extract_json('answer: {"a": [1, 2]} and more')
    ({'a': [1, 2]}, '')
    >>> extract_json('{"a": 1,}')
    (None, 'no JSON object found (invalid JSON: Expecting property name enclosed in double quotes at 1:9)')
    """
    candidates = [text.strip()] + [body for lang, body in reversed(FENCE_RE.findall(text)) if lang in ("json", "")]
    first_error = ""
    for c in candidates:
        try:
            obj = json.loads(c)
        except json.JSONDecodeError as e:
            first_error = first_error or f"invalid JSON: {e.msg} at {e.lineno}:{e.colno}"
            continue
        if isinstance(obj, dict):
            return obj, ""
        first_error = first_error or f"expected a JSON object, got {type(obj).__name__}"
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj, ""
    return None, f"no JSON object found ({first_error})" if first_error else "no JSON object found"


def prf(predicted: set, reference: set) -> tuple[float, float, float]:
    """Precision, recall, F1 of two item sets; an empty prediction of an empty reference is perfect.

    >>> prf({1, 2, 3}, {2, 3, 4, 5})
    (0.6666666666666666, 0.5, 0.5714285714285715)
    """
    if not predicted and not reference:
        return 1.0, 1.0, 1.0
    hit = len(predicted & reference)
    p = hit / len(predicted) if predicted else 0.0
    r = hit / len(reference) if reference else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
