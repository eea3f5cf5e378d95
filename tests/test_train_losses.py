"""Losses against values worked out by hand and against TRL's DPOTrainer (a peer implementation)."""

import math

import pytest
import torch

from reasonloop.train import dpo_loss, encode_pairs, sequence_logprobs, sft_loss
from reasonloop.train.losses import token_logprobs

from .conftest import tiny_model


def test_sft_loss_hand_values():
    # V = 3. Uniform logits: every completion token costs log 3.
    ids = torch.tensor([[0, 1, 2, 1]])
    mask = torch.tensor([[0, 1, 1, 0]])  # tokens 1 and 2 are the completion
    loss, m = sft_loss(torch.zeros(1, 4, 3), ids, mask)
    assert loss.item() == pytest.approx(math.log(3)) and m["tokens"] == 2
    # position 0 predicts token 1 with logits [0, ln 2, 0] -> p = 2/4; position 1 predicts token 2 with
    # logits [0, 0, ln 3] -> p = 3/5; position 2 (predicting the prompt-masked token) must not count.
    logits = torch.zeros(1, 4, 3)
    logits[0, 0, 1] = math.log(2)
    logits[0, 1, 2] = math.log(3)
    logits[0, 2, 1] = 100.0
    loss, _ = sft_loss(logits, ids, mask)
    assert loss.item() == pytest.approx(-(math.log(2 / 4) + math.log(3 / 5)) / 2, abs=1e-6)


def test_dpo_loss_hand_values():
    # margin = 0.5 * ((-1 - -2) - (-3 - -2)) = 1  ->  loss = -log sigmoid(1) = log(1 + e^-1)
    loss, m = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert m["reward_chosen"] == pytest.approx(0.5) and m["reward_rejected"] == pytest.approx(-0.5)
    assert m["reward_accuracy"] == 1.0
    # equal log-ratios: loss is log 2 whatever beta is
    z = torch.zeros(3)
    assert dpo_loss(z, z, z, z, beta=7.0)[0].item() == pytest.approx(math.log(2))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1)
    loss.backward()
    # dL/dchosen = -beta * sigmoid(-margin) = -0.05 at margin 0
    assert chosen.grad.item() == pytest.approx(-0.05) and rejected.grad.item() == pytest.approx(0.05)


PAIRS = [
    {"prompt": "Q: 1+2\n", "chosen": "1+2=3\nA: 3", "rejected": "1+2=4\nA: 4"},
    {"prompt": "Q: 5*3-1\n", "chosen": "5*3=15\n15-1=14\nA: 14", "rejected": "5*3=12\nA: 12"},
]


