"""A scalar value head on a causal LM backbone: the shared body of ORMs, PRMs, PAVs and PPO critics.

`values = head(hidden_states[-1])` gives one scalar per position, shape (B, T);
`forward(..., positions=...)` gathers the scalars at chosen positions (the end of
each step, or the last token) so a verifier scores steps or whole solutions.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from reasonloop.models.hf import load_model, save_model

HEAD_FILE = "value_head.safetensors"


class ValueHeadModel(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer=None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T)
        positions: torch.Tensor | None = None,  # (B, K) indices into T
    ) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (B, T, C)
        values = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B, T)
        if positions is None:
            return values
        return values.gather(1, positions)  # (B, K)

    def save_pretrained(self, path: str | os.PathLike, **_: object) -> Path:
        """Backbone and tokenizer as a Hugging Face directory, plus the head in `value_head.safetensors`.

        Extra keyword arguments (`safe_serialization=...` from the training loop) are accepted and ignored:
        everything is saved as safetensors.
        """
        from safetensors.torch import save_file

        p = save_model(self.backbone, self.tokenizer, path)
        save_file({f"head.{k}": v.contiguous() for k, v in self.head.state_dict().items()}, str(p / HEAD_FILE))
        return p

    def load_saved_weights(self, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load tensors read from a saved directory (backbone keys, then `head.*`); (missing, unexpected) keys."""
        head = {k[len("head.") :]: v for k, v in weights.items() if k.startswith("head.")}
        missing, unexpected = self.backbone.load_state_dict(
            {k: v for k, v in weights.items() if not k.startswith("head.")}, strict=False
        )
        if head:
            self.head.load_state_dict(head)
        else:
            missing = list(missing) + ["head.weight"]
        return list(missing), list(unexpected)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ValueHeadModel:
        """Load a backbone; restore the head if the directory has one, else start a fresh head."""
        from safetensors.torch import load_file

        backbone, tokenizer = load_model(path)
        model = cls(backbone, tokenizer)
        head_path = Path(path).expanduser() / HEAD_FILE
        if head_path.exists():
            model.head.load_state_dict({k.removeprefix("head."): v for k, v in load_file(str(head_path)).items()})
        return model
