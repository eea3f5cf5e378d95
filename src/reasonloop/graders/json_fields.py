"""The `json_fields` grader: a JSON object in the completion scored field by field against a reference object.

Each scalar field is one item `(field, value)`; a list field contributes one item
per distinct element, so lists compare as sets and partly right lists earn
partial credit. Precision = matched / predicted items, recall = matched /
reference items, F1 their harmonic mean. Strings match after trimming and, by
default, case folding; numbers match within `abs_tol`. Only the reference's
fields (or `fields`, if given) are scored: extra keys in the prediction are
ignored, since an extraction target lists what it wants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reasonloop.core import Problem, bounded
from reasonloop.core.grading import prf
from reasonloop.graders.base import Grade, extract_json, grades_missing_fields_zero, render_key

SCORES = ("f1", "precision", "recall")


@dataclass(frozen=True)
class JsonFieldsConfig:
    """Field-by-field precision, recall and F1 of a JSON object against the reference object."""

    reference: str = "{{item.answer}}"  # template giving the reference object (a dict or its JSON text)
    fields: list[str] | None = None  # score only these fields (default: every field of the reference)
    score: str = "f1"  # which of f1, precision, recall becomes the score
    case_sensitive: bool = False  # compare strings case as written
    abs_tol: float = bounded(1e-6, ge=0)  # numbers closer than this match

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score '{self.score}' is not one of {', '.join(SCORES)}")


def _norm(value: Any, cfg: JsonFieldsConfig) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value) / cfg.abs_tol) if cfg.abs_tol > 0 else float(value)
    if isinstance(value, str):
        s = " ".join(value.split())
        return s if cfg.case_sensitive else s.casefold()
    return json.dumps(value, sort_keys=True)  # nested objects match only as a whole


def _items(obj: dict[str, Any], fields: list[str], cfg: JsonFieldsConfig) -> set[tuple[str, Any]]:
    items = set()
    for f in fields:
        if f not in obj or obj[f] is None:
            continue
        values = obj[f] if isinstance(obj[f], list) else [obj[f]]
        items.update((f, _norm(v, cfg)) for v in values)
    return items


@grades_missing_fields_zero
def json_fields(cfg: JsonFieldsConfig, problem: Problem, completion: str) -> Grade:
    """Hand-worked: reference {name: Ada, year: 1843, tags: [math, poetry]} has 4 items;
    the prediction {name: ada, year: 1842, tags: [math, code, poetry]} has 5, of which 3 match
    (name, math, poetry). P = 3/5, R = 3/4, F1 = 2 * 0.6 * 0.75 / 1.35 = 2/3.

    >>> ref = '{"name": "Ada", "year": 1843, "tags": ["math", "poetry"]}'
    >>> p = Problem("1", "Extract.", ref)
    >>> g = json_fields(JsonFieldsConfig(), p, '```json\\n{"name": "ada", "year": 1842, "tags": ["math", "code", "poetry"]}\\n```')
    >>> round(g.score, 4), g.details["precision"], g.details["recall"]
    (0.6667, 0.6, 0.75)
    >>> print(json_fields(JsonFieldsConfig(score="recall"), p, '{"name": "Ada", "oops"').reason)
    no JSON object found (invalid JSON: Expecting ':' delimiter at 1:23)
    """
    pred, why = extract_json(completion)
    if pred is None:
        return Grade(0.0, None, why)
    ref = render_key(cfg.reference, "reference", problem, completion)
    if isinstance(ref, str):
        ref, why = extract_json(ref)
        if ref is None:
            return Grade(0.0, json.dumps(pred), f"reference: {why}")
    fields = list(cfg.fields) if cfg.fields is not None else list(ref)
    p, r, f1 = prf(_items(pred, fields, cfg), _items(ref, fields, cfg))
    details = {"precision": p, "recall": r, "f1": f1}
    score = details[cfg.score]
    return Grade(score, json.dumps(pred, ensure_ascii=False), f"precision {p:.2f} recall {r:.2f} f1 {f1:.2f}", details)
