"""What every task provides: problems by split, step splitting, answer extraction, a correctness check, a grader."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from reasonloop.core import ConfigError, Grade, Problem, split_steps

SPLITS = ("train", "test")
ANSWER_RE = re.compile(r"A:\s*(-?[\d.]+)\s*$")


@runtime_checkable
class Task(Protocol):
    name: str
    step_delimiter: str

    def problems(self, split: str = "test", n: int = 100, seed: int = 0) -> list[Problem]: ...

    def extract_answer(self, completion: str) -> str | None: ...

    def is_correct(self, problem: Problem, completion: str) -> bool: ...

    def grade(self, problem: Problem, completion: str) -> Grade: ...


def check_grade(task: Task, problem: Problem, completion: str) -> Grade:
    """A task's own correctness check as a `Grade`: 1.0 or 0.0, with the parsed answer and why.

    >>> from reasonloop.tasks.arith import ArithTask
    >>> p = Problem("x", "Q: 1+2\\n", "3")
    >>> check_grade(ArithTask(), p, "1+2=3\\nA: 3"), check_grade(ArithTask(), p, "1+2=4\\nA: 4").reason
    (Grade(score=1.0, parsed='3', reason='correct', details={}), 'answer 4, expected 3')
    """
    parsed = task.extract_answer(completion)
    if task.is_correct(problem, completion):
        return Grade(1.0, parsed, "correct")
    return Grade(0.0, parsed, "no answer" if parsed is None else f"answer {parsed}, expected {problem.answer}")


def hash_split(key: str, test_fraction: float = 0.2) -> str:
    """Assign a problem to 'train' or 'test' by a hash of its content, so splits never overlap.

    >>> hash_split("7+5*3") in ("train", "test")
    True
    """
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def check_split(split: str) -> None:
    if split not in SPLITS:
        from reasonloop.core import ConfigError

        raise ConfigError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")


class WorldTask:
    """Shared behaviour of the built-in worlds: `\\n`-delimited steps ending in `A: <answer>`."""

    name = "world"
    step_delimiter = "\n"
    max_solution_tokens = 96  # a generation budget that fits any worked solution of the world

    def steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)

    def distinct_problems(
        self, split: str, n: int, seed: int, draw: Callable[[random.Random], tuple[str, Callable[[], Problem]] | None]
    ) -> list[Problem]:
        """`n` distinct problems of `split`: `draw(rng)` gives a candidate's key (its text, which the split
        hashes) and how to build it, or None to skip; drawn deterministically from the world's name and `seed`."""
        check_split(split)
        rng = random.Random(f"{self.name}/{split}/{seed}")
        seen: set[str] = set()
        out: list[Problem] = []
        attempts = since_new = 0
        while len(out) < n:
            attempts += 1
            since_new += 1
            # give up when the split looks exhausted (no new problem in a long while; the last of ~N problems
            # takes ~N draws), not after millions of draws; where to stop never changes which problems are drawn
            if attempts > 1000 * n + 10000 or since_new > 50_000 + 50 * len(out):
                raise ConfigError(
                    f"{self.name}: asked for {n} distinct {split} problems, found {len(out)} with {self.config}; "
                    f"ask for fewer (n_train / n_eval) or widen the world's options"
                )
            drawn = draw(rng)
            if drawn is None:
                continue
            key, make = drawn
            if key in seen or hash_split(key, self.config.test_fraction) != split:
                continue
            seen.add(key)
            out.append(make())
            since_new = 0
        return out

    def grade(self, problem: Problem, completion: str) -> Grade:
        """The world's exact check as a grader (see `check_grade`)."""
        return check_grade(self, problem, completion)

    def extract_answer(self, completion: str) -> str | None:
        """The number after the last `A:` line, or None.

        >>> WorldTask().extract_answer("1+2=3\\nA: 3")
        '3'
        """
        for line in reversed(self.steps(completion)):
            m = ANSWER_RE.search(line)
            if m:
                return m.group(1)
        return None
