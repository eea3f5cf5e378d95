"""The core records that flow through every layer: `Problem`, `Sample`, steps, errors.

A solution is a list of steps joined by the task's step delimiter. Every layer
(process verifiers, beam search, MCTS, per-step DPO) agrees on step boundaries
through `split_steps` / `join_steps` with the delimiter the task declares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ReasonloopError(Exception):
    """An error caused by the user's input (file, config, path); the CLI prints it as one line."""


class DataError(ReasonloopError):
    """Malformed data: the message names the file and line."""


class ConfigError(ReasonloopError):
    """A bad configuration key or value: the message names the key."""


@dataclass(frozen=True)
class Problem:
    """One task instance.

    `prompt` is the exact text given to the generator; `answer` is the reference
    final answer as text; `meta` holds task-specific facts (difficulty, source,
    canonical steps, the hinted prompt used by STaR rationalisation, ...).
    """

    id: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        return cls(id=str(d["id"]), prompt=d["prompt"], answer=str(d["answer"]), meta=d.get("meta", {}))


@dataclass
class Sample:
    """One completion of one problem.

    `token_ids` and `logprobs` cover every generated token, including the token
    that completed a stop string or the end-of-sequence token; `text` is cut
    before the stop string (as in the OpenAI and vLLM APIs). `logprobs` are under
    the model's untempered distribution, so they match `Generator.logprobs`.
    `prompt_ids` are the prompt's token ids as the generator encoded them, so
    training on a sample (RL, per-step DPO) uses exactly the sampled sequence
    `prompt_ids + token_ids`, never a re-tokenisation of `text`.
    `meta` records the model, temperature, seed and `finish_reason`
    ("eos", "stop" or "length").
    """

    problem_id: str
    text: str
    steps: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    reward: float | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DataError(f"unknown sample field(s): {sorted(unknown)}")
        if "problem_id" not in d or "text" not in d:
            raise DataError("a sample needs 'problem_id' and 'text'")
        return cls(**d)


def split_steps(text: str, delimiter: str) -> list[str]:
    """Split a solution into steps, dropping empty ones.

    >>> split_steps("1+2=3\\n3*4=12\\nA: 12\\n", "\\n")
    ['1+2=3', '3*4=12', 'A: 12']
    """
    return [s.strip() for s in text.split(delimiter) if s.strip()]


def join_steps(steps: list[str], delimiter: str) -> str:
    """Inverse of `split_steps` for already-stripped steps.

    >>> join_steps(["1+2=3", "A: 3"], "\\n")
    '1+2=3\\nA: 3'
    """
    return delimiter.join(steps)
