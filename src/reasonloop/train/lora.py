"""Optional LoRA adapters through `peft`, for checkpoints too big to fine-tune fully.

    model = add_lora(model, LoraSettings(r=16))      # only adapter weights train
    train_loop(model, ...)
    merged = merge_lora(model)                       # a plain model again, saved with save_pretrained

`peft` is an optional dependency (`pip install reasonloop[lora]`), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


def current_weights(model) -> dict:
    """The weights `model` computes with now, under the plain transformers model's names: its state dict, or, for a
    LoRA model, each adapted base weight plus its adapters' delta (new tensors; the model is not touched: merging
    and unmerging in place would move the frozen base by rounding every time). What a sampler that holds its own
    copy of the weights (vLLM) is given after each update."""
    if not hasattr(model, "merge_adapter"):
        return model.state_dict()
    deltas = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
        return {
            k.removeprefix("base_model.model.").replace(".base_layer.", "."): (v + deltas[k] if k in deltas else v)
            for k, v in model.state_dict().items()
            if "lora_" not in k
        }


def load_adapter_weights(model, weights: dict) -> tuple[list[str], list[str]]:
    """Load adapter tensors saved by `model.save_pretrained` (peft's names) into a peft model; (missing, unexpected).

    Only adapter weights are saved and loaded: the frozen base comes from the base checkpoint.
    """
    peft = _peft()
    result = peft.set_peft_model_state_dict(model, weights)
    return [k for k in result.missing_keys if "lora_" in k], list(result.unexpected_keys)
