"""Where built-in models live, and how a model spec maps to a backend and a directory or URL.

A model is named by a spec wherever a model is named: `hf:DIR` (or a bare
directory, or a built-in name such as `nano`) for local weights run by the `hf`
engine, `vllm:DIR` for the same weights run by in-process vLLM (optional
extra), and `openai:URL#model` for a model behind an OpenAI-compatible
completions endpoint (`URL` is the API base, the one the `openai` client takes,
e.g. `http://127.0.0.1:8000/v1`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reasonloop.core.types import ReasonloopError


def reasonloop_home() -> Path:
    """$REASONLOOP_HOME, default ~/.cache/reasonloop."""
    return Path(os.environ.get("REASONLOOP_HOME", "~/.cache/reasonloop")).expanduser()


BUILT_IN_MODELS = ("nano", "nano-countdown")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: `backend` is "hf", "vllm" or "openai"; `target` the directory (or built-in name) or the API base
    URL; `model` the served model's name (openai only)."""

    backend: str
    target: str
    model: str = ""


def parse_model_spec(spec: str | os.PathLike) -> ModelSpec:
    """Split a model spec into backend, directory or URL, and served model name.

    >>> parse_model_spec("nano"), parse_model_spec("hf:/tmp/m").target
    (ModelSpec(backend='hf', target='nano', model=''), '/tmp/m')
    >>> parse_model_spec("vllm:/tmp/m")
    ModelSpec(backend='vllm', target='/tmp/m', model='')
    >>> parse_model_spec("openai:http://127.0.0.1:8000/v1#nano")
    ModelSpec(backend='openai', target='http://127.0.0.1:8000/v1', model='nano')
    >>> parse_model_spec("openai:http://h/v1")
    Traceback (most recent call last):
    ...
    reasonloop.core.types.ReasonloopError: model spec 'openai:http://h/v1': expected openai:URL#model (the served model's name after '#')
    """
    text = str(spec)
    for backend in ("hf", "vllm"):
        if text.startswith(f"{backend}:"):
            if not text[len(backend) + 1 :]:
                raise ReasonloopError(f"model spec '{text}': expected {backend}:DIR")
            return ModelSpec(backend, text[len(backend) + 1 :])
    if text.startswith("openai:"):
        url, sep, model = text[len("openai:") :].rpartition("#")
        if not sep or not url or not model:
            raise ReasonloopError(f"model spec '{text}': expected openai:URL#model (the served model's name after '#')")
        if not url.startswith(("http://", "https://")):
            raise ReasonloopError(f"model spec '{text}': the URL must start with http:// or https://, got '{url}'")
        return ModelSpec("openai", url.rstrip("/"), model)
    return ModelSpec("hf", text)


def resolve_model(name: str | os.PathLike) -> Path:
    """`nano` (the `arith` base) and `nano-countdown` (the demo's countdown base) name built-in models in
    `reasonloop_home()`; `hf:DIR`, `vllm:DIR` and anything else is a directory. An `openai:` spec has no local weights, so
    asking for its directory (to train it, or to load it in process) is a one-line error.

    >>> resolve_model("/tmp/m").as_posix(), resolve_model("nano-countdown").name, resolve_model("hf:nano").name
    ('/tmp/m', 'nano-countdown', 'nano')
    """
    spec = parse_model_spec(name)
    if spec.backend == "openai":
        raise ReasonloopError(
            f"model '{name}' is served over HTTP; this needs local weights (a directory, hf:DIR or a built-in name)"
        )
    return reasonloop_home() / spec.target if spec.target in BUILT_IN_MODELS else Path(spec.target).expanduser()
