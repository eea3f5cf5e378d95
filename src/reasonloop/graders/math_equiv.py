"""The `math` grader: mathematical equivalence of the completion's final answer and the reference, via math-verify.

math-verify extracts the answer (last `\\boxed{}` first, then other LaTeX, then
plain expressions), parses it with sympy and compares numbers, fractions, sets,
intervals, tuples, matrices and equations. Its timeouts use `signal.alarm`, which
only works in the main thread, so a call from another thread is sent to a
one-process pool (spawned once, reused) whose worker runs it in its main thread,
with the timeouts on.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from reasonloop.core import Problem, bounded
from reasonloop.graders.base import Grade, as_text, grades_missing_fields_zero, render_key


@dataclass(frozen=True)
class MathConfig:
    """Score 1 when the completion's final answer is mathematically equal to the reference."""

    reference: str = "{{item.answer}}"  # template or literal: the reference answer (LaTeX or plain)
    timeout_s: int = bounded(5, ge=1)  # math-verify's own parsing and comparison timeouts (seconds, signal-based)
    float_rounding: int = bounded(6, ge=0)  # decimal places used when comparing floats

    def __post_init__(self) -> None:
        if self.timeout_s < 1:
            raise ValueError("timeout_s must be >= 1 (math-verify's timeouts are whole seconds)")


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(), ExprExtractionConfig()]


def _verify(reference: str, completion: str, timeout_s: int, float_rounding: int) -> Grade:
    from math_verify import parse, verify

    ref = reference.strip()
    # A bare reference such as "\frac{1}{2}" or "(3, \pi/2)" is LaTeX math without delimiters.
    delimited = re.search(r"(?<!\\)\$|\\boxed|\\\(|\\\[", ref)  # an escaped \$ is a dollar sign, not math
    gold_text = ref if delimited else f"${ref}$"
    gold = parse(gold_text, extraction_config=_configs(), parsing_timeout=timeout_s)
    if not gold:
        gold = parse(ref, extraction_config=_configs(), parsing_timeout=timeout_s)
    if not gold:
        return Grade(0.0, None, f"could not parse the reference {ref!r}")
    pred = parse(completion, extraction_config=_configs(), parsing_timeout=timeout_s)
    if not pred:
        return Grade(0.0, None, "no answer found in the completion")
    parsed = str(pred[-1])
    ok = verify(gold, pred, float_rounding=float_rounding, timeout_seconds=timeout_s)
    return Grade(1.0 if ok else 0.0, parsed, f"{parsed} {'equals' if ok else 'differs from'} {gold[-1]}")


_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            import multiprocessing

            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _POOL


@grades_missing_fields_zero
def math_equal(cfg: MathConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "Simplify 2/4.", "\\\\frac{1}{2}")
    >>> [math_equal(MathConfig(), p, c).score for c in ["So it is $\\\\boxed{0.5}$.", "$\\\\boxed{\\\\frac{2}{4}}$", "$\\\\boxed{2}$"]]
    [1.0, 1.0, 0.0]
    >>> s = Problem("2", "Solve |x| < 1.", "(-1, 1)")
    >>> math_equal(MathConfig(), s, "The solution set is $x \\\\in \\\\boxed{(-1,1)}$").score
    1.0
    """
    reference = as_text(render_key(cfg.reference, "reference", problem, completion))
    if threading.current_thread() is threading.main_thread():
        return _verify(reference, completion, cfg.timeout_s, cfg.float_rounding)
    return _pool().submit(_verify, reference, completion, cfg.timeout_s, cfg.float_rounding).result()
