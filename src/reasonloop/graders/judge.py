"""Model graders: a generator used as judge. `score_model` and `label_model` follow the OpenAI schema; `model` is ours.

`score_model` / `label_model` (the schema): `input` is a list of chat messages
(`{"role", "content"}`, content a template string or `{"type": "input_text", "text"}`
parts), `sampling_params` its seed, top_p, temperature and max_completions_tokens
(`reasoning_effort` is accepted and ignored: a local judge has no such setting).
The messages go through the judge tokenizer's chat template when it has one
(an instruct checkpoint), else their contents are joined by blank lines (a base
model such as nano reads plain text). `model` names the schema's judge and is
only recorded: the judge is the generator passed in (`--judge-model`).
A score model's reply is read as the `result` of a JSON object in it, else its
last number; the value is clipped into `range` (a reply with no number counts
as 0, clipped) and the grade is its place in the range, (value - low) / (high - low);
multi formulas see the value itself, as in the schema. A label model passes
when the label it names last is one of `passing_labels`. Either passes or
fails by `pass_threshold` (score model, in range units) in `details["passed"]`.

`model` (our short form): the prompt template is filled with the problem and completion (`{{item.prompt}}`,
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
from dataclasses import dataclass, field
from typing import Any

from reasonloop.core import ConfigError, Problem, bounded
from reasonloop.graders.base import (
    NUMBER_RE,
    Grade,
    as_text,
    check_template,
    extract_json,
    grades_missing_fields_zero,
    parse_number,
    render_key,
)

ROLES = ("system", "developer", "user", "assistant")
TEXT_PARTS = ("input_text", "output_text")


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


def _drop_out_of(reply: str) -> str:
    """A reply ending in "7/10" means 7 of 10: drop the "/10"."""
    return re.sub(r"(\d)\s*/\s*\d+(\.\d+)?\s*$", r"\1", reply.strip().rstrip("."))


def read_score(reply: str, score_range: list[float]) -> tuple[float | None, str]:
    """The last number in `reply`, normalised from `score_range` to [0, 1], or (None, why).

    >>> read_score("Reasoning... Score: 7/10", [0, 10])
    (0.7, '')
    >>> read_score("I give it 8.", [1, 5])
    (None, 'judge score 8 outside [1, 5]')
    """
    found = NUMBER_RE.findall(_drop_out_of(reply))
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
    prompt = as_text(render_key(cfg.prompt, "prompt", problem, completion))
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


# --- the schema's score_model and label_model ---------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingParams:
    """The schema's `sampling_params` for a model grader."""

    seed: int | None = bounded(None, ge=0)  # judge sampling seed (unset: 0)
    top_p: float | None = bounded(None, gt=0, le=1)  # nucleus sampling mass (unset: 1)
    temperature: float | None = bounded(None, ge=0)  # judge temperature (unset: 0, greedy)
    max_completions_tokens: int | None = bounded(None, ge=1)  # judge reply budget (unset: 256)
    reasoning_effort: str | None = None  # accepted and ignored: a local judge has no such setting


def message_text(message: Any, where: str) -> str:
    """The template text of one chat message of a model grader's `input`; ValueError naming `where` otherwise.

    >>> message_text({"role": "user", "content": {"type": "input_text", "text": "Hi {{item.x}}"}}, "input[0]")
    'Hi {{item.x}}'
    >>> message_text({"role": "robot", "content": "hi"}, "input[1]")
    Traceback (most recent call last):
    ...
    ValueError: key 'input[1]': role 'robot' is not one of system, developer, user, assistant
    """
    if not isinstance(message, dict) or "content" not in message:
        raise ValueError(f"key '{where}': expected a message with 'role' and 'content', got {message!r}")
    if message.get("role") not in ROLES:
        raise ValueError(f"key '{where}': role {message.get('role')!r} is not one of {', '.join(ROLES)}")
    unknown = set(message) - {"role", "content", "type"}
    if unknown or message.get("type", "message") != "message":
        raise ValueError(f"key '{where}': a message has role, content and type 'message' (got {sorted(message)})")
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise ValueError(f"key '{where}': content must be text (a string or input_text parts), got {part!r}")
    return "".join(texts)


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not messages:
        raise ValueError("key 'input': a model grader needs at least one message")
    for i, m in enumerate(messages):
        try:
            check_template(message_text(m, f"input[{i}]"), f"key 'input[{i}]'")
        except ConfigError as e:
            raise ValueError(str(e)) from None  # from_dict prefixes the grader, as for the other checks


