"""Layer 2: problem sources. Built-in worlds (`arith`, `countdown`, `extract`) and JSONL files (GSM8K, MATH, any
`prompt`/`answer` file)."""

from __future__ import annotations

import difflib
from typing import Any

from reasonloop.core import ConfigError, from_dict
from reasonloop.tasks.arith import ArithConfig, ArithTask
from reasonloop.tasks.base import Task, hash_split
from reasonloop.tasks.countdown import CountdownConfig, CountdownTask
from reasonloop.tasks.extract import ExtractConfig, ExtractTask
from reasonloop.tasks.jsonl import FORMATS, ChatRenderer, JsonlFormat, JsonlTask

WORLDS = ("arith", "countdown", "extract")
TASKS = (*WORLDS, "gsm8k", "math", "jsonl")


def parse_task_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` (how recipe configs name a world with options).

    >>> parse_task_spec("countdown:n_numbers=3,number_max=9")
    ('countdown', {'n_numbers': '3', 'number_max': '9'})
    """
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"task '{spec}': expected name:key=value,key=value (bad part '{item}')")
        options[key.strip()] = value.strip()
    return name.strip(), options


def get_task(
    name: str, data: str | None = None, *, system_prompt: str = "", chat: ChatRenderer | None = None, **options: Any
) -> Task:
    """A task by name. Worlds take their config keys as options; file tasks need `data` (a JSONL path), and may
    take a `system_prompt` and a `chat` renderer (`JsonlTask`: prompts for instruct models).

    `name` may carry the options itself, ``countdown:n_numbers=3,number_max=9``
    (what the `task` key of a recipe config holds).
    """
    if ":" in name:
        name, spec_options = parse_task_spec(name)
        options = {**spec_options, **options}
    if (system_prompt or chat is not None) and name in WORLDS:
        raise ConfigError(
            f"task '{name}': a system prompt and chat templates apply to file tasks (gsm8k, math, jsonl); "
            "the built-in worlds are prompted as their nano models were trained"
        )
    if name == "arith":
        return ArithTask(from_dict(ArithConfig, options, source="arith options"))
    if name == "countdown":
        return CountdownTask(from_dict(CountdownConfig, options, source="countdown options"))
    if name == "extract":
        return ExtractTask(from_dict(ExtractConfig, options, source="extract options"))
    if name in FORMATS:
        if data is None:
            raise ConfigError(f"task '{name}' reads a JSONL file: pass its path (--data FILE)")
        return JsonlTask(data, name, system_prompt=system_prompt, chat=chat)
    near = difflib.get_close_matches(name, TASKS, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise ConfigError(f"unknown task '{name}'{hint}; valid tasks: {', '.join(TASKS)}")


__all__ = [
    "ArithConfig",
    "ArithTask",
    "ChatRenderer",
    "CountdownConfig",
    "CountdownTask",
    "ExtractConfig",
    "ExtractTask",
    "FORMATS",
    "JsonlFormat",
    "JsonlTask",
    "TASKS",
    "WORLDS",
    "Task",
    "get_task",
    "parse_task_spec",
    "hash_split",
]
