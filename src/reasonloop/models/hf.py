"""Load and save any local Hugging Face causal LM and its tokenizer (safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from reasonloop.core import ReasonloopError, atomic_dir
from reasonloop.core.paths import reasonloop_home, resolve_model  # noqa: F401 - re-exported


def check_model_dir(path: str | os.PathLike) -> Path:
    """Fail with one line if `path` is not a saved model directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ReasonloopError(f"model path '{p}' does not exist (run `reasonloop init` to build the nano model)")
    if not (p / "config.json").exists():
        raise ReasonloopError(f"model path '{p}' has no config.json: not a Hugging Face model directory")
    return p


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in `path`, as the checkpoint declares it.

    transformers 5's `AutoTokenizer` prefers the model type's own tokenizer class
    (Qwen2's for a Qwen2 config), which rebuilds the pipeline and would change a
    custom `tokenizer.json` (it drops whitespace from the nano tokenizer). A
    checkpoint that declares the generic class gets exactly its `tokenizer.json`.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg_path = Path(path) / "tokenizer_config.json"
    declared = json.loads(cfg_path.read_text()).get("tokenizer_class") if cfg_path.exists() else None
    if declared in GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def chat_renderer(tokenizer, where: str = "the model"):
    """`messages -> prompt text`: the tokenizer's own chat template (`apply_chat_template`), ending with the
    assistant's turn opened (`add_generation_prompt`), as text (the engine tokenises it like any prompt).
    A tokenizer without a chat template (a base model, nano) is a one-line error naming `where`."""
    if not getattr(tokenizer, "chat_template", None):
        raise ReasonloopError(f"{where} has no chat template (a base model?): drop the chat option for it")

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # any one makes a tokenizer loadable


def check_weight_files(p: Path) -> None:
    """Read the header of every safetensors file in `p`: a truncated, empty or random file is one line naming it."""
    from safetensors import safe_open

    for f in sorted(p.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors' Rust errors share no Python base class
            raise ReasonloopError(
                f"{f}: not a readable safetensors file ({str(e).splitlines()[0]}): truncated or corrupt; save it again"
            ) from None


def load_model(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Load `(model, tokenizer)` from a local directory, in eval mode.

    Any `AutoModelForCausalLM` architecture works; nothing is downloaded. A
    missing tokenizer, or weights that are truncated, empty or not safetensors,
    fail with one line naming the file.
    """
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    found = [p / f for f in TOKENIZER_FILES if (p / f).exists()]
    if not found:
        raise ReasonloopError(f"model path '{p}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = load_tokenizer(p)
    except (OSError, ValueError, TypeError) as e:
        raise ReasonloopError(f"{found[0]}: cannot load the tokenizer: {str(e).splitlines()[0]}") from None
    check_weight_files(p)
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ReasonloopError(f"cannot load model from '{p}': {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer


def save_model(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save model (safetensors) and tokenizer so that `load_model(path)` restores both.

    Written to a temporary sibling and renamed (`core.atomic_dir`), so a kill never leaves half a
    checkpoint and a full disk is one line naming the directory, with nothing half-written left.
    """
    p = Path(path).expanduser()
    with atomic_dir(p) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return p