def test_dpo_loss_equals_trl_dpo_trainer(tmp_path, char_tokenizer):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    beta = 0.3
    policy, ref = tiny_model("llama", char_tokenizer, seed=0), tiny_model("llama", char_tokenizer, seed=1)
    from accelerate.state import AcceleratorState

    args = DPOConfig(
        output_dir=str(tmp_path), beta=beta, per_device_train_batch_size=2, report_to=[], use_cpu=True, bf16=False
    )
    try:
        trainer = DPOTrainer(
            model=policy,
            ref_model=ref,
            args=args,
            train_dataset=Dataset.from_list(PAIRS),
            processing_class=char_tokenizer,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        policy.eval(), ref.eval()
        with torch.no_grad():
            trl_loss = trainer.compute_loss(trainer.model, batch).item()
    finally:
        AcceleratorState._reset_state(True)  # the trainer sets process-wide accelerate state; leave none behind

    # our batching gives the same tokens and completion mask as TRL's collator ([chosen..., rejected...])
    ours = encode_pairs(
        char_tokenizer, [p["prompt"] for p in PAIRS] * 2, [p["chosen"] for p in PAIRS] + [p["rejected"] for p in PAIRS]
    )
    T = ours.input_ids.shape[1]
    assert torch.equal(ours.input_ids, batch["input_ids"][:, :T])
    assert torch.equal(ours.completion_mask, batch["completion_mask"][:, :T])
    assert not batch["completion_mask"][:, T:].any()

    with torch.no_grad():
        logps = sequence_logprobs(
            policy(input_ids=ours.input_ids, attention_mask=ours.attention_mask).logits,
            ours.input_ids,
            ours.completion_mask,
        )
        ref_logps = sequence_logprobs(
            ref(input_ids=ours.input_ids, attention_mask=ours.attention_mask).logits,
            ours.input_ids,
            ours.completion_mask,
        )
    loss, _ = dpo_loss(logps[:2], logps[2:], ref_logps[:2], ref_logps[2:], beta=beta)
    assert loss.item() == pytest.approx(trl_loss, abs=1e-5)


def test_sequence_logprobs_match_the_engine(char_tokenizer):
    from reasonloop.engine import HFEngine

    model = tiny_model("qwen2", char_tokenizer)
    b = encode_pairs(char_tokenizer, ["Q: 1+2\n", "Q: 7\n"], ["1+2=3\nA: 3", "A: 7"], add_eos=False)
    with torch.no_grad():
        ours = sequence_logprobs(
            model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
        )
    engine = HFEngine(model, char_tokenizer).logprobs(["Q: 1+2\n", "Q: 7\n"], ["1+2=3\nA: 3", "A: 7"])
    assert ours.tolist() == pytest.approx([sum(x) for x in engine], abs=1e-4)


def test_token_and_sequence_logprobs_hand_values():
    # V = 4, T = 4. Position t predicts token t + 1; logits favour a different token at each position.
    ids = torch.tensor([[0, 2, 1, 3]])
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 2] = math.log(5)  # p(2) = 5/8
    logits[0, 1, 3] = math.log(3)  # p(1) = 1/6 (token 3 takes 3/6)
    logits[0, 2, 3] = math.log(2)  # p(3) = 2/5
    logits[0, 3] = 50.0  # the last position predicts nothing
    expected = [math.log(5 / 8), math.log(1 / 6), math.log(2 / 5)]
    assert token_logprobs(logits, ids)[0].tolist() == pytest.approx(expected, abs=1e-6)
    # completion = tokens 2 and 3 (mask on positions 2, 3): their predictions are positions 1 and 2
    mask = torch.tensor([[0, 0, 1, 1]])
    assert sequence_logprobs(logits, ids, mask).item() == pytest.approx(expected[1] + expected[2], abs=1e-6)
    loss, m = sft_loss(logits, ids, mask)
    assert loss.item() == pytest.approx(-(expected[1] + expected[2]) / 2, abs=1e-6)
    assert m == pytest.approx({"sft_nll": loss.item(), "tokens": 2.0})


def test_sft_loss_with_no_completion_token_is_zero_not_nan():
    ids = torch.tensor([[0, 1, 2]])
    loss, m = sft_loss(torch.randn(1, 3, 3), ids, torch.zeros(1, 3, dtype=torch.long))
    assert loss.item() == 0.0 and m["tokens"] == 1.0  # the count is clamped to 1 so the mean is defined
    # one completion token: the mean is that token's NLL (a clamp above 1 would halve it)
    logits = torch.zeros(1, 3, 3)
    loss, m = sft_loss(logits, ids, torch.tensor([[0, 0, 1]]))
    assert loss.item() == pytest.approx(math.log(3)) and m["tokens"] == 1.0


def test_dpo_metrics_over_a_batch_and_the_default_beta():
    # rewards (beta 0.1): chosen 0.1 * (0 - -1) = 0.1 and 0.1 * (-2 - -2) = 0; rejected 0.1 * (-1 - 0) = -0.1 and 0
    pc, pr = torch.tensor([0.0, -2.0]), torch.tensor([-1.0, -3.0])
    rc, rr = torch.tensor([-1.0, -2.0]), torch.tensor([0.0, -3.0])
    loss, m = dpo_loss(pc, pr, rc, rr)
    margins = [0.2, 0.0]
    expected = sum(math.log(1 + math.exp(-x)) for x in margins) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert m == pytest.approx(
        {
            "dpo_loss": expected,
            "reward_chosen": 0.05,
            "reward_rejected": -0.05,
            "reward_margin": 0.1,
            "reward_accuracy": 0.5,  # a zero margin is not a win
        },
        abs=1e-6,
    )
