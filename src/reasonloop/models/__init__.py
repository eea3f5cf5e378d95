"""Layer 3: load/save any HF causal LM, the nano default model, value heads."""

from reasonloop.models.hf import (
    chat_renderer,
    check_model_dir,
    load_model,
    load_tokenizer,
    reasonloop_home,
    resolve_model,
    save_model,
)
from reasonloop.models.nano import build_model, build_tokenizer
from reasonloop.models.value_head import ValueHeadModel

__all__ = [
    "ValueHeadModel",
    "build_model",
    "build_tokenizer",
    "chat_renderer",
    "check_model_dir",
    "load_model",
    "load_tokenizer",
    "reasonloop_home",
    "resolve_model",
    "save_model",
]
