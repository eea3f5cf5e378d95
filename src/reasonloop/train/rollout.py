"""Batches of sampled completions for online RL, built from the token ids the engine sampled (never re-tokenised).

Row b is `prompt_ids + token_ids` of one `Sample`: prompts are left-padded to a
common length P and completions right-padded to T, so every per-token tensor
is (B, T) and position t of row b is the t-th sampled token of that completion,
as in TRL. Position ids count real tokens only, so a left-padded row sees the
positions the engine saw. `completion_logprobs` runs the model and returns the
log-probabilities of the sampled tokens; at temperature 1 they equal the
sampler's own `Sample.logprobs` (tested to 1e-4), which is why the old policy's
logprobs can be taken from the sampler instead of a second forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from reasonloop.core import Sample


@dataclass
class RolloutBatch:
    """A rollout batch; the optional tensors are filled in by the recipe as it computes them."""

    input_ids: torch.Tensor  # (B, P + T) left-padded prompts, then right-padded completions
    attention_mask: torch.Tensor  # (B, P + T) 1 on real tokens
    position_ids: torch.Tensor  # (B, P + T) 0, 1, ... over each row's real tokens
    mask: torch.Tensor  # (B, T) float, 1 on completion tokens
    old_logprobs: torch.Tensor  # (B, T) log pi_old of the sampled tokens (the sampler's)
    advantages: torch.Tensor | None = None  # (B, T)
    ref_logprobs: torch.Tensor | None = None  # (B, T) under the frozen reference
    old_values: torch.Tensor | None = None  # (B, T) critic values at sampling time (PPO)
    returns: torch.Tensor | None = None  # (B, T) critic targets (PPO)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_length(self) -> int:
        """T, the padded completion length."""
        return self.mask.shape[1]

    def select(self, rows: torch.Tensor | list[int]) -> RolloutBatch:
        """The sub-batch of `rows` (a mini-batch), every tensor sliced alike."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return replace(self, **{f.name: t[rows] for f in fields(self) if (t := getattr(self, f.name)) is not None})


def rollout_batch(samples: list[Sample], pad_id: int) -> RolloutBatch:
    """Stack samples (each with `prompt_ids`, `token_ids` and `logprobs`) into a `RolloutBatch`."""
    if not samples:
        raise ValueError("no samples to batch")
    for s in samples:
        if not s.prompt_ids or not s.token_ids or len(s.logprobs) != len(s.token_ids):
            raise ValueError(
                f"sample of problem {s.problem_id!r} lacks prompt_ids, token_ids or one logprob per token: "
                "RL trains on what the engine sampled"
            )
    P = max(len(s.prompt_ids) for s in samples)
    T = max(len(s.token_ids) for s in samples)
    B = len(samples)
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attention = torch.zeros(B, P + T, dtype=torch.long)
    mask = torch.zeros(B, T)
    old = torch.zeros(B, T)
    for b, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.token_ids)
        input_ids[b, P - p : P] = torch.tensor(s.prompt_ids)
        input_ids[b, P : P + c] = torch.tensor(s.token_ids)
        attention[b, P - p : P + c] = 1
        mask[b, :c] = 1
        old[b, :c] = torch.tensor(s.logprobs)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return RolloutBatch(input_ids, attention, position_ids, mask, old)


def completion_logits(model, batch: RolloutBatch, temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each completion token, divided by `temperature`. -> (B, T, V)

    Only the last T + 1 positions go through the LM head (`logits_to_keep`);
    position P - 1 + t predicts completion token t.
    """
    T = batch.completion_length
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=T + 1,
    )
    logits = out.logits[:, :-1].float()  # (B, T, V)
    return logits / temperature if temperature != 1.0 else logits


def token_logprobs_of(logits: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """log p of each sampled completion token from `completion_logits`. (B, T, V) -> (B, T), 0 on padding."""
    T = batch.completion_length
    targets = batch.input_ids[:, -T:]  # (B, T)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, :, None]).squeeze(-1)
    return logp * batch.mask


def completion_logprobs(model, batch: RolloutBatch, temperature: float = 1.0) -> torch.Tensor:
    """log pi(o_t | q, o_<t) of every sampled completion token under `model`. -> (B, T), 0 on padding."""
    return token_logprobs_of(completion_logits(model, batch, temperature), batch)
