"""Grade many completions, in this process or in parallel worker processes.

Workers are spawned (not forked: the caller may hold threads or a model), get
the grader once through the pool initializer, and grade chunks of items in their
main thread, where math-verify's signal timeouts work. Results come back in
input order. A grader that raises on one item scores it 0 with the error as the
reason (counted in `BatchResult.errors`) instead of losing the batch. Graders
holding a live model (`model`) cannot be pickled: grade those with `workers=0`.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from reasonloop.core import ConfigError, Problem
from reasonloop.graders.base import Grade, Grader
from reasonloop.graders.sandbox import SandboxUnavailable

_WORKER_GRADER: Grader | None = None


def safe_grade(grader: Grader, problem: Problem, completion: str) -> Grade:
    """`grader(problem, completion)`, with any exception turned into a zero grade that says what went wrong."""
    try:
        return grader(problem, completion)
    except SandboxUnavailable:
        raise  # the machine, not the item: every item would fail the same way, so say it once
    except Exception as e:  # noqa: BLE001 - one bad item must not sink the batch; the reason keeps the error
        return Grade(0.0, None, f"error: {type(e).__name__}: {e}"[:300], {"error": True})


def _init_worker(grader_bytes: bytes) -> None:
    global _WORKER_GRADER
    _WORKER_GRADER = pickle.loads(grader_bytes)


def _grade_chunk(chunk: list[tuple[Problem, str]]) -> list[Grade]:
    assert _WORKER_GRADER is not None
    return [safe_grade(_WORKER_GRADER, p, c) for p, c in chunk]


def iter_grades(
    grader: Grader,
    items: Sequence[tuple[Problem, str]],
    *,
    workers: int = 0,
    chunk_size: int = 8,
) -> Iterator[list[Grade]]:
    """Yield grades chunk by chunk, in input order. `workers=0` grades in this process."""
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    if workers <= 0 or not chunks:
        for chunk in chunks:
            yield [safe_grade(grader, p, c) for p, c in chunk]
        return
    try:
        grader_bytes = pickle.dumps(grader)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise ConfigError(f"this grader cannot be sent to worker processes ({e}); use workers=0") from None
    ctx = multiprocessing.get_context("spawn")
    n = max(1, min(workers, len(chunks)))
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(grader_bytes,)) as pool:
        yield from pool.map(_grade_chunk, chunks)


@dataclass
class BatchResult:
    """Grades in input order, plus throughput."""

    grades: list[Grade]
    seconds: float

    @property
    def errors(self) -> int:
        return sum(1 for g in self.grades if g.details.get("error"))

    @property
    def mean_score(self) -> float:
        return sum(g.score for g in self.grades) / len(self.grades) if self.grades else 0.0

    @property
    def samples_per_s(self) -> float:
        return len(self.grades) / self.seconds if self.seconds > 0 else float("inf")


def grade_batch(
    grader: Grader,
    problems: Sequence[Problem],
    completions: Sequence[str],
    *,
    workers: int = 0,
    chunk_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Grade `completions[i]` against `problems[i]`; `progress(k)` is called as each chunk of k finishes.

    >>> from reasonloop.graders import grader_from_config
    >>> g = grader_from_config({"type": "gsm8k"})
    >>> res = grade_batch(g, [Problem("1", "?", "7"), Problem("2", "?", "5")], ["#### 7", "#### 6"])
    >>> [x.score for x in res.grades], res.mean_score, res.errors
    ([1.0, 0.0], 0.5, 0)
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    t0 = time.perf_counter()
    grades: list[Grade] = []
    for chunk in iter_grades(grader, list(zip(problems, completions)), workers=workers, chunk_size=chunk_size):
        grades.extend(chunk)
        if progress is not None:
            progress(len(chunk))
    return BatchResult(grades, time.perf_counter() - t0)
