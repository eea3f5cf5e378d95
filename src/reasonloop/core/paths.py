"""Where built-in models live, and how a model name maps to a directory."""

from __future__ import annotations

import os
from pathlib import Path


def reasonloop_home() -> Path:
    """$REASONLOOP_HOME, default ~/.cache/reasonloop."""
    return Path(os.environ.get("REASONLOOP_HOME", "~/.cache/reasonloop")).expanduser()


def resolve_model(name: str | os.PathLike) -> Path:
    """`nano` names the built-in model in `reasonloop_home()`; anything else is a directory.

    >>> resolve_model("/tmp/m").as_posix()
    '/tmp/m'
    """
    return reasonloop_home() / "nano" if str(name) == "nano" else Path(name).expanduser()
