"""Advantage estimators and RL losses against values worked out by hand, exact KL, and TRL's GRPOTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from reasonloop.train import advantages as adv
from reasonloop.train.rl_losses import (
    clipped_policy_loss,
    clipped_value_loss,
    constant_normaliser,
    explained_variance,
    kl_k1,
    kl_k3,
    kl_loss,
    sequence_mean,
    token_mean,
)

from .conftest import tiny_model


def test_grpo_dr_grpo_and_rloo_on_a_hand_made_group():
    # two prompts, G = 3: rewards (1, 0, 0) and (1, 1, 1)
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    mean, std = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased std of (1, 0, 0)
    want_grpo = [(1 - mean) / (std + 1e-4), -mean / (std + 1e-4), -mean / (std + 1e-4), 0.0, 0.0, 0.0]
    assert adv.grpo_advantages(r, 3).tolist() == pytest.approx(want_grpo, abs=1e-6)
    assert adv.dr_grpo_advantages(r, 3).tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0, 0, 0], abs=1e-6)
    # leave-one-out baselines: (0+0)/2, (1+0)/2, (1+0)/2; in the all-correct group every baseline is 1
    assert adv.rloo_advantages(r, 3).tolist() == pytest.approx([1.0, -0.5, -0.5, 0, 0, 0], abs=1e-6)


@pytest.mark.parametrize("fn", [adv.grpo_advantages, adv.dr_grpo_advantages, adv.rloo_advantages])
def test_group_estimators_refuse_groups_of_one(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="multiple of the group size"):
        fn(torch.tensor([1.0, 0.0, 1.0]), 2)


def test_gae_on_a_five_token_episode_by_hand():
    # rewards only at the end (the outcome) and a step reward at t = 1; gamma 0.9, lambda 0.8
    r = torch.tensor([[0.0, 0.5, 0.0, 0.0, 1.0]])
    v = torch.tensor([[0.2, 0.4, 0.1, 0.3, 0.6]])
    gamma, lam = 0.9, 0.8
    deltas = [
        0.0 + 0.9 * 0.4 - 0.2,  # 0.16
        0.5 + 0.9 * 0.1 - 0.4,  # 0.19
        0.0 + 0.9 * 0.3 - 0.1,  # 0.17
        0.0 + 0.9 * 0.6 - 0.3,  # 0.24
        1.0 + 0.0 - 0.6,  # 0.40: the episode ends, V(T) = 0
    ]
    want = [0.0] * 5
    running = 0.0
    for t in range(4, -1, -1):
        running = deltas[t] + gamma * lam * running
        want[t] = running
    assert want[4] == pytest.approx(0.4) and want[3] == pytest.approx(0.24 + 0.72 * 0.4)
    a, ret = adv.gae(r, v, torch.ones(1, 5), gamma, lam)
    assert a[0].tolist() == pytest.approx(want, abs=1e-6)
    assert ret[0].tolist() == pytest.approx([w + x for w, x in zip(want, v[0].tolist())], abs=1e-6)


def test_gae_ignores_padding_and_ends_the_episode_at_the_last_real_token():
    r = torch.tensor([[0.0, 1.0, 7.0], [0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.5, 9.0], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    a, ret = adv.gae(r, v, mask, gamma=1.0, lam=1.0)
    # row 0 ends at t = 1: A_1 = 1 - 0.5, A_0 = 0 + 0.5 - 0.5 + A_1; padding gets 0
    assert a[0].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    # with gamma = lambda = 1 the advantage is the return minus the value: 1 - 0.5 at every token
    assert a[1].tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_reinforce_pp_normalises_returns_over_the_batch():
    r = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # returns-to-go: row 0 (1, 1), row 1 (0, padding); over 3 real tokens mean 2/3, unbiased std sqrt(1/3)
    mean, std = 2 / 3, math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2)
    got = adv.reinforce_pp_advantages(r, mask)
    want = [[(1 - mean) / (std + 1e-4)] * 2, [(0 - mean) / (std + 1e-4), 0.0]]
    assert got.tolist() == [pytest.approx(w, abs=1e-6) for w in want]


def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert token_mean(x, m).item() == pytest.approx(10 / 4)
    assert sequence_mean(x, m).item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert constant_normaliser(5)(x, m).item() == pytest.approx(10 / (2 * 5))


def test_clipped_policy_loss_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25, 0.75, 0.25]]))  # ratios 1.5, 0.5, 1.5, 0.5
    a = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, m = clipped_policy_loss(new, old, a, mask, eps_low=0.2, eps_high=0.28)
    # per token -min(r A, clip(r) A): A>0, r=1.5 -> -1.28; A>0, r=0.5 -> -0.5; A<0, r=1.5 -> 1.5; A<0, r=0.5 -> 0.8
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.5 + 0.8) / 4)
    assert m["clip_frac_high"] == pytest.approx(0.25) and m["clip_frac_low"] == pytest.approx(0.25)
    # approx KL(old || new) by k3: mean of (r - 1) - log r
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.5, 0.5)]
    assert m["approx_kl_old"] == pytest.approx(sum(k3) / 4, abs=1e-6)


def test_clipped_policy_loss_gradient_vanishes_where_clipped():
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.5, 0.5]], requires_grad=True)  # ratio e^0.5 = 1.65 > 1.2
    loss, _ = clipped_policy_loss(new, old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    loss.backward()
    # A > 0 is clipped (no gradient); A < 0 keeps -r A: d/dlogp = r * 1 / 2 tokens
    assert new.grad[0].tolist() == pytest.approx([0.0, math.exp(0.5) / 2])


def test_k1_and_k3_against_the_exact_kl_of_a_small_distribution():
    p = torch.tensor([0.5, 0.3, 0.2])  # the policy, which samples
    q = torch.tensor([0.2, 0.5, 0.3])  # the reference
    exact = (p * (p / q).log()).sum().item()
    k1 = kl_k1(p.log(), q.log())
    k3 = kl_k3(p.log(), q.log())
    # unbiased: their expectations under p are the exact KL
    assert (p * k1).sum().item() == pytest.approx(exact, abs=1e-6)
    assert (p * k3).sum().item() == pytest.approx(exact, abs=1e-6)
    assert (k3 >= 0).all() and (k1 < 0).any()  # k3 is never negative; k1 is on single tokens
    # and by sampling: the Monte-Carlo means agree with the exact value
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert k3[x].mean().item() == pytest.approx(exact, abs=3e-3)
    loss, m = kl_loss(p.log()[None], q.log()[None], torch.ones(1, 3))
    assert m["kl_k3"] == pytest.approx(k3.mean().item()) and loss.item() == pytest.approx(k3.mean().item())


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.5]])
    ret = torch.tensor([[2.0, 0.0]])
    loss, m = clipped_value_loss(values, old, ret, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.7-2)^2 = 1.69 -> 1.69; token 1: 0 vs (0.3-0)^2 = 0.09 -> 0.09
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    assert m["value_clip_frac"] == 1.0
    assert explained_variance(old, ret, torch.ones(1, 2)) == pytest.approx(1 - 1.0 / 1.0)  # Var(R - V) = Var(R) = 1


@pytest.mark.parametrize(
    "loss_type, aggregate, bias_correction",
    [
        ("grpo", sequence_mean, False),
        ("dapo", token_mean, True),
        ("dr_grpo", constant_normaliser(8), True),
        ("dapo", token_mean, False),
    ],
)
def test_grpo_loss_and_gradient_equal_trl(loss_type, aggregate, bias_correction, tmp_path, char_tokenizer):
    """Our clipped loss + beta * KL term equals TRL 1.16 GRPOTrainer's `compute_loss`, value and gradient, with the
    KL weighted by the importance ratio (TRL's default `use_bias_correction_kl`) and without."""
    pytest.importorskip("trl")
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from reasonloop.models import load_model, save_model
    from reasonloop.train.rollout import RolloutBatch, completion_logprobs

    save_model(tiny_model("llama", char_tokenizer, seed=3), char_tokenizer, tmp_path / "m")
    trl_model, _ = load_model(tmp_path / "m")
    ours_model, _ = load_model(tmp_path / "m")
    beta, eps_low, eps_high = 0.1, 0.2, 0.28
    g = torch.Generator().manual_seed(0)
    B, P, T = 4, 5, 8
    # prompts of equal length (no prompt padding), two completions of each: our forward encodes each prompt once
    prompt = torch.randint(4, 60, (B // 2, P), generator=g).repeat_interleave(2, dim=0)
    completion = torch.randint(4, 60, (B, T), generator=g)
    cmask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6, [1] * 7 + [0]])
    advantages = torch.tensor([1.2, -0.7, 0.4, -1.1])
    with torch.no_grad():  # old logprobs a little off the current policy, so some ratios get clipped
        base = RolloutBatch(
            torch.cat([prompt, completion], 1), torch.cat([torch.ones(B, P, dtype=torch.long), cmask], 1),
            torch.arange(P + T).expand(B, -1), cmask.float(), torch.zeros(B, T),
            prompts=prompt[::2], prompt_mask=torch.ones(B // 2, P, dtype=torch.long), group=torch.arange(B) // 2,
        )  # fmt: skip
        current = completion_logprobs(ours_model, base)
        old = (current + 0.4 * torch.randn(B, T, generator=g)) * cmask
        ref = (current + 0.3 * torch.randn(B, T, generator=g)) * cmask
    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=4, max_completion_length=T,
        beta=beta, epsilon=eps_low, epsilon_high=eps_high, loss_type=loss_type, use_bias_correction_kl=bias_correction,
        report_to=[], use_cpu=True, bf16=False,
    )  # fmt: skip
    try:
        trainer = GRPOTrainer(
            model=trl_model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
            train_dataset=Dataset.from_list([{"prompt": "Q: 1+2\n"}] * 4), processing_class=char_tokenizer,
        )  # fmt: skip
        trainer.current_gradient_accumulation_steps = 1
        inputs = {
            "prompt_ids": prompt, "prompt_mask": torch.ones(B, P, dtype=torch.long), "completion_ids": completion,
            "completion_mask": cmask, "advantages": advantages, "old_per_token_logps": old,
            "ref_per_token_logps": ref, "num_items_in_batch": cmask.sum().float(),
        }  # fmt: skip
        trainer.model.train()
        trl_loss = trainer.compute_loss(trainer.model, inputs)
        trl_loss.backward()
    finally:
        AcceleratorState._reset_state(True)
    ours_model.train()
    logprobs = completion_logprobs(ours_model, base)
    pg, m = clipped_policy_loss(
        logprobs, old, advantages, base.mask, eps_low=eps_low, eps_high=eps_high, aggregate=aggregate
    )
    kl, _ = kl_loss(logprobs, ref, base.mask, old_logprobs=old if bias_correction else None, aggregate=aggregate)
    loss = pg + beta * kl
    loss.backward()
    assert m["clip_frac_low"] + m["clip_frac_high"] > 0  # the comparison exercises the clipping
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    for (name, p_trl), (_, p_ours) in zip(trl_model.named_parameters(), ours_model.named_parameters()):
        torch.testing.assert_close(p_ours.grad, p_trl.grad, atol=1e-6, rtol=1e-4, msg=name)
