"""Advantage estimators for online RL, as pure functions over rewards, values and masks.

Shapes: N completions in groups of G consecutive rows (the G samples of one
prompt), so `rewards` is (N,) with N = P * G; token-level tensors are (B, T)
over completion tokens only, with `mask[b, t] == 1` for real tokens (right
padding is 0). A reward may sit on any token of a completion: the outcome on its
last token, step rewards on the last token of each step (dense process rewards).
Sequence-level estimators (GRPO, RLOO) take the completion's total reward,
`sequence_rewards(token_rewards, mask)`, and give every token of it the same
advantage; token-level ones (REINFORCE++, GAE) use the rewards where they sit.

- GRPO (Shao et al. 2024, DeepSeekMath, sec. 4.1.2): group-normalised outcome.
- Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): the same
  without dividing by the group's standard deviation (that division favours
  questions that are too easy or too hard).
- RLOO (Ahmadian et al. 2024, after Kool et al. 2019): leave-one-out baseline.
- REINFORCE++ (Hu 2025): return-to-go normalised over the whole batch.
- GAE (Schulman et al. 2016) over per-token rewards and critic values, with TD
  errors delta_t = r_t + gamma * V(t+1) - V(t), for PPO's actor-critic.
- Dense process rewards (a PRM's values or a PAV's prover advantages at the
  last token of each step) for the group estimators: `process_advantages`.
"""

from __future__ import annotations

import torch

STD_EPS = 1e-4  # as TRL's GRPOTrainer: a group with equal rewards gets advantage 0, not 0/0


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"need rewards of shape (N,) with N a multiple of the group size, got {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)  # (P, G)


def grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """GRPO's outcome advantage: A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4).

    The standard deviation is the unbiased (n - 1) one, as in TRL. rewards (N,) -> (N,).

    >>> [round(a, 4) for a in grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).tolist()]  # mean 1/4, std 1/2
    [1.4997, -0.4999, -0.4999, -0.4999]
    """
    g = _groups(rewards, group_size)
    if group_size < 2:
        raise ValueError("GRPO needs at least 2 samples per prompt: with one, every advantage is 0")
    adv = (g - g.mean(dim=1, keepdim=True)) / (g.std(dim=1, keepdim=True) + STD_EPS)
    return adv.reshape(-1)


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO's outcome advantage: A_i = r_i - mean(r_group) (no division by the group's std). (N,) -> (N,).

    >>> dr_grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).tolist()
    [0.75, -0.25, -0.25, -0.25]
    """
    g = _groups(rewards, group_size)
    if group_size < 2:
        raise ValueError("Dr. GRPO needs at least 2 samples per prompt: with one, every advantage is 0")
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: A_i = r_i - (1 / (G - 1)) * sum_{j != i} r_j  (= G / (G - 1) * (r_i - mean)). (N,) -> (N,).

    >>> [round(a, 4) for a in rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4).tolist()]  # baselines 0, 1/3
    [1.0, -0.3333, -0.3333, -0.3333]
    """
    g = _groups(rewards, group_size)
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt (the baseline leaves one out)")
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)  # (P, G)
    return (g - baseline).reshape(-1)


