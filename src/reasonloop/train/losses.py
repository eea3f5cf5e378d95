"""Losses as pure functions: `(tensors...) -> (loss, metrics)`.

Shapes: B is the batch, T the sequence length. Token-level inputs follow the
causal-LM convention: `logits[:, t]` predicts `input_ids[:, t + 1]`, and
`completion_mask[:, t] == 1` marks tokens of the completion (the part trained
on), 0 marks prompt and padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every t.

    logits: (B, T, V), input_ids: (B, T) -> (B, T-1)
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the completion tokens' log-probabilities, log pi(y | x). -> (B,)"""
    mask = completion_mask[:, 1:].to(logits.dtype)  # (B, T-1): target token t+1 is a completion token
    return (token_logprobs(logits, input_ids) * mask).sum(dim=-1)


def sft_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised fine-tuning: mean negative log-likelihood over completion tokens only.

    L = - (1 / N) * sum_{b,t: completion} log p(x_{b,t+1} | x_{b,<=t}),  N = number of completion tokens.
    logits (B, T, V), input_ids (B, T), completion_mask (B, T).
    """
    mask = completion_mask[:, 1:].float()  # (B, T-1)
    n_tokens = mask.sum().clamp(min=1.0)
    nll = -(token_logprobs(logits, input_ids) * mask).sum() / n_tokens
    return nll, {"sft_nll": nll.item(), "tokens": n_tokens.item()}


def dpo_loss(
    policy_chosen_logps: torch.Tensor,  # (B,) log pi_theta(y_w | x)
    policy_rejected_logps: torch.Tensor,  # (B,) log pi_theta(y_l | x)
    ref_chosen_logps: torch.Tensor,  # (B,) log pi_ref(y_w | x)
    ref_rejected_logps: torch.Tensor,  # (B,) log pi_ref(y_l | x)
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Direct Preference Optimisation (Rafailov et al. 2023, eq. 7).

    L = - mean_b log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

    Metrics: the implicit rewards beta * log(pi / pi_ref) of chosen and rejected,
    their margin, and how often the chosen one is preferred (reward accuracy).
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (B,)
    margin = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margin).mean()
    return loss, {
        "dpo_loss": loss.item(),
        "reward_chosen": chosen_rewards.mean().item(),
        "reward_rejected": rejected_rewards.mean().item(),
        "reward_margin": margin.mean().item(),
        "reward_accuracy": (margin > 0).float().mean().item(),
    }
