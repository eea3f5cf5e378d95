"""Graders from configs: `grader_from_config(dict)` and `load_grader(yaml_path)` (YAML or JSON).

A config is a mapping with `type` and that type's keys (its frozen dataclass).
OpenAI grader objects load as they are: their types (`string_check`,
`text_similarity`, `score_model`, `label_model`, `python`, `multi`), their keys
and templates; `name` is accepted and ignored. Our short forms are aliases:
`metric` for `evaluation_metric`, `formula` for `calculate_output` (docs/graders.md
lists both side by side). A `multi` config holds `graders: {name: config}` and a
formula over the names. Unknown types and keys, and templates no problem or
completion can fill, fail at load time with one line naming them and the
closest valid choice.

>>> from reasonloop.core import Problem
>>> g = grader_from_config({"type": "numeric", "abs_tol": 0.5})
>>> g(Problem("1", "?", "10"), "about 10.4").score
1.0
>>> grader_from_config({"type": "numerc"})
Traceback (most recent call last):
...
reasonloop.core.types.ConfigError: grader: unknown type 'numerc' (did you mean 'numeric'?)
>>> grader_from_config({"type": "numeric", "abs_tl": 1})
Traceback (most recent call last):
...
reasonloop.core.types.ConfigError: grader 'numeric': unknown key 'abs_tl' (did you mean 'abs_tol'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from typing import Any

from reasonloop.core import ConfigError, from_dict
from reasonloop.graders.base import Grader, check_template
from reasonloop.graders.json_fields import JsonFieldsConfig, json_fields
from reasonloop.graders.judge import LabelModelConfig, ModelConfig, ScoreModelConfig, judge, label_model, score_model
from reasonloop.graders.math_equiv import MathConfig, math_equal
from reasonloop.graders.multi import check_formula, multi_grade
from reasonloop.graders.numeric import Gsm8kConfig, NumericConfig, gsm8k, numeric
from reasonloop.graders.python_grader import PythonConfig, python_grade
from reasonloop.graders.text import (
    ExactConfig,
    StringCheckConfig,
    TextSimilarityConfig,
    exact,
    string_check,
    text_similarity,
)

# type -> (config class, grading function taking (config, problem, completion))
GRADERS: dict[str, tuple[type, Any]] = {
    "exact": (ExactConfig, exact),
    "string_check": (StringCheckConfig, string_check),
    "numeric": (NumericConfig, numeric),
    "gsm8k": (Gsm8kConfig, gsm8k),
    "math": (MathConfig, math_equal),
    "json_fields": (JsonFieldsConfig, json_fields),
    "text_similarity": (TextSimilarityConfig, text_similarity),
    "python": (PythonConfig, python_grade),
    "model": (ModelConfig, judge),  # these three also take the judge generator
    "score_model": (ScoreModelConfig, score_model),
    "label_model": (LabelModelConfig, label_model),
}
TYPES = (*GRADERS, "multi")
JUDGED = ("model", "score_model", "label_model")
KEY_ALIASES = {  # our short form -> the schema's key
    "text_similarity": {"metric": "evaluation_metric"},
    "multi": {"formula": "calculate_output"},
}
NOT_TEMPLATES = ("source",)  # python source is code, sent as it is


def _near(word: str, choices: list[str] | tuple[str, ...]) -> str:
    near = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(choices)})"


def grader_from_config(config: dict[str, Any], *, generator: Any = None, source: str = "grader") -> Grader:
    """A grader built from a config mapping. `generator` (a Generator, the judge) is needed by model graders only."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'type' key, got {type(config).__name__}")
    if "type" not in config:
        raise ConfigError(f"{source}: missing key 'type' (one of {', '.join(TYPES)})")
    kind = config["type"]
    if kind not in TYPES:
        raise ConfigError(f"{source}: unknown type '{kind}'{_near(str(kind), TYPES)}")
    where = f"{source} '{kind}'" if source == "grader" else f"{source} ({kind})"
    keys = _unalias({k: v for k, v in config.items() if k not in ("type", "name")}, kind, where)
    if kind == "multi":
        return _multi(keys, generator, where)
    cls, fn = GRADERS[kind]
    cfg = from_dict(cls, keys, source=where)
    for f in dataclasses.fields(cfg):
        if f.name not in NOT_TEMPLATES:
            for text in _strings(getattr(cfg, f.name)):
                check_template(text, f"{where}: key '{f.name}'")
    if kind in JUDGED:
        if generator is None:
            raise ConfigError(f"{where}: a model grader needs a judge generator (on the command line: --judge-model)")
        return functools.partial(fn, cfg, generator)
    return functools.partial(fn, cfg)


def _unalias(keys: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """Rename our short keys to the schema's; giving both spellings is an error."""
    for short, full in KEY_ALIASES.get(kind, {}).items():
        if short in keys:
            if full in keys:
                raise ConfigError(f"{where}: give one of '{full}' and '{short}' (the same key, two spellings)")
            keys[full] = keys.pop(short)
    return keys


def _strings(value: Any) -> list[str]:
    """Every string inside a config value (messages are lists of mappings)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _multi(keys: dict[str, Any], generator: Any, where: str) -> Grader:
    allowed = ["graders", "calculate_output"]
    for k in keys:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key '{k}'{_near(k, allowed)}")
    graders, formula = keys.get("graders"), keys.get("calculate_output")
    if not isinstance(graders, dict) or not graders:
        raise ConfigError(f"{where}: key 'graders' must map names to grader configs")
    if not isinstance(formula, str) or not formula.strip():
        raise ConfigError(
            f"{where}: key 'calculate_output' (or 'formula') must be an arithmetic formula over the grader names"
        )
    for name in graders:
        if not str(name).isidentifier():
            raise ConfigError(f"{where}: grader name '{name}' must be an identifier (letters, digits, _)")
    try:
        check_formula(formula, list(graders))
    except ConfigError as e:
        raise ConfigError(f"{where}: key 'calculate_output': {e}") from None
    built = {
        name: grader_from_config(sub, generator=generator, source=f"{where}: grader '{name}'")
        for name, sub in graders.items()
    }
    return functools.partial(multi_grade, built, formula)


def multi(graders: dict[str, Grader], formula: str) -> Grader:
    """Compose graders from Python: `multi({"f1": g1, "label": g2}, "0.7 * f1 + 0.3 * label")`."""
    check_formula(formula, list(graders))
    return functools.partial(multi_grade, dict(graders), formula)


def load_grader(path: str | os.PathLike, *, generator: Any = None) -> Grader:
    """A grader from a YAML file holding one grader config (JSON is YAML too: an OpenAI grader object loads as is)."""
    from reasonloop.core.config import read_yaml

    return grader_from_config(read_yaml(path, "grader file"), generator=generator, source=str(path))
