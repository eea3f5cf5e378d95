"""PPO's actor and critic as one trainable module: a value head on the policy's own backbone, or on a copy.

    ac = ActorCritic(policy)                       # shared: one forward gives logits and values
    ac = ActorCritic(policy, critic_backbone)      # separate: the critic has its own backbone
    logits, values = ac(batch)                     # (B, T, V), (B, T) over the completion tokens

One module, so one optimiser and one checkpoint hold both (a kill can never
leave the critic one step ahead of the policy); `Trainer(lr_scales={"critic": k})`
gives the critic its own learning rate. The value at completion position t is
read at position P - 1 + t, the last token before token t is written: V(s_t),
the value of the state the policy acts from, which is what GAE needs.

Saved as the policy's own directory (loadable by any Hugging Face tool, or a
peft adapter directory) plus `critic.safetensors` holding the head and, when
separate, the critic's backbone under the `critic.` prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from reasonloop.train.rollout import RolloutBatch, completion_hidden

CRITIC_FILE = "critic.safetensors"


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, critic_backbone: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.critic = nn.ModuleDict({"head": nn.Linear(policy.config.hidden_size, 1)})
        if critic_backbone is not None:
            self.critic["backbone"] = critic_backbone
        head = self.critic["head"]
        nn.init.normal_(head.weight, std=1.0 / (head.in_features + 1) ** 0.5)
        nn.init.zeros_(head.bias)

    @property
    def shared(self) -> bool:
        """Whether the value head reads the policy's own hidden states."""
        return "backbone" not in self.critic

    def forward(self, batch: RolloutBatch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits predicting each completion token / temperature, (B, T, V); values V(s_t), (B, T))."""
        hidden = completion_hidden(self.policy, batch)  # (B, T, C)
        logits = self.policy.get_output_embeddings()(hidden).float() / temperature  # (B, T, V)
        if not self.shared:
            hidden = completion_hidden(self.critic["backbone"], batch)
        head = self.critic["head"]
        values = head(hidden.to(head.weight.dtype)).squeeze(-1)  # (B, T)
        return logits, values

    def save_pretrained(self, path: str | os.PathLike, **kwargs: object) -> None:
        """The policy as its own directory, the critic beside it in `critic.safetensors`."""
        from safetensors.torch import save_file

        self.policy.save_pretrained(path, **kwargs)
        tensors = {f"critic.{k}": v.detach().contiguous() for k, v in self.critic.state_dict().items()}
        save_file(tensors, str(Path(path) / CRITIC_FILE))

    def load_saved_weights(self, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load what `save_pretrained` wrote (all its safetensors files merged); (missing, unexpected) keys."""
        from reasonloop.train.loop import load_weights

        critic = {k[len("critic.") :]: v for k, v in weights.items() if k.startswith("critic.")}
        missing, unexpected = load_weights(
            self.policy, {k: v for k, v in weights.items() if not k.startswith("critic.")}
        )
        c_missing, c_unexpected = self.critic.load_state_dict(critic, strict=False)
        return list(missing) + [f"critic.{k}" for k in c_missing], list(unexpected) + list(c_unexpected)
