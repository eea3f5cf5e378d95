"""Batches of sampled completions for online RL, built from the token ids the engine sampled (never re-tokenised).

Row b is `prompt_ids + token_ids` of one `Sample`: prompts are left-padded to a
common length P and completions right-padded to T, so every per-token tensor
is (B, T) and position t of row b is the t-th sampled token of that completion,
as in TRL. Position ids count real tokens only, so a left-padded row sees the
positions the engine saw. The batch also holds each distinct prompt once
(`prompts`, `group`), so Llama-family models encode a prompt once for its G
completions (`shared_prefix.py`); other models run the padded rows through
transformers. `completion_logprobs` returns the log-probabilities of the
sampled tokens; at temperature 1 they equal the sampler's own `Sample.logprobs`
(tested to 1e-4), which is why the old policy's logprobs can be taken from the
sampler instead of a second forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from reasonloop.core import Sample
from reasonloop.engine.fast import unwrap
from reasonloop.train import shared_prefix

PER_PROMPT = ("prompts", "prompt_mask", "group")  # fields indexed by prompt, not by row


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
    prompts: torch.Tensor | None = None  # (U, P) each distinct prompt once, left-padded
    prompt_mask: torch.Tensor | None = None  # (U, P)
    group: torch.Tensor | None = None  # (B,) index of each row's prompt in `prompts`
    loss_scale: float = 1.0  # the policy loss's factor when rows without signal were left out (recipes.rl)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_length(self) -> int:
        """T, the padded completion length."""
        return self.mask.shape[1]

    def select(self, rows: torch.Tensor | list[int]) -> RolloutBatch:
        """The sub-batch of `rows` (a mini-batch): per-row tensors sliced alike, prompts kept that rows use, and
        completion columns past the rows' longest completion dropped (padding nobody reads)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        T = self.completion_length
        cut = T - int(self.mask[rows].sum(dim=1).max())  # trailing columns that are padding in every row
        sliced = {
            f.name: t[rows, : t.shape[1] - cut]
            for f in fields(self)
            if f.name not in PER_PROMPT and isinstance(t := getattr(self, f.name), torch.Tensor)
        }
        used, group = torch.unique(self.group[rows], return_inverse=True)
        return replace(self, **sliced, prompts=self.prompts[used], prompt_mask=self.prompt_mask[used], group=group)


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
    index: dict[tuple[int, ...], int] = {}
    group = torch.tensor([index.setdefault(tuple(s.prompt_ids), len(index)) for s in samples])
    first = [next(b for b in range(B) if group[b] == u) for u in range(len(index))]
    prompts, prompt_mask = input_ids[first, :P], attention[first, :P]
    return RolloutBatch(
        input_ids, attention, position_ids, mask, old, prompts=prompts, prompt_mask=prompt_mask, group=group
    )


def completion_hidden(model, batch: RolloutBatch) -> torch.Tensor:
    """Final hidden states at the positions predicting each completion token (what an LM or value head reads).
    -> (B, T, C)"""
    if batch.group is not None and shared_prefix.supports(model):
        T = batch.completion_length
        return shared_prefix.completion_hidden(
            model, batch.prompts, batch.prompt_mask, batch.input_ids[:, -T:], batch.group
        )
    T = batch.completion_length
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=1,
        output_hidden_states=True,
    )
    return out.hidden_states[-1][:, -T - 1 : -1]


def completion_logits(model, batch: RolloutBatch, temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each completion token, divided by `temperature`. -> (B, T, V)

    Llama-family models share each prompt's encoding across its completions;
    others run the padded rows through transformers with only the last T + 1
    positions through the LM head (position P - 1 + t predicts completion token t).
    """
    T = batch.completion_length
    if batch.group is not None and shared_prefix.supports(model):
        logits = unwrap(model).lm_head(completion_hidden(model, batch)).float()
    else:
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


def disable_dropout(model) -> None:
    """Turn every dropout of `model` off, as TRL does for RL: the ratio pi_theta / pi_old compares the policy with
    itself, which dropout noise would blur, and the model then behaves the same in training and eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    cfg = getattr(unwrap(model), "config", None)
    if cfg is not None and getattr(cfg, "attention_dropout", 0.0):
        cfg.attention_dropout = 0.0


def step_char_ends(text: str, delimiter: str) -> list[int]:
    """The end (exclusive) of each step of `text` in characters, for the steps `split_steps` gives (stripped,
    empty ones dropped).

    >>> step_char_ends("1+2=3\\n 3*4=12 \\n\\nA: 12", "\\n")
    [5, 13, 21]
    """
    ends, at = [], 0
    for part in text.split(delimiter):
        if part.strip():
            ends.append(at + len(part.rstrip()))
        at += len(part) + len(delimiter)
    return ends


def step_end_tokens(tokenizer, token_ids: list[int], char_ends: list[int]) -> list[int]:
    """For each character offset in the decoded completion, the index of the sampled token that completes it.

    Found by decoding prefixes of the sampled ids (binary search per step), so it
    holds for any tokenizer whose decoding of a prefix is a prefix of the text.
    """
    lengths: dict[int, int] = {}

    def decoded(m: int) -> int:
        if m not in lengths:
            lengths[m] = len(tokenizer.decode(token_ids[:m], skip_special_tokens=True))
        return lengths[m]

    out, lo = [], 1
    for end in char_ends:
        hi = len(token_ids)
        while lo < hi:  # the fewest tokens whose text reaches `end`
            mid = (lo + hi) // 2
            if decoded(mid) >= end:
                hi = mid
            else:
                lo = mid + 1
        out.append(lo - 1)
    return out
