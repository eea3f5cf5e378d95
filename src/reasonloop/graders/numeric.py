"""Number graders: `numeric` (the final number, with tolerance) and `gsm8k` (the `#### N` line, else the last number).

Numbers may carry thousands commas, a sign, decimals, `$` and `%` (which is
dropped: GSM8K writes percentages as plain numbers). The reference may itself be
a worked GSM8K solution; its `#### N` answer is used then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reasonloop.core import Problem, bounded
from reasonloop.graders.base import (
    Grade,
    as_text,
    grades_missing_fields_zero,
    last_number,
    numbers_match,
    parse_number,
    render_key,
)

GSM8K_RE = re.compile(r"####\s*([^\n]*)")


@dataclass(frozen=True)
class NumericConfig:
    """Score 1 when the last number of the completion is within tolerance of the reference."""

    reference: str = "{{item.answer}}"  # template or literal holding the expected number
    abs_tol: float = bounded(1e-6, ge=0)  # accepted absolute difference
    rel_tol: float = bounded(0.0, ge=0)  # accepted difference relative to the reference

    def __post_init__(self) -> None:
        if self.abs_tol < 0 or self.rel_tol < 0:
            raise ValueError("abs_tol and rel_tol must be >= 0")


def _reference_number(text: str) -> float | None:
    m = GSM8K_RE.findall(text)
    if m:
        return parse_number(m[-1])
    whole = parse_number(text)
    return whole if whole is not None else parse_number(last_number(text) or "")


def _compare(got_text: str | None, want: float | None, abs_tol: float, rel_tol: float, how: str) -> Grade:
    if want is None:
        return Grade(0.0, got_text, "reference has no number")
    if got_text is None:
        return Grade(0.0, None, "no number in the completion")
    got = parse_number(got_text)
    if got is None:
        return Grade(0.0, got_text, f"{how} {got_text!r} is not a number")
    if numbers_match(got, want, abs_tol, rel_tol):
        return Grade(1.0, got_text, f"{how} {got:g} matches {want:g}")
    return Grade(0.0, got_text, f"{how} {got:g} != {want:g}")


@grades_missing_fields_zero
def numeric(cfg: NumericConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "Cost?", "1250")
    >>> numeric(NumericConfig(), p, "Each is $25, so 50 cost $1,250.")
    Grade(score=1.0, parsed='$1,250', reason='final number 1250 matches 1250', details={})
    >>> numeric(NumericConfig(rel_tol=0.01), p, "about 1262").score, numeric(NumericConfig(), p, "about 1262").score
    (1.0, 0.0)
    >>> numeric(NumericConfig(), p, "no idea").reason
    'no number in the completion'
    """
    want = _reference_number(as_text(render_key(cfg.reference, "reference", problem, completion)))
    return _compare(last_number(completion), want, cfg.abs_tol, cfg.rel_tol, "final number")


@dataclass(frozen=True)
class Gsm8kConfig:
    """GSM8K convention: the answer follows `####`; without that line, the last number counts."""

    reference: str = "{{item.answer}}"  # the reference number, or a worked solution ending in `#### N`
    fallback_last_number: bool = True  # use the last number when there is no `####` line
    abs_tol: float = bounded(1e-6, ge=0)  # accepted absolute difference


@grades_missing_fields_zero
def gsm8k(cfg: Gsm8kConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "How many?", "#### 18")
    >>> gsm8k(Gsm8kConfig(), p, "16 - 3 - 4 = 9 eggs, 9 * 2 = 18\\n#### 18").score
    1.0
    >>> gsm8k(Gsm8kConfig(), p, "I get 18 or maybe 17\\n#### 17").reason
    '#### 17 != 18'
    >>> gsm8k(Gsm8kConfig(), p, "so 9 * 2 = 18.").reason
    'last number (no ####) 18 matches 18'
    >>> gsm8k(Gsm8kConfig(fallback_last_number=False), p, "so 18").reason
    'no #### line'
    """
    want = _reference_number(as_text(render_key(cfg.reference, "reference", problem, completion)))
    marked = GSM8K_RE.findall(completion)
    if marked:
        got = marked[-1].strip()
        got = last_number(got) if parse_number(got) is None and last_number(got) else got
        return _compare(got or None, want, cfg.abs_tol, 0.0, "####")
    if not cfg.fallback_last_number:
        return Grade(0.0, None, "no #### line")
    return _compare(last_number(completion), want, cfg.abs_tol, 0.0, "last number (no ####)")
