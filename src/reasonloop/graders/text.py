"""String graders: `exact`, `string_check` (eq, ne, like, ilike) and `text_similarity` (fuzzy, BLEU, ROUGE-L).

Both sides are templates (see `base`): by default the completion is compared
with the problem's answer; `"{{sample.output_json.label}}"` or a literal
reference pick other values, as in OpenAI's string-check and text-similarity graders.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasonloop.core import Problem, bounded
from reasonloop.graders.base import Grade, as_text, grades_missing_fields_zero, render
from reasonloop.graders.similarity import METRICS

OPERATIONS = ("eq", "ne", "like", "ilike")


@dataclass(frozen=True)
class ExactConfig:
    """Score 1 when the (stripped) input equals the reference."""

    input: str = "{{sample.output_text}}"  # template for the compared text
    reference: str = "{{item.answer}}"  # template or literal for the expected text
    case_sensitive: bool = True  # compare case as written
    strip: bool = True  # ignore leading and trailing whitespace


@grades_missing_fields_zero
def exact(cfg: ExactConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "Capital of France?", "Paris")
    >>> exact(ExactConfig(), p, " Paris\\n")
    Grade(score=1.0, parsed='Paris', reason='equals the reference', details={})
    >>> exact(ExactConfig(case_sensitive=False), p, "paris").score, exact(ExactConfig(), p, "paris").score
    (1.0, 0.0)
    """
    got, want = as_text(render(cfg.input, problem, completion)), as_text(render(cfg.reference, problem, completion))
    if cfg.strip:
        got, want = got.strip(), want.strip()
    same = got == want if cfg.case_sensitive else got.casefold() == want.casefold()
    return Grade(1.0 if same else 0.0, got, "equals the reference" if same else f"expected {want!r}")


@dataclass(frozen=True)
class StringCheckConfig:
    """OpenAI-style string check: `eq`, `ne`, `like` (input contains reference), `ilike` (same, any case)."""

    operation: str = "eq"  # eq, ne, like or ilike
    input: str = "{{sample.output_text}}"  # template for the compared text
    reference: str = "{{item.answer}}"  # template or literal

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation '{self.operation}' is not one of {', '.join(OPERATIONS)}")


@grades_missing_fields_zero
def string_check(cfg: StringCheckConfig, problem: Problem, completion: str) -> Grade:
    """Compares exactly as written (no stripping), like the OpenAI grader.

    >>> p = Problem("1", "Say hi", "hello")
    >>> [string_check(StringCheckConfig(op), p, "Hello world").score for op in OPERATIONS]
    [0.0, 1.0, 0.0, 1.0]
    >>> string_check(StringCheckConfig("eq", reference="fixed"), p, "fixed").reason
    "eq 'fixed': true"
    """
    got, want = as_text(render(cfg.input, problem, completion)), as_text(render(cfg.reference, problem, completion))
    op = cfg.operation
    if op == "eq":
        ok = got == want
    elif op == "ne":
        ok = got != want
    elif op == "like":
        ok = want in got
    else:
        ok = want.casefold() in got.casefold()
    return Grade(1.0 if ok else 0.0, got, f"{op} {want!r}: {'true' if ok else 'false'}")


@dataclass(frozen=True)
class TextSimilarityConfig:
    """Similarity of input and reference; with `pass_threshold` the score is 1 at or above it, else 0."""

    metric: str = "fuzzy_match"  # fuzzy_match, bleu or rouge_l
    input: str = "{{sample.output_text}}"  # template for the compared text
    reference: str = "{{item.answer}}"  # template or literal
    pass_threshold: float | None = bounded(None, ge=0, le=1)  # None: the score is the similarity itself

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric '{self.metric}' is not one of {', '.join(METRICS)}")
        if self.pass_threshold is not None and not 0.0 <= self.pass_threshold <= 1.0:
            raise ValueError(f"pass_threshold {self.pass_threshold} is outside [0, 1]")


@grades_missing_fields_zero
def text_similarity(cfg: TextSimilarityConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "Describe.", "the cat is on the mat")
    >>> g = text_similarity(TextSimilarityConfig("rouge_l"), p, "the cat sat on the mat")
    >>> round(g.score, 4), g.reason  # LCS "the cat on the mat" = 5 of 6 tokens each side
    (0.8333, 'rouge_l 0.833')
    >>> text_similarity(TextSimilarityConfig("bleu", pass_threshold=0.5), p, "the cat sat on the mat").score
    0.0
    """
    got, want = as_text(render(cfg.input, problem, completion)), as_text(render(cfg.reference, problem, completion))
    sim = METRICS[cfg.metric](got, want)
    details = {cfg.metric: sim}
    if cfg.pass_threshold is None:
        return Grade(sim, got, f"{cfg.metric} {sim:.3f}", details)
    passed = sim >= cfg.pass_threshold
    verdict = "pass" if passed else "fail"
    return Grade(
        1.0 if passed else 0.0, got, f"{cfg.metric} {sim:.3f} {verdict} (threshold {cfg.pass_threshold:g})", details
    )
