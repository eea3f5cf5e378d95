"""Frozen-dataclass configs filled from YAML files and `key=value` overrides, with one-line errors.

A field whose type is itself a config dataclass is a nested section: a mapping
in YAML (``critic: {lr: 1e-5}``) or a dotted key on the command line
(``--set critic.lr=1e-5``), checked key by key like the top level.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reasonloop.core.types import ConfigError

T = TypeVar("T")


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
    """Build the frozen dataclass `cls` from `data`; unknown keys and bad values raise `ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (valid keys: {', '.join(names)})"
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], key)
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