@dataclass(frozen=True)
class ScoreModelConfig:
    """The schema's score model: chat messages to a judge, whose reply is a number in `range`."""

    input: list[dict[str, Any]]  # chat messages {role, content}; contents are templates
    model: str = ""  # the schema's judge model name, recorded only (the judge is the generator given)
    range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # [low, high] of the judge's score
    pass_threshold: float | None = None  # value (in range units) at which a grade passes (details["passed"])
    sampling_params: SamplingParams = field(default_factory=SamplingParams)  # judge sampling

    def __post_init__(self) -> None:
        _check_messages(self.input)
        if len(self.range) != 2 or self.range[0] >= self.range[1]:
            raise ValueError(f"key 'range' must be [low, high] with low < high, got {self.range}")


@dataclass(frozen=True)
class LabelModelConfig:
    """The schema's label model: chat messages to a judge, whose reply names one of `labels`."""

    input: list[dict[str, Any]]  # chat messages {role, content}; contents are templates
    labels: list[str]  # the labels the judge may answer with
    passing_labels: list[str]  # the labels that pass (score 1); a subset of labels
    model: str = ""  # the schema's judge model name, recorded only (the judge is the generator given)
    sampling_params: SamplingParams = field(default_factory=SamplingParams)  # judge sampling

    def __post_init__(self) -> None:
        _check_messages(self.input)
        if not self.labels:
            raise ValueError("key 'labels': give at least one label")
        if not self.passing_labels:
            raise ValueError("key 'passing_labels': give at least one of the labels")
        for label in self.passing_labels:
            if label not in self.labels:
                raise ValueError(f"key 'passing_labels': '{label}' is not one of labels ({', '.join(self.labels)})")


def judge_prompt(messages: list[dict[str, str]], generator: Any) -> str:
    """Rendered messages as one prompt: the judge tokenizer's chat template, else the contents joined by blank lines.

    >>> judge_prompt([{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Rate: 4"}], object())
    'Be fair.\\n\\nRate: 4'
    """
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


def _ask(input_: list[dict[str, Any]], sp: SamplingParams, generator: Any, problem: Problem, completion: str) -> str:
    messages = [
        {
            "role": m["role"],
            "content": as_text(render_key(message_text(m, f"input[{i}]"), f"input[{i}]", problem, completion)),
        }
        for i, m in enumerate(input_)
    ]
    sample = generator.generate(
        [judge_prompt(messages, generator)],
        1,
        temperature=sp.temperature if sp.temperature is not None else 0.0,
        max_new_tokens=sp.max_completions_tokens or 256,
        stop=None,
        seed=sp.seed or 0,
        top_p=sp.top_p if sp.top_p is not None else 1.0,
    )[0][0]
    return sample.text


def read_result(reply: str) -> float | None:
    """The judge's number: `result` of a JSON object in the reply (the schema's reply format), else the last number.

    >>> read_result('{"steps": [], "result": 0.75}'), read_result("7 of 10... final: 8"), read_result("Score: 7/10.")
    (0.75, 8.0, 7.0)
    >>> read_result("no idea") is None
    True
    """
    obj, _ = extract_json(reply)
    if obj is not None and isinstance(obj.get("result"), (int, float)) and not isinstance(obj["result"], bool):
        return float(obj["result"])
    found = NUMBER_RE.findall(_drop_out_of(reply))
    return parse_number(found[-1]) if found else None


@grades_missing_fields_zero
def score_model(cfg: ScoreModelConfig, generator: Any, problem: Problem, completion: str) -> Grade:
    """Ask the judge once; the value clipped into `range`, the grade its place in the range."""
    reply = _ask(cfg.input, cfg.sampling_params, generator, problem, completion)
    lo, hi = cfg.range
    raw = read_result(reply)
    value = min(hi, max(lo, raw if raw is not None else 0.0))
    score = (value - lo) / (hi - lo)
    details: dict[str, Any] = {"value": value, "judge_replies": [reply]}
    reason = f"judge: {value:g} in [{lo:g}, {hi:g}]" + (" (no number in the reply)" if raw is None else "")
    if raw is not None and raw != value:
        reason += f" (clipped from {raw:g})"
    if cfg.pass_threshold is not None:
        details["passed"] = value >= cfg.pass_threshold
        reason += f" {'pass' if details['passed'] else 'fail'} (threshold {cfg.pass_threshold:g})"
    return Grade(score, f"{value:g}", reason, details)


@grades_missing_fields_zero
def label_model(cfg: LabelModelConfig, generator: Any, problem: Problem, completion: str) -> Grade:
    """Ask the judge once; 1 when the label it names last is a passing label."""
    reply = _ask(cfg.input, cfg.sampling_params, generator, problem, completion)
    label = read_label(reply, cfg.labels)
    passed = label in cfg.passing_labels
    reason = f"judge: {label}" if label else "judge: ? (no label in the judge's reply)"
    return Grade(1.0 if passed else 0.0, label, reason, {"passed": passed, "judge_replies": [reply]})
