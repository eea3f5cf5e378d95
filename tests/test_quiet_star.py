"""Quiet-STaR's model parts and losses on tiny models: the diagonal mask by hand, parallel thoughts equal to thoughts
made position by position, the mixing head starting at (and forced to) the base model, losses against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from reasonloop.models.nano import build_model, build_tokenizer
from reasonloop.models.quiet_star import END_THOUGHT, START_THOUGHT, QuietStarModel, thought_attention_mask
from reasonloop.train.quiet_star import base_nll, quiet_star_loss, talk_logprobs, talk_nll, thought_reinforce_loss
from tests.conftest import tiny_model

TEXTS = ["12+7=19\n19*3=57", "4-1=3\n3*2=6\nA: 6"]


def make(kind: str, seed: int = 0):
    """(QuietStarModel, the base LM before thought tokens were added, tokenizer, right-padded ids, mask)."""
    tok = build_tokenizer()
    if kind == "nano":
        lm = build_model(tok, hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_size=64, seed=seed).eval()
    else:
        lm = tiny_model(kind, tok, seed=seed)
    import copy

    base = copy.deepcopy(lm)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    return QuietStarModel(lm, tok).eval(), base, tok, enc["input_ids"], enc["attention_mask"]


def test_mask_is_the_hand_checked_diagonal_for_three_positions_and_two_thought_tokens():
    # slots: text x0 x1 x2 | thought token 1 after x0, x1, x2 | thought token 2 after x0, x1, x2
    expected = [
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # x0
        [1, 1, 0, 0, 0, 0, 0, 0, 0],  # x1
        [1, 1, 1, 0, 0, 0, 0, 0, 0],  # x2
        [1, 0, 0, 1, 0, 0, 0, 0, 0],  # thought(x0)[1]: x0 and itself
        [1, 1, 0, 0, 1, 0, 0, 0, 0],  # thought(x1)[1]: x0 x1 and itself
        [1, 1, 1, 0, 0, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0, 1, 0, 0],  # thought(x0)[2]: x0, its own first token, itself
        [1, 1, 0, 0, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 1, 0, 0, 1],
    ]
    assert thought_attention_mask(3, 2).int().tolist() == expected


def test_thought_tokens_are_added_and_start_from_the_embedding_of_the_dashes():
    model, base, tok, _, _ = make("nano")
    dash = tok("---", add_special_tokens=False)["input_ids"][0]
    emb = model.lm.get_input_embeddings().weight
    assert tok.convert_tokens_to_ids(START_THOUGHT) == model.start_id != model.end_id
    assert emb.shape[0] == base.get_input_embeddings().weight.shape[0] + 2
    torch.testing.assert_close(emb[model.start_id], base.get_input_embeddings().weight[dash])
    torch.testing.assert_close(emb[model.end_id], base.get_input_embeddings().weight[dash])
    assert tok.convert_tokens_to_ids(END_THOUGHT) == model.end_id


@pytest.mark.parametrize("kind", ["nano", "llama", "qwen2"])
def test_parallel_greedy_thoughts_equal_thoughts_made_position_by_position(kind):
    model, _, _, ids, _ = make(kind)
    parallel = model.sample_thoughts(ids, 3, temperature=0)
    sequential = model.sample_thoughts_sequential(ids, 3, temperature=0)
    assert parallel.shape == (2, ids.shape[1], 3)
    assert torch.equal(parallel, sequential)
    assert not torch.isin(parallel, torch.tensor([model.start_id, model.end_id])).any()


@pytest.mark.parametrize("kind", ["nano", "qwen2"])
def test_one_forward_with_thoughts_equals_ordinary_forwards_of_each_thought(kind):
    """Sampled (not greedy) thoughts, so positions and mask are checked away from argmax ties: the logits of every
    thought token and of the talk predictions equal those of a plain causal forward over that one thought."""
    model, _, _, ids, _ = make(kind)
    thoughts = model.sample_thoughts(ids, 2, temperature=1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.forward_with_thoughts(ids, thoughts, n_talk=2)
        for b, t in [(0, 0), (0, 5), (1, 9), (1, ids.shape[1] - 3)]:
            seq = [*ids[b, : t + 1].tolist(), model.start_id, *thoughts[b, t].tolist(), model.end_id, ids[b, t + 1]]
            _, logits = model.hidden_and_logits(torch.tensor([seq]), torch.arange(len(seq))[None], None)
            n = t + 1  # the <start> token sits at index n
            torch.testing.assert_close(out.thought_logits[b, t], logits[0, n : n + 2], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.talk_logits[b, t], logits[0, n + 3 : n + 5], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.base_logits[b, t], logits[0, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["nano", "llama", "qwen2"])
def test_mixed_prediction_starts_at_the_base_model_and_equals_it_when_the_weight_is_forced_to_zero(kind):
    model, base, _, ids, mask = make(kind)
    V = base.config.vocab_size
    with torch.no_grad():
        want = torch.log_softmax(base(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)  # (B, T, V)
        thoughts = model.sample_thoughts(ids, 2, temperature=1.0, generator=torch.Generator().manual_seed(1))
        out = model.forward_with_thoughts(ids, thoughts, n_talk=1)
        assert (out.weights == 0).all()
        real = mask.bool()  # padding positions (after the text) are never scored
        got = torch.log_softmax(out.mixed_logits[:, :, 0], dim=-1)
        torch.testing.assert_close(got[..., :V][real], want[real], atol=1e-5, rtol=0)
        assert got[..., V:].exp().max() == 0  # the thought tokens are never predicted in the text
        last = model.mixing_head.net[-1].weight
        last.copy_(torch.rand_like(last) + 0.5)  # z > 0 wherever the ReLU features are not all 0: a head that mixes
        mixed = model.forward_with_thoughts(ids, thoughts, n_talk=1)
        assert (mixed.weights > 0).any()
        assert (torch.log_softmax(mixed.mixed_logits[:, :, 0], -1)[..., :V][real] - want[real]).abs().max() > 1e-3
        last.neg_()  # z < 0 wherever the features are not all 0: w forced to 0 by the clamp
        forced = model.forward_with_thoughts(ids, thoughts, n_talk=1)
        assert (forced.weights == 0).all()
        got = torch.log_softmax(forced.mixed_logits[:, :, 0], -1)[..., :V]
        torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_save_and_load_keep_thought_tokens_and_mixing_head(tmp_path):
    model, _, _, ids, _ = make("nano")
    with torch.no_grad():
        model.mixing_head.net[-1].weight.normal_()
    model.save_pretrained(tmp_path / "m")
    loaded = QuietStarModel.from_pretrained(tmp_path / "m")
    assert (loaded.start_id, loaded.end_id) == (model.start_id, model.end_id)
    thoughts = model.sample_thoughts(ids, 2, temperature=0)
    with torch.no_grad():
        a = model.forward_with_thoughts(ids, thoughts, 1).mixed_logits
        b = loaded.forward_with_thoughts(ids, thoughts, 1).mixed_logits
    torch.testing.assert_close(a, b)


# --- losses against hand-computed values -----------------------------------------------------------------------------

P0 = math.log(0.75)  # every prediction below gives token 0 probability 3/4 and token 1 1/4
P1 = math.log(0.25)


def _logits(*shape):
    return torch.tensor([math.log(3.0), 0.0]).expand(*shape, 2).clone()


def test_talk_logprobs_and_nll_by_hand():
    ids, mask = torch.tensor([[0, 1, 0]]), torch.ones(1, 3, dtype=torch.long)
    logp, valid = talk_logprobs(_logits(1, 3, 2), ids, mask)
    # t=0: x1=1, x2=0; t=1: x2=0, (x3 outside); t=2: nothing inside
    assert valid.tolist() == [[[True, True], [True, False], [False, False]]]
    torch.testing.assert_close(logp, torch.tensor([[[P1, P0], [P0, 0.0], [0.0, 0.0]]]))
    loss, m = talk_nll(_logits(1, 3, 2), ids, mask)
    want = (-(P1 + P0) / 2 + -P0) / 2  # offsets weigh the same: mean over k of each offset's mean
    assert loss.item() == pytest.approx(want) and m["talk_nll_0"] == pytest.approx(-(P1 + P0) / 2)
    # padding: a masked target never counts
    _, valid = talk_logprobs(_logits(1, 3, 2), ids, torch.tensor([[1, 1, 0]]))
    assert valid.tolist() == [[[True, False], [False, False], [False, False]]]


def test_base_nll_by_hand():
    loss, _ = base_nll(_logits(1, 3), torch.tensor([[0, 1, 0]]), torch.ones(1, 3, dtype=torch.long))
    assert loss.item() == pytest.approx(-(P1 + P0) / 2)


def test_reinforce_with_the_mean_of_the_thoughts_as_baseline_by_hand():
    sums = torch.tensor([[[-1.0, -2.0], [-3.0, -1.0]]], requires_grad=True)  # (B=1, R=2, T=2)
    logpi = torch.tensor([[[-0.5, -1.0], [-2.0, -0.25]]], requires_grad=True)
    valid = torch.ones(1, 2, dtype=torch.bool)
    # baselines per position: -2 and -1.5 -> rewards [[1, -0.5], [-1, 0.5]]
    loss, m = thought_reinforce_loss(logpi, sums, valid, clip_negative=True)
    assert loss.item() == pytest.approx(-(1 * -0.5 + 0.5 * -0.25) / 4)
    assert m["reward_positive"] == pytest.approx(0.5) and m["reward_mean_abs"] == pytest.approx(0.75)
    loss.backward()
    torch.testing.assert_close(logpi.grad, torch.tensor([[[-0.25, 0.0], [0.0, -0.125]]]))
    assert sums.grad is None  # the reward is not differentiated
    loss, _ = thought_reinforce_loss(logpi, sums, valid, clip_negative=False)
    assert loss.item() == pytest.approx(-(1 * -0.5 + -0.5 * -1.0 + -1 * -2.0 + 0.5 * -0.25) / 4)
    loss, _ = thought_reinforce_loss(logpi, sums, torch.tensor([[True, False]]), clip_negative=False)
    assert loss.item() == pytest.approx(-(1 * -0.5 + -1 * -2.0) / 2)  # an invalid position is left out


def test_whole_objective_is_the_documented_weighting():
    torch.manual_seed(0)
    R, T, K, V = 2, 4, 2, 5
    base, mixed = torch.randn(R, T, V), torch.randn(R, T, K, V)
    ids, mask = torch.randint(0, V, (1, T)).repeat(R, 1), torch.ones(R, T, dtype=torch.long)
    logpi = torch.randn(R, T)
    loss, m = quiet_star_loss(base, mixed, logpi, ids, mask, R, base_weight=0.3, reinforce_weight=2.0)
    logp, valid = talk_logprobs(mixed, ids, mask)
    rl, _ = thought_reinforce_loss(logpi.view(1, R, T), logp.sum(-1).view(1, R, T), valid.any(-1)[:1])
    want = 0.3 * base_nll(base, ids, mask)[0] + 0.7 * talk_nll(mixed, ids, mask)[0] + 2.0 * rl
    assert loss.item() == pytest.approx(want.item()) and m["loss"] == pytest.approx(want.item())


def test_mixing_weight_is_clamped_but_its_gradient_passes_straight_through():
    from reasonloop.models.quiet_star import MixingHead

    head = MixingHead(4)
    with torch.no_grad():
        head.net[-1].weight.fill_(1.0)
    h = torch.randn(6, 4)
    z = head.net(torch.cat([h, h], -1)).squeeze(-1)
    for sign in (1.0, -1.0, 100.0):  # inside, below and above [0, 1]
        with torch.no_grad():
            head.net[-1].weight.fill_(sign)
        head.zero_grad()
        w = head(h, h)
        torch.testing.assert_close(w, (z * sign).clamp(0, 1).detach())
        w.sum().backward()
        assert head.net[-1].weight.grad.abs().sum() > 0  # a head below 0 still learns


def test_the_reference_unbounded_weight_is_saved_with_the_head(tmp_path):
    model, _, tok, ids, _ = make("nano")
    loose = QuietStarModel(model.lm, tok, clamp_weight=False)
    with torch.no_grad():
        loose.mixing_head.net[-1].weight.copy_(-torch.rand_like(loose.mixing_head.net[-1].weight) - 0.5)
    loose.save_pretrained(tmp_path / "m")
    loaded = QuietStarModel.from_pretrained(tmp_path / "m")  # clamp_weight=True by default: the saved head wins
    thoughts = loaded.sample_thoughts(ids, 1, temperature=0)
    with torch.no_grad():
        w = loaded.forward_with_thoughts(ids, thoughts, 1).weights
    assert not loaded.mixing_head.clamp and (w < 0).any()
