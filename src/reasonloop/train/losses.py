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


def step_dpo_loss(
    policy_chosen_logps: torch.Tensor,  # (B,) log pi_theta(y_w^{>=c} | x, y^{<c})
    policy_rejected_logps: torch.Tensor,  # (B,) log pi_theta(y_l^{>=c} | x, y^{<c})
    ref_chosen_logps: torch.Tensor,  # (B,) log pi_ref(y_w^{>=c} | x, y^{<c})
    ref_rejected_logps: torch.Tensor,  # (B,) log pi_ref(y_l^{>=c} | x, y^{<c})
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-step DPO (Setlur et al. 2024, "RL on incorrect synthetic data ...", arXiv 2406.14532, sec. 5; pairs as in
    Hwang et al. 2024, Self-Explore): DPO on two continuations of one shared prefix y^{<c}, the solution before its
    critical step c (the first pit of a wrong solution, the decisive step of a right one):

        L = - mean_b log sigmoid( beta * [ log pi(y_w^{>=c} | x, y^{<c}) - log pi_ref(y_w^{>=c} | x, y^{<c})
                                         - log pi(y_l^{>=c} | x, y^{<c}) + log pi_ref(y_l^{>=c} | x, y^{<c}) ] )

    where y_w^{>=c} reaches the right answer and y_l^{>=c} does not. The inputs sum the continuation tokens only;
    the prefix is context. Since log pi(y^{<c} y^{>=c} | x) = log pi(y^{<c} | x) + log pi(y^{>=c} | x, y^{<c}) and
    the prefix term is the same on both sides, this is plain DPO (`dpo_loss`) on the whole sequences
    x + y^{<c} + y^{>=c} (tested): what makes it per-step is the pairing, which puts the whole preference on what
    differs from step c on, the credit assignment plain DPO on two unrelated whole solutions lacks.
    Metrics as `dpo_loss`, under `step_dpo_loss`.
    """
    loss, metrics = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    metrics["step_dpo_loss"] = metrics.pop("dpo_loss")
    return loss, metrics


def advantage_weighted_loss(
    logits: torch.Tensor,  # (B, T, V)
    input_ids: torch.Tensor,  # (B, T)
    completion_mask: torch.Tensor,  # (B, T) 1 on the sampled solution's tokens
    advantages: torch.Tensor,  # (B, T) A of the step each token belongs to, aligned with completion_mask
    beta: float = 0.5,
    max_weight: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantage-weighted RL over steps, the objective per-step DPO is equivalent to (Setlur et al. 2024,
    arXiv 2406.14532, sec. 6; advantage-weighted regression, Peng et al. 2019):

        max_pi  E_{x, y ~ pi_syn} [ sum_i log pi(y_i | x, y_{<i}) * exp( A(x, y_{<i}; y_i) / beta ) ]

    with y_i the steps of solutions sampled from pi_syn and A(x, y_{<i}; y_i) = Q(x, y_{<=i}) - Q(x, y_{<i}) the
    step's Monte-Carlo advantage under pi_syn. Every token of step i carries its step's weight; as a loss,

        L = - sum_{b,t} m_{b,t} w_{b,t} log p(x_{b,t+1} | x_{b,<=t}) / sum_{b,t} m_{b,t},
        w = min(exp(A / beta), max_weight)

    (m the completion mask). A step that raises the value is imitated more than one that keeps it (w = 1), one that
    sinks it much less; the clip keeps a few lucky steps from dominating (AWR's weight clip).
    Departure: the paper states the objective; the clip and the per-token normalisation are ours.
    """
    mask = completion_mask[:, 1:].float()  # (B, T-1): target token t+1 is a completion token
    weights = torch.exp(advantages[:, 1:].float() / beta).clamp(max=max_weight) * mask  # (B, T-1)
    n_tokens = mask.sum().clamp(min=1.0)
    loss = -(token_logprobs(logits, input_ids) * weights).sum() / n_tokens
    return loss, {
        "awr_loss": loss.item(),
        "mean_weight": (weights.sum() / n_tokens).item(),
        "tokens": n_tokens.item(),
    }
