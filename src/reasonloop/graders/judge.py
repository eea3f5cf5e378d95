"""The `model` grader: a generator used as judge (the OpenAI score-model / label-model graders).

The prompt template is filled with the problem and completion (`{{item.prompt}}`,
`{{item.answer}}`, `{{sample.output_text}}`). In `score` mode the last number in
the judge's reply, which must lie in `score_range`, is normalised to [0, 1]; in
`label` mode the last of `labels` named in the reply is taken and passes when it
is one of `passing_labels`. With `n > 1` the judge is sampled `n` times and the
scores are averaged; unparseable replies count as 0. Any object with the
`reasonloop.core.Generator` `generate` method works: this module never imports
the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reasonloop.core import Problem, bounded
from reasonloop.graders.base import NUMBER_RE, Grade, as_text, grades_missing_fields_zero, parse_number, render


@dataclass(frozen=True)
class ModelConfig:
    """A judge prompt and how to read its reply."""

    prompt: str  # template, e.g. "Question: {{item.prompt}}\nAnswer: {{sample.output_text}}\nScore 0-10:"
    score_range: list[float] | None = None  # [low, high] for score mode (e.g. [0, 10])
    labels: list[str] | None = None  # label mode: the labels the judge may answer with
    passing_labels: list[str] | None = None  # label mode: the labels that score 1
    n: int = bounded(1, ge=1)  # judge samples per completion, averaged
    temperature: float = bounded(0.0, ge=0)  # judge sampling temperature
    max_new_tokens: int = bounded(64, ge=1)  # judge reply budget
    seed: int = bounded(0, ge=0)  # judge sampling seed

    def __post_init__(self) -> None:
        if (self.score_range is None) == (self.labels is None):
            raise ValueError("give exactly one of 'score_range' (score mode) or 'labels' (label mode)")
        if self.score_range is not None and (len(self.score_range) != 2 or self.score_range[0] >= self.score_range[1]):
            raise ValueError(f"score_range must be [low, high] with low < high, got {self.score_range}")
        if self.labels is not None:
            unknown = set(self.passing_labels or []) - set(self.labels)
            if not self.passing_labels or unknown:
                raise ValueError(f"passing_labels must be a non-empty subset of labels (unknown: {sorted(unknown)})")
        if self.n < 1:
            raise ValueError("n must be >= 1")


def read_score(reply: str, score_range: list[float]) -> tuple[float | None, str]:
    """The last number in `reply`, normalised from `score_range` to [0, 1], or (None, why).

    >>> read_score("Reasoning... Score: 7/10", [0, 10])
    (0.7, '')
    >>> read_score("I give it 8.", [1, 5])
    (None, 'judge score 8 outside [1, 5]')
    """
    reply = re.sub(r"(\d)\s*/\s*\d+(\.\d+)?\s*$", r"\1", reply.strip().rstrip("."))  # "7/10" means 7 of 10
    found = NUMBER_RE.findall(reply)
    if not found:
        return None, "no score in the judge's reply"
    value = parse_number(found[-1])
    lo, hi = score_range
    if value is None or not lo <= value <= hi:
        return None, f"judge score {found[-1]} outside [{lo:g}, {hi:g}]"
    return (value - lo) / (hi - lo), ""


def read_label(reply: str, labels: list[str]) -> str | None:
    """The label named last in `reply` (whole words, any case).

    >>> read_label("Not INCORRECT at all; verdict: correct", ["correct", "incorrect"])
    'correct'
    """
    best, best_at = None, -1
    for label in labels:
        for m in re.finditer(rf"(?<!\w){re.escape(label)}(?!\w)", reply, flags=re.IGNORECASE):
            if m.start() > best_at:
                best, best_at = label, m.start()
    return best


@grades_missing_fields_zero
def judge(cfg: ModelConfig, generator: Any, problem: Problem, completion: str) -> Grade:
    """Ask the judge `cfg.n` times and average its verdicts. `generator` follows the Generator protocol."""
    prompt = as_text(render(cfg.prompt, problem, completion))
    samples = generator.generate(
        [prompt], cfg.n, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, stop=None, seed=cfg.seed
    )[0]
    scores, verdicts, problems = [], [], []
    for s in samples:
        if cfg.score_range is not None:
            value, why = read_score(s.text, cfg.score_range)
            scores.append(value or 0.0)
            verdicts.append(f"{value:.2f}" if value is not None else "?")
            problems += [why] if why else []
        else:
            label = read_label(s.text, cfg.labels or [])
            scores.append(1.0 if label in (cfg.passing_labels or []) else 0.0)
            verdicts.append(label or "?")
            problems += [] if label else ["no label in the judge's reply"]
    score = sum(scores) / len(scores)
    reason = f"judge: {', '.join(verdicts)}" + (f" ({problems[0]})" if problems else "")
    return Grade(
        score, verdicts[0] if len(verdicts) == 1 else None, reason, {"judge_replies": [s.text for s in samples]}
    )
