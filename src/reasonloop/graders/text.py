"""String graders: `exact`, `string_check` (eq, ne, like, ilike) and `text_similarity` (the metrics of `similarity`).

Both sides are templates (see `base`): by default the completion is compared
with the problem's answer; `"{{sample.output_json.label}}"` or a literal
reference pick other values, as in OpenAI's string-check and text-similarity graders.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from reasonloop.core import Problem, bounded
from reasonloop.graders import similarity
from reasonloop.graders.base import Grade, as_text, grades_missing_fields_zero, render_key
from reasonloop.graders.similarity import METRICS, TEXT_METRIC_FNS, check_encoder_dir, cosine

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
    got = as_text(render_key(cfg.input, "input", problem, completion))
    want = as_text(render_key(cfg.reference, "reference", problem, completion))
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
            raise ValueError(f"key 'operation': '{self.operation}' is not one of {', '.join(OPERATIONS)}")


@grades_missing_fields_zero
def string_check(cfg: StringCheckConfig, problem: Problem, completion: str) -> Grade:
    """Compares exactly as written (no stripping), like the OpenAI grader.

    >>> p = Problem("1", "Say hi", "hello")
    >>> [string_check(StringCheckConfig(op), p, "Hello world").score for op in OPERATIONS]
    [0.0, 1.0, 0.0, 1.0]
    >>> string_check(StringCheckConfig("eq", reference="fixed"), p, "fixed").reason
    "eq 'fixed': true"
    """
    got = as_text(render_key(cfg.input, "input", problem, completion))
    want = as_text(render_key(cfg.reference, "reference", problem, completion))
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
    """Similarity of input and reference by one metric (see `similarity`); the score is the similarity itself."""

    evaluation_metric: str = "fuzzy_match"  # one of similarity.METRICS (short form: `metric`)
    input: str = "{{sample.output_text}}"  # template for the compared text
    reference: str = "{{item.answer}}"  # template or literal
    pass_threshold: float | None = bounded(None, ge=0, le=1)  # similarity at which a grade passes (details["passed"])
    embedding_model: str | None = None  # cosine: a local Hugging Face encoder directory

    def __post_init__(self) -> None:
        if self.evaluation_metric not in METRICS:
            near = difflib.get_close_matches(self.evaluation_metric, METRICS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ValueError(
                f"key 'evaluation_metric': '{self.evaluation_metric}' is not one of {', '.join(METRICS)}{hint}"
            )
        if self.evaluation_metric == "cosine":
            if not self.embedding_model:
                raise ValueError(
                    "key 'evaluation_metric': cosine needs key 'embedding_model' (a local Hugging Face encoder directory)"
                )
            why = check_encoder_dir(self.embedding_model)
            if why:
                raise ValueError(f"key 'embedding_model': '{self.embedding_model}' {why}")
        if self.pass_threshold is not None and not 0.0 <= self.pass_threshold <= 1.0:
            raise ValueError(f"key 'pass_threshold': {self.pass_threshold} is outside [0, 1]")


@grades_missing_fields_zero
def text_similarity(cfg: TextSimilarityConfig, problem: Problem, completion: str) -> Grade:
    """As in the OpenAI schema, `pass_threshold` decides pass or fail and leaves the score alone.

    >>> p = Problem("1", "Describe.", "the cat is on the mat")
    >>> g = text_similarity(TextSimilarityConfig("rouge_l"), p, "the cat sat on the mat")
    >>> round(g.score, 4), g.reason  # LCS "the cat on the mat" = 5 of 6 tokens each side
    (0.8333, 'rouge_l 0.833')
    >>> g = text_similarity(TextSimilarityConfig("gleu", pass_threshold=0.6), p, "the cat sat on the mat")
    >>> g.score, g.reason, g.details  # 9 of 18 n-grams shared (see similarity.gleu)
    (0.5, 'gleu 0.500 fail (threshold 0.6)', {'gleu': 0.5, 'passed': False})
    """
    got = as_text(render_key(cfg.input, "input", problem, completion))
    want = as_text(render_key(cfg.reference, "reference", problem, completion))
    metric = cfg.evaluation_metric
    if metric == "cosine":
        sim = cosine(got, want, cfg.embedding_model or "")
    else:
        sim = TEXT_METRIC_FNS[metric](got, want)
    details: dict = {metric: sim}
    reason = f"{metric} {sim:.3f}"
    if cfg.pass_threshold is not None:
        details["passed"] = sim >= cfg.pass_threshold
        reason += f" {'pass' if details['passed'] else 'fail'} (threshold {cfg.pass_threshold:g})"
    if metric == "meteor" and similarity.meteor_wordnet() is None:
        reason += " (no WordNet: exact and stem matches only)"
    return Grade(sim, got, reason, details)
