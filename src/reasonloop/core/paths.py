"""Where built-in models live, and how a model name maps to a directory."""

from __future__ import annotations

import os
from pathlib import Path


def reasonloop_home() -> Path:
    """$REASONLOOP_HOME, default ~/.cache/reasonloop."""
    return Path(os.environ.get("REASONLOOP_HOME", "~/.cache/reasonloop")).expanduser()


BUILT_IN_MODELS = ("nano", "nano-countdown")


def resolve_model(name: str | os.PathLike) -> Path:
    """`nano` (the `arith` base) and `nano-countdown` (the demo's countdown base) name built-in models in
    `reasonloop_home()`; anything else is a directory.

    >>> resolve_model("/tmp/m").as_posix(), resolve_model("nano-countdown").name
    ('/tmp/m', 'nano-countdown')
    """
    return reasonloop_home() / str(name) if str(name) in BUILT_IN_MODELS else Path(name).expanduser()