def sequence_rewards(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A completion's total reward, sum_t r_t over its real tokens. (B, T), (B, T) -> (B,)."""
    return (token_rewards * mask).sum(dim=-1)


def broadcast_to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One advantage per completion given to each of its tokens (0 on padding). (B,), (B, T) -> (B, T)."""
    return advantages[:, None] * mask


def returns_to_go(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s over real tokens. (B, T) -> (B, T).

    >>> returns_to_go(torch.tensor([[0.0, 1.0, 0.0, 2.0]]), torch.ones(1, 4), gamma=0.5).tolist()  # G_2 = 0 + 2/2
    [[0.75, 1.5, 1.0, 2.0]]
    """
    r = token_rewards * mask
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running * mask[:, t]
        out[:, t] = running
    return out * mask


def reinforce_pp_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++: A_t = (G_t - mean(G)) / (std(G) + 1e-4), mean and std over every real token of the batch.

    G_t is the return-to-go (`returns_to_go`); with a KL penalty folded into the
    rewards, as the paper does, it carries the penalty of the tokens after t. (B, T) -> (B, T).
    """
    ret = returns_to_go(token_rewards, mask, gamma)
    n = mask.sum().clamp(min=1.0)
    mean = (ret * mask).sum() / n
    std = (((ret - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1.0)).sqrt()
    return (ret - mean) / (std + STD_EPS) * mask


def gae(
    token_rewards: torch.Tensor,  # (B, T) r_t
    values: torch.Tensor,  # (B, T) V(t): the critic's value of the state before token t is written
    mask: torch.Tensor,  # (B, T) 1 for real tokens
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages, returns), both (B, T).

        delta_t = r_t + gamma * V(t+1) - V(t)         (V past the last real token is 0: the episode ended)
        A_t     = delta_t + gamma * lam * A_{t+1}     (A past the last real token is 0)
        R_t     = A_t + V(t)                          (the critic's regression target)

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), gamma=1.0, lam=1.0)
    >>> adv.tolist(), ret.tolist()  # delta = [0 + 0.5 - 0.5, 1 + 0 - 0.5] = [0, 0.5]
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    r, v = token_rewards * mask, values * mask
    adv = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])
    next_adv = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        adv[:, t] = next_adv
        next_value = v[:, t]  # padding has value 0, so V(t+1) of a last real token is 0
    return adv, (adv + v) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8) over real tokens (PPO's advantage normalisation); padding stays 0. (B, T) -> (B, T)."""
    n = mask.sum().clamp(min=1.0)
    mean = (x * mask).sum() / n
    std = (((x - mean) ** 2 * mask).sum() / n).sqrt()
    return (x - mean) / (std + 1e-8) * mask


def process_advantages(
    step_rewards: torch.Tensor,  # (B, T) a step's reward on its last token, 0 elsewhere
    step_mask: torch.Tensor,  # (B, T) 1 where a step ends (where a step reward sits)
    mask: torch.Tensor,  # (B, T) 1 on real tokens
    group_size: int,
    scale_by_std: bool = True,
) -> torch.Tensor:
    """Per-token advantages from dense step rewards, for GRPO / Dr. GRPO / RLOO (added to the outcome's).

    Process supervision with GRPO (Shao et al. 2024, sec. 4.1.3): every step
    reward of a group (all steps of its G completions) is normalised by the
    group's step rewards, and a token's advantage is the sum of the normalised
    rewards of the steps that end at or after it:

        r~_j = (r_j - mean_group(r)) / (std_group(r) + 1e-4)     (`scale_by_std`; else r_j - mean_group(r))
        A_t  = sum_{steps j ending at or after t} r~_j

    Why this choice: a step's reward credits only the tokens that led to it (the
    return-to-go, as GAE with gamma = lambda = 1 and no critic), and subtracting
    the group's mean step reward removes the pay for length: a solution does not
    gain by writing more steps of average reward, which a plain sum of PRM values
    (all positive) would reward. The recipe adds alpha times this to the
    group-normalised outcome advantage of every token. (B, T) -> (B, T).

    >>> r = torch.tensor([[0.0, 1.0, 0.0, 3.0], [0.0, 0.0, 2.0, 0.0]])   # two completions, one group
    >>> m = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])   # steps end at t = 1, 3 and t = 2
    >>> process_advantages(r, m, torch.ones(2, 4), 2, scale_by_std=False).tolist()   # mean step reward 2
    [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    """
    B, T = step_rewards.shape
    if B % group_size:
        raise ValueError(f"{B} completions do not split into groups of {group_size}")
    r = step_rewards.view(-1, group_size * T)  # (P, G*T)
    sm = step_mask.view(-1, group_size * T)
    n = sm.sum(dim=1, keepdim=True)
    mean = (r * sm).sum(dim=1, keepdim=True) / n.clamp(min=1.0)
    normalised = (r - mean) * sm
    if scale_by_std:
        std = ((normalised**2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1.0)).sqrt()
        normalised = normalised / (std + STD_EPS)
    return returns_to_go(normalised.view(B, T), mask)
