"""What every grader shares: templates over (problem, completion), JSON and number parsing.

`Grade` and `Grader` live in `reasonloop.core` (tasks grade with them too) and are re-exported here.

A grader is a plain function `grader(problem, completion) -> Grade`. Graders
built from configs are `functools.partial`s of a module-level function and a
frozen config, so they pickle and can be shipped to worker processes.

Templates follow the OpenAI grader convention: `{{item.answer}}` is a field of
the problem (`id`, `prompt`, `answer`, or any key of `problem.meta`),
`{{sample.output_text}}` is the completion and `{{sample.output_json.x}}` a field
of the JSON object found in it. Dotted paths go into nested objects; a reference
answer that is a JSON object in text is decoded when a path goes inside it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from reasonloop.core import DataError, Grade, Grader, Problem  # noqa: F401 - Grade and Grader are re-exported
from reasonloop.core.grading import FENCE_RE, extract_json  # noqa: F401 - re-exported for the graders


class SampleFieldError(DataError):
    """A template asked the completion for something it lacks (no JSON object, a missing field)."""


def grades_missing_fields_zero(fn: Callable[..., Grade]) -> Callable[..., Grade]:
    """Decorate a grading function so a completion lacking a templated field scores 0 with the reason.

    A missing field of the problem (`item.x`) still raises: that is a data error, not a bad completion.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Grade:
        try:
            return fn(*args)
        except SampleFieldError as e:
            return Grade(0.0, None, str(e))

    return wrapper


PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


def item_fields(problem: Problem) -> dict[str, Any]:
    """The problem as the `item` a template sees: meta keys, then id, prompt and answer."""
    return {**problem.meta, "id": problem.id, "prompt": problem.prompt, "answer": problem.answer}


def _walk(value: Any, keys: list[str], path: str, error: type[DataError] = DataError) -> Any:
    for key in keys:
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise error(f"template field '{path}' not found")
    return value


def resolve(path: str, problem: Problem, completion: str) -> Any:
    """The value a template path names.

    >>> p = Problem("q1", "Capital of France?", '{"city": "Paris"}', meta={"tags": ["geo"]})
    >>> resolve("item.answer.city", p, "x"), resolve("item.tags.0", p, "x")
    ('Paris', 'geo')
    >>> resolve("sample.output_json.city", p, 'I think {"city": "Lyon"}')
    'Lyon'
    """
    root, *keys = path.split(".")
    if root == "item":
        fields = item_fields(problem)
        if keys and keys[0] not in fields:
            raise DataError(f"template field '{path}' not found (item fields: {', '.join(sorted(fields))})")
        return _walk(fields, keys, path)
    if root == "sample" and keys[:1] == ["output_text"] and len(keys) == 1:
        return completion
    if root == "sample" and keys[:1] == ["output_json"]:
        obj, why = extract_json(completion)
        if obj is None:
            raise SampleFieldError(f"template field '{path}': {why}")
        return _walk(obj, keys[1:], path, SampleFieldError)
    raise DataError(f"template field '{path}': use item.<field>, sample.output_text or sample.output_json.<field>")


def render_key(template: str, key: str, problem: Problem, completion: str) -> Any:
    """`render`, with a missing field's error naming the config key whose template asked for it.

    >>> render_key("{{item.answr}}", "reference", Problem("q1", "2+2?", "4"), "")
    Traceback (most recent call last):
    ...
    reasonloop.core.types.DataError: key 'reference': template field 'item.answr' not found (item fields: answer, id, prompt)
    """
    try:
        return render(template, problem, completion)
    except DataError as e:
        raise type(e)(f"key '{key}': {e}") from None


def render(template: str, problem: Problem, completion: str) -> Any:
    """Fill `{{...}}` placeholders. A template that is one placeholder returns the raw value (str, dict, list, ...).

    >>> p = Problem("q1", "2+2?", "4")
    >>> render("Q: {{item.prompt}} A: {{ sample.output_text }}", p, "four")
    'Q: 2+2? A: four'
    >>> render("{{item.answer}}", p, ""), render("literal", p, "")
    ('4', 'literal')
    """
    whole = PLACEHOLDER_RE.fullmatch(template.strip())
    if whole:
        return resolve(whole.group(1), problem, completion)

    def fill(m: re.Match) -> str:
        v = resolve(m.group(1), problem, completion)
        return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)

    return PLACEHOLDER_RE.sub(fill, template)


def check_template(template: str, source: str) -> None:
    """Fail at config time on a placeholder root no problem or completion can fill."""
    from reasonloop.core import ConfigError

    for m in PLACEHOLDER_RE.finditer(template):
        root, *keys = m.group(1).split(".")
        ok = root == "item" or (root == "sample" and keys[:1] in (["output_text"], ["output_json"]))
        if not ok:
            raise ConfigError(
                f"{source}: template field '{m.group(1)}' is not valid "
                "(use item.<field>, sample.output_text or sample.output_json.<field>)"
            )


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# Thousands groups must be whole ("1,234"); "1,2" is two numbers.
NUMBER_RE = re.compile(r"(?<![\d.])[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|(?<![\d.])[-+]?\$?\.\d+%?")


def parse_number(text: str) -> float | None:
    """A number written with commas, sign, decimals, `$` or `%`; None if `text` is not one.

    >>> [parse_number(s) for s in ["1,234.5", "-$3", "+7", "50%", ".5", "12/4", "abc"]]
    [1234.5, -3.0, 7.0, 50.0, 0.5, 3.0, None]
    """
    s = text.strip().rstrip(".").replace(" ", "")
    if "/" in s:  # a plain fraction such as 3/4
        num, _, den = s.partition("/")
        a, b = parse_number(num), parse_number(den)
        return a / b if a is not None and b not in (None, 0.0) else None
    if not NUMBER_RE.fullmatch(s):
        return None
    return float(s.replace(",", "").replace("$", "").replace("%", ""))


def last_number(text: str) -> str | None:
    """The last number written in `text`, as written.

    >>> last_number("She pays $1,200.50 in total, i.e. 5% more.")
    '5%'
    >>> last_number("no digits") is None
    True
    """
    found = NUMBER_RE.findall(text)
    return found[-1] if found else None


def numbers_match(got: float, want: float, abs_tol: float, rel_tol: float) -> bool:
    """`|got - want| <= max(abs_tol, rel_tol * |want|)`.

    >>> numbers_match(100.4, 100, 0.5, 0), numbers_match(103, 100, 0, 0.02), numbers_match(103, 100, 0, 0.05)
    (True, False, True)
    """
    return abs(got - want) <= max(abs_tol, rel_tol * abs(want))
