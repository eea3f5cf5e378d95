"""Frozen-dataclass configs filled from YAML files and `key=value` overrides, with one-line errors.

A field whose type is itself a config dataclass is a nested section: a mapping
in YAML (``critic: {lr: 1e-5}``) or a dotted key on the command line
(``--set critic.lr=1e-5``), checked key by key like the top level.

Ranges: a numeric field declares the values it accepts with `bounded`, and
`from_dict` (hence every YAML file and `--set`) refuses anything outside it with
one line naming the key, before anything runs. A command-line flag declares its
range with `ranged`, the same way::

    @dataclass(frozen=True)
    class MyConfig:
        n_train: int = bounded(1000, ge=1)  # training problems
        lr: float = bounded(1e-3, gt=0)  # peak learning rate
        clip: float = bounded(0.2, gt=0, lt=1)  # PPO clip range

    parser.add_argument("--n", type=ranged(int, ge=1), default=4)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reasonloop.core.types import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field or flag accepts: `ge`/`gt` bound it below, `le`/`lt` above; None leaves a side open.

    Floats must also be finite (no nan or inf).

    >>> str(Range(ge=1)), str(Range(gt=0, le=1)), str(Range(ge=0, le=1))
    ('>= 1', 'in (0, 1]', 'in [0, 1]')
    >>> Range(gt=0, le=1).problem(2.0)
    'must be in (0, 1], got 2.0'
    >>> Range(ge=1).problem(3) is None
    True
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "a finite number"

    def problem(self, value: Any) -> str | None:
        """None when `value` is in range, else what is wrong with it (`must be >= 1, got 0`)."""
        if value is None:
            return None
        bad = isinstance(value, float) and not math.isfinite(value)
        bad = bad or (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
        bad = bad or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt)
        return f"must be {self}, got {value!r}" if bad else None


def bounded(
    default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> Any:
    """A dataclass field with `default` whose value `from_dict` keeps within the range (see `Range`)."""
    return dataclasses.field(default=default, metadata={"range": Range(ge, gt, le, lt)})


def field_range(cls: type, name: str) -> Range | None:
    """The range declared for field `name` of the dataclass `cls`, or None."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return fields[name].metadata.get("range") if name in fields else None


def ranged(
    kind: Callable[[str], Any],
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Callable[[str], Any]:
    """An argparse `type=` that parses with `kind` (int or float) and refuses values outside the range.

    >>> ranged(int, ge=1)("3")
    3
    >>> ranged(int, ge=1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be >= 1, got 0
    """
    rng = Range(ge, gt, le, lt)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {getattr(kind, '__name__', kind)}, got {text!r}") from None
        why = rng.problem(value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its messages
    parse.range = rng  # type: ignore[attr-defined]  # read by the docs table of flags
    return parse


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': cannot use {value!r} as {tp}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, source=f"config key '{key}'")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
        try:
            v = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != v:
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return v
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build the frozen dataclass `cls` from `data`; unknown keys, bad values and values outside a field's
    declared range (`bounded`) raise `ConfigError` naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (valid keys: {', '.join(names)})"
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
        try:
            kwargs[key] = _coerce(value, hints[key], key)
        except ConfigError as e:  # say which file or grader the bad value is in
            raise ConfigError(f"{source}: {e}") from None
        rng = field_range(cls, key)
        why = rng.problem(kwargs[key]) if rng else None
        if why:
            raise ConfigError(f"{source}: key '{key}' {why}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # __post_init__ validation
        raise ConfigError(f"{source}: {e}") from None


def read_yaml(path: str | os.PathLike, what: str = "file") -> dict[str, Any]:
    """A YAML file holding a mapping; ConfigError naming the file when it is missing, malformed or not a mapping."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: {what} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values")
    return loaded or {}


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> T:
    """Load `cls` from `defaults`, then a YAML file (optional), then `key=value` overrides (command line)."""
    data: dict[str, Any] = dict(defaults or {})
    source = "config"
    if path is not None:
        data.update(read_yaml(path, "config file"))
        source = str(path)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value")
        k, v = item.split("=", 1)
        *sections, leaf = k.strip().split(".")
        target = data
        for sec in sections:  # a dotted key sets a field of a nested section
            if not isinstance(target.get(sec, {}), dict):
                raise ConfigError(f"override '{item}': '{sec}' is not a section")
            target = target.setdefault(sec, {})
        target[leaf] = yaml.safe_load(v)
    return from_dict(cls, data, source=source)


def defaults_of(cls: type) -> dict[str, Any]:
    """The default of every field of the dataclass `cls` that has one (what `RunDir.save_config` compares to);
    a nested section's default is its own defaults as a mapping."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-friendly values (tuples as lists, nested sections as mappings)."""
    return _plain(cfg)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
