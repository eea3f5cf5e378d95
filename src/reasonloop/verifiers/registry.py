"""A trained verifier on disk: its directory holds `reasonloop_verifier.json`, which says how to load it.

    {"kind": "value", "model": "verifier", "aggregate": "last"}              # ORM, PRM, Bradley-Terry
    {"kind": "pav", "value": "../prm", "prover": "prover", "alpha": 1.0, "aggregate": "min"}
    {"kind": "dpo", "policy": "policy", "reference": "/path/to/generator", "aggregate": "sum"}
    {"kind": "genrm", "model": "verifier", "votes": 4, "aggregate": "last"}
    {"kind": "genrm", "model": "verifier", "votes": 4, "checks": true, "max_new_tokens": 300}   # GenRM-CoT
    {"kind": "checked", "model": "verifier", "aggregate": "last", "checker": "../checker", "weight": 1.0}

Relative paths are relative to the verifier's directory. `load_verifier(dir)`
returns an object with `score`, `score_steps`, `score_many`, `score_prefixes`
and `tokens_scored`, whatever the kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reasonloop.core import ReasonloopError, atomic_write_json

MANIFEST = "reasonloop_verifier.json"
KINDS = ("value", "pav", "dpo", "genrm", "checked")


def write_manifest(directory: str | Path, **spec: Any) -> Path:
    """Record how to load the verifier in `directory`."""
    if spec.get("kind") not in KINDS:
        raise ValueError(f"unknown verifier kind {spec.get('kind')!r}; expected one of {', '.join(KINDS)}")
    path = Path(directory) / MANIFEST
    atomic_write_json(path, {k: str(v) if isinstance(v, Path) else v for k, v in spec.items()})
    return path


def load_verifier(directory: str | Path):
    """The verifier saved in `directory`; a one-line error if it is not one."""
    from reasonloop.verifiers.check import CheckedVerifier, StepChecker
    from reasonloop.verifiers.dpo import DpoVerifier
    from reasonloop.verifiers.genrm import GenRMVerifier
    from reasonloop.verifiers.pav import PavVerifier
    from reasonloop.verifiers.value import ValueVerifier

    d = Path(directory).expanduser()
    path = d / MANIFEST
    if not path.exists():
        raise ReasonloopError(f"verifier path '{d}' has no {MANIFEST}: train one with `reasonloop verifiers`")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReasonloopError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None

    def at(key: str) -> Path:
        if key not in spec:
            raise ReasonloopError(f"{path}: missing key '{key}' for kind '{spec.get('kind')}'")
        p = Path(spec[key]).expanduser()
        return p if p.is_absolute() else d / p

    kind = spec.get("kind")
    if kind == "value":
        return ValueVerifier.from_dir(at("model") if "model" in spec else d, aggregate=spec.get("aggregate", "last"))
    if kind == "pav":
        value = ValueVerifier.from_dir(at("value"))
        return PavVerifier(
            value, ValueVerifier.from_dir(at("prover")), spec.get("alpha", 1.0), spec.get("aggregate", "min")
        )
    if kind == "dpo":
        return DpoVerifier.from_dirs(at("policy"), at("reference"), aggregate=spec.get("aggregate", "sum"))
    if kind == "genrm":
        return GenRMVerifier.from_dir(
            at("model"), votes=spec.get("votes", 4), aggregate=spec.get("aggregate", "last"),
            checks=spec.get("checks", False), max_new_tokens=spec.get("max_new_tokens", 96),
        )  # fmt: skip
    if kind == "checked":
        value = ValueVerifier.from_dir(at("model"), aggregate=spec.get("aggregate", "last"))
        return CheckedVerifier(value, StepChecker.from_dir(at("checker")), spec.get("weight", 1.0))
    raise ReasonloopError(f"{path}: unknown verifier kind {kind!r}; expected one of {', '.join(KINDS)}")
