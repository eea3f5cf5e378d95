"""Losses for online RL as pure functions: clipped policy gradient, clipped value loss, KL to a reference, entropy.

Shapes: per-token tensors are (B, T) over completion tokens, `mask` 1 on real
tokens. `logprobs` are log pi_theta(o_t | q, o_<t) of the sampled tokens under
the model being trained (with gradient), `old_logprobs` the same under the
policy that sampled them (no gradient), `ref_logprobs` under the frozen
reference (the starting policy).

How per-token losses become one number is a choice with consequences (length
bias), so it is an argument, `aggregate(per_token, mask)`:

- `token_mean`: sum over every real token of the batch / their number (DAPO,
  Yu et al. 2025; TRL's "dapo" and "bnpo" on one micro-batch);
- `sequence_mean`: mean over sequences of each sequence's token mean (the
  original GRPO; TRL's "grpo"); long wrong answers are punished less per token;
- `constant_normaliser(L)`: sum / (B * L) for a fixed L, the generation budget
  (Dr. GRPO, Liu et al. 2025; TRL's "dr_grpo"): no length bias at all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Aggregate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_{b,t} x_{b,t} m_{b,t} / sum_{b,t} m_{b,t}.

    >>> token_mean(torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])).item()
    3.0
    """
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_b [ sum_t x_{b,t} m_{b,t} / sum_t m_{b,t} ].

    >>> sequence_mean(torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])).item()
    3.5
    """
    return ((per_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)).mean()


def constant_normaliser(length: int) -> Aggregate:
    """sum_{b,t} x_{b,t} m_{b,t} / (B * length): Dr. GRPO's normaliser, `length` the generation budget.

    >>> constant_normaliser(4)(torch.tensor([[1.0, 3.0], [5.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])).item()
    1.125
    """

    def aggregate(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (per_token * mask).sum() / (per_token.shape[0] * length)

    return aggregate


def clipped_policy_loss(
    logprobs: torch.Tensor,  # (B, T) log pi_theta, with gradient
    old_logprobs: torch.Tensor,  # (B, T) log pi_old of the same tokens
    advantages: torch.Tensor,  # (B, T), or (B,) for one advantage per sequence
    mask: torch.Tensor,  # (B, T)
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregate: Aggregate = token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) with asymmetric bounds (DAPO's clip-higher):

        ratio_t = exp(log pi_theta(o_t) - log pi_old(o_t))
        L_t     = -min(ratio_t * A_t, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_t)
        L       = aggregate(L, mask)

    Metrics: `clip_frac_low` / `clip_frac_high`, the share of real tokens whose
    gradient the lower / upper bound cut off (ratio below 1 - eps_low with A < 0,
    above 1 + eps_high with A > 0); `approx_kl_old`, k3 estimate of KL(pi_old || pi_theta).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    loss = aggregate(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        low = ((ratio < 1 - eps_low) & (advantages < 0)).float()
        high = ((ratio > 1 + eps_high) & (advantages > 0)).float()
        approx_kl = ((ratio - 1) - log_ratio) * mask
        metrics = {
            "policy_loss": loss.item(),
            "clip_frac_low": ((low * mask).sum() / n).item(),
            "clip_frac_high": ((high * mask).sum() / n).item(),
            "approx_kl_old": (approx_kl.sum() / n).item(),
            "ratio_mean": ((ratio * mask).sum() / n).item(),
        }
    return loss, metrics


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(pi_theta || pi_ref) on tokens sampled from pi_theta: log pi_theta - log pi_ref.

    Unbiased, but negative on single tokens (Schulman 2020, "Approximating KL divergence"). (B, T) -> (B, T).
    """
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref): exp(log pi_ref - log pi_theta) - (log pi_ref - log pi_theta) - 1.

    Unbiased and never negative (x - 1 - log x >= 0); what GRPO uses as its KL
    loss term (Shao et al. 2024, eq. 4). (B, T) -> (B, T).

    >>> kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).item(), kl_k3(torch.tensor([0.0]), torch.tensor([-1.0])).item() > 0
    (0.0, True)
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logprobs: torch.Tensor | None = None,
    aggregate: Aggregate = token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL to the reference as a loss term, added to the policy loss times the KL coefficient:

        L = aggregate(k3_t, mask)                                  (GRPO, Shao et al. 2024, eq. 4)
        L = aggregate(ratio_t * k3_t, mask),  ratio_t = pi_theta / pi_old   (with `old_logprobs`)

    The tokens were sampled by pi_old, so after the first update of a batch k3 no
    longer estimates KL(pi_theta || pi_ref); weighting it by the importance ratio
    makes the estimate, and its gradient, unbiased for the reverse KL (DeepSeek-V3.2,
    2025; TRL's `use_bias_correction_kl`, on by default in TRL 1.16). The ratio
    carries gradient, so this changes the gradient even on-policy, where its value is 1.

    Metrics: `kl_k1` and `kl_k3`, both token means over real tokens (unweighted).
    """
    k3 = kl_k3(logprobs, ref_logprobs)
    weighted = k3 if old_logprobs is None else torch.exp(logprobs - old_logprobs) * k3
    loss = aggregate(weighted, mask)
    with torch.no_grad():
        metrics = {
            "kl_k1": token_mean(kl_k1(logprobs, ref_logprobs), mask).item(),
            "kl_k3": token_mean(k3, mask).item(),
        }
    return loss, metrics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution, H = -sum_v p_v log p_v. (B, T, V) -> (B, T).

    >>> round(entropy_from_logits(torch.zeros(1, 1, 4)).item(), 4)  # uniform over 4: log 4
    1.3863
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def clipped_value_loss(
    values: torch.Tensor,  # (B, T) V_theta(t), with gradient
    old_values: torch.Tensor,  # (B, T) V_old(t) when the rollout was made
    returns: torch.Tensor,  # (B, T) regression targets (GAE returns)
    mask: torch.Tensor,  # (B, T)
    *,
    clip: float = 0.2,
    aggregate: Aggregate = token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss (as in OpenAI baselines / CleanRL):

        V_clip = V_old + clip(V_theta - V_old, -clip, clip)
        L      = 0.5 * aggregate(max((V_theta - R)^2, (V_clip - R)^2), mask)

    Metrics: `value_loss`, `value_clip_frac`, and `explained_variance` of the
    returns by the old values, 1 - Var(R - V_old) / Var(R) (1 is a perfect critic, 0 no better than a constant).
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * aggregate(torch.max(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        metrics = {
            "value_loss": loss.item(),
            "value_clip_frac": (((clipped_err > unclipped_err).float() * mask).sum() / n).item(),
            "explained_variance": explained_variance(old_values, returns, mask),
        }
    return loss, metrics


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target) over real tokens (nan when the target is constant).

    >>> explained_variance(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2))
    1.0
    """
    n = mask.sum().clamp(min=1.0)

    def var(x: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum() / n
        return ((x - mean) ** 2 * mask).sum() / n

    v = var(target)
    return float("nan") if v.item() == 0 else (1 - var(target - predicted) / v).item()


AGGREGATES: dict[str, Callable[[int], Aggregate]] = {
    "token_mean": lambda length: token_mean,
    "sequence_mean": lambda length: sequence_mean,
    "constant": constant_normaliser,
}
