"""Optional LoRA adapters through `peft`, for checkpoints too big to fine-tune fully.

    model = add_lora(model, LoraSettings(r=16))      # only adapter weights train
    train_loop(model, ...)
    merged = merge_lora(model)                       # a plain model again, saved with save_pretrained

`peft` is an optional dependency (`pip install reasonloop[lora]`), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasonloop.core import ReasonloopError


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (Hu et al. 2021)."""

    r: int = 16  # adapter rank
    alpha: int = 32  # scaling numerator: updates are scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _peft():
    try:
        import peft
    except ImportError:
        raise ReasonloopError("LoRA needs the 'peft' package: pip install 'reasonloop[lora]'") from None
    return peft


def add_lora(model, settings: LoraSettings = LoraSettings()):
    """Wrap `model` with trainable LoRA adapters; the base weights are frozen."""
    peft = _peft()
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in settings.target_modules if t in present]
    if not targets:
        raise ReasonloopError(f"none of the LoRA target modules {list(settings.target_modules)} exist in this model")
    cfg = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, cfg)


def merge_lora(model):
    """Fold the adapters into the base weights and return the plain transformers model."""
    return model.merge_and_unload()


def load_adapter_weights(model, weights: dict) -> tuple[list[str], list[str]]:
    """Load adapter tensors saved by `model.save_pretrained` (peft's names) into a peft model; (missing, unexpected).

    Only adapter weights are saved and loaded: the frozen base comes from the base checkpoint.
    """
    peft = _peft()
    result = peft.set_peft_model_state_dict(model, weights)
    return [k for k in result.missing_keys if "lora_" in k], list(result.unexpected_keys)
