"""Quiet-STaR's losses as pure functions (Zelikman et al. 2024, arXiv 2403.09629, sec. 4.3-4.4).

Shapes: B text rows, R thoughts per position, T positions, K = n_talk true tokens predicted after each thought,
V the vocabulary. `mixed_logits[b, t, k]` predicts `x[b, t+1+k]` (the model's `ThoughtOutputs`); `attention_mask`
is 1 on real tokens of right-padded rows. A prediction counts when its target is a real token inside the row.

    loss = base_weight * nll_base + (1 - base_weight) * nll_talk + reinforce_weight * L_REINFORCE

is the reference implementation's weighting (its `original_loss_weight` 0.5 on the no-thought NLL, the rest on the
mean of the n_talk talk NLLs, REINFORCE added with `policy_loss_beta`, which it sets to 1e6 for Mistral-7B; the weight
is a config key here, as the scale of rewards depends on the model).
"""

from __future__ import annotations

import torch


def talk_logprobs(
    mixed_logits: torch.Tensor,  # (B, T, K, V)
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_{t+1+k} | x_{<=t}, thought_t, x_{t+1..t+k}) under the mixed prediction, and where it counts.

    Returns (logp (B, T, K), valid (B, T, K) bool); logp is 0 where not valid.
    """
    B, T, K, _ = mixed_logits.shape
    idx = (
        torch.arange(T, device=input_ids.device)[:, None] + 1 + torch.arange(K, device=input_ids.device)[None]
    )  # (T, K)
    inside = idx < T
    idx = idx.clamp(max=T - 1)
    targets = input_ids[:, idx]  # (B, T, K)
    valid = inside[None] & attention_mask.bool()[:, idx]  # (B, T, K)
    logp = torch.log_softmax(mixed_logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return logp * valid, valid


def talk_nll(
    mixed_logits: torch.Tensor,  # (B, T, K, V)
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
) -> tuple[torch.Tensor, dict[str, float]]:
    """The NLL of the next K true tokens under the mixed prediction (the paper's extended teacher forcing):

        nll_talk = (1/K) * sum_k  - (1/N_k) * sum_{b,t valid} log p_mixed(x_{b,t+1+k} | x_{b,<=t}, c_{b,t}, x_{b,t+1..t+k})

    with N_k the number of valid predictions at offset k (each offset weighs the same, as in the reference).
    Metrics: `talk_nll` and `talk_nll_0` (the next token only).
    """
    logp, valid = talk_logprobs(mixed_logits, input_ids, attention_mask)
    per_k = -logp.sum(dim=(0, 1)) / valid.sum(dim=(0, 1)).clamp(min=1)  # (K,)
    loss = per_k.mean()
    return loss, {"talk_nll": loss.item(), "talk_nll_0": per_k[0].item()}


def base_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """The model's own next-token NLL without thoughts:  - (1/N) sum_{b,t valid} log p(x_{b,t+1} | x_{b,<=t}).

    logits (B, T, V), input_ids (B, T), attention_mask (B, T).
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    valid = attention_mask[:, 1:].float()  # (B, T-1)
    loss = -(logp * valid).sum() / valid.sum().clamp(min=1)
    return loss, {"base_nll": loss.item()}


def thought_reinforce_loss(
    thought_logprobs: torch.Tensor,  # (B, R, T) log pi(thought) summed over its tokens
    talk_logprob_sums: torch.Tensor,  # (B, R, T) sum_k log p_mixed(x_{t+1+k}) after that thought
    valid: torch.Tensor,  # (B, T) bool: positions with at least one valid talk prediction
    clip_negative: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE on thoughts with the mean over the R thoughts of a position as baseline (paper eq. 4-5):

        r_{b,i,t} = L_{b,i,t} - (1/R) sum_j L_{b,j,t},     L = sum_k log p_mixed(x_{t+1+k} | ..., thought_i)
        L_REINFORCE = - (1 / (R N)) sum_{b,i,t valid} stopgrad(r+) * log pi(thought_{b,i,t})

    with N the valid positions, and r+ = max(r, 0) when `clip_negative` (the reference's `remove_negative_rewards`:
    only thoughts better than the average are reinforced), else r. With R = 1 every reward is 0: the baseline needs
    at least two thoughts per position. Metrics: mean reward before clipping, share of
    positive rewards, mean thought log-probability.
    """
    reward = talk_logprob_sums - talk_logprob_sums.mean(dim=1, keepdim=True)  # (B, R, T)
    used = reward.clamp(min=0) if clip_negative else reward
    mask = valid[:, None].expand_as(reward).float()  # (B, R, T)
    n = mask.sum().clamp(min=1)
    loss = -(used.detach() * thought_logprobs * mask).sum() / n
    return loss, {
        "reinforce_loss": loss.item(),
        "reward_mean_abs": ((reward.abs() * mask).sum() / n).item(),
        "reward_positive": (((reward > 0).float() * mask).sum() / n).item(),
        "thought_logprob": ((thought_logprobs * mask).sum() / n).item(),
    }


def quiet_star_loss(
    base_logits: torch.Tensor,  # (B*R, T, V) rows grouped by text row: row b*R + i is thought i of text row b
    mixed_logits: torch.Tensor,  # (B*R, T, K, V)
    thought_logprobs: torch.Tensor,  # (B*R, T)
    input_ids: torch.Tensor,  # (B*R, T)
    attention_mask: torch.Tensor,  # (B*R, T)
    n_thoughts: int,
    base_weight: float = 0.5,
    reinforce_weight: float = 1.0,
    clip_negative: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The whole Quiet-STaR objective (the module docstring's weighting):

        loss = base_weight * base_nll + (1 - base_weight) * talk_nll + reinforce_weight * L_REINFORCE

    over B text rows repeated `n_thoughts` (R) times, each copy with its own sampled thoughts.
    """
    nll0, m0 = base_nll(base_logits, input_ids, attention_mask)
    nll_talk, m1 = talk_nll(mixed_logits, input_ids, attention_mask)
    logp, valid = talk_logprobs(mixed_logits, input_ids, attention_mask)
    BR, T = input_ids.shape
    B = BR // n_thoughts
    sums = logp.sum(-1).view(B, n_thoughts, T)  # (B, R, T)
    pos_valid = valid.any(-1).view(B, n_thoughts, T)[:, 0]  # (B, T)
    rl, m2 = thought_reinforce_loss(thought_logprobs.view(B, n_thoughts, T), sums, pos_valid, clip_negative)
    loss = base_weight * nll0 + (1 - base_weight) * nll_talk + reinforce_weight * rl
    return loss, {"loss": loss.item(), **m0, **m1, **m2}
