import math

import pytest
import torch

from reasonloop.train import encode_pairs, sft_loss
from reasonloop.train.loop import TrainConfig, TrainingError, train_loop

from .conftest import tiny_model

PROMPTS = ["Q: 1+2\n", "Q: 3*3\n", "Q: 9-4\n", "Q: 2+2\n"]
ANSWERS = ["1+2=3\nA: 3", "3*3=9\nA: 9", "9-4=5\nA: 5", "2+2=4\nA: 4"]


def sft(model, batch):
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return sft_loss(logits, batch.input_ids, batch.completion_mask)


def test_schedule_hand_values():
    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert cfg.lr_at(110) == pytest.approx(0.1)


def test_sft_memorises_a_few_solutions(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    batch = encode_pairs(char_tokenizer, PROMPTS, ANSWERS)
    state = train_loop(model, char_tokenizer, lambda i: batch, sft, TrainConfig(steps=80, lr=1e-2, warmup=5))
    losses = [h["sft_nll"] for h in state["history"]]
    assert losses[-1] < 0.15 * losses[0]
    from reasonloop.engine import HFEngine

    out = HFEngine(model, char_tokenizer).generate(PROMPTS, 1, temperature=0.0, max_new_tokens=20)
    assert [o[0].text for o in out] == ANSWERS


def test_gradient_accumulation_matches_one_big_batch(char_tokenizer):
    same_len = ["1+2=3", "3*3=9", "9-4=5", "2+2=4"]  # equal token counts, so per-micro-batch means average exactly
    full = encode_pairs(char_tokenizer, PROMPTS, same_len)
    halves = [
        encode_pairs(char_tokenizer, PROMPTS[:2], same_len[:2]),
        encode_pairs(char_tokenizer, PROMPTS[2:], same_len[2:]),
    ]
    a, b = tiny_model("llama", char_tokenizer), tiny_model("llama", char_tokenizer)
    train_loop(a, None, lambda i: full, sft, TrainConfig(steps=3, lr=1e-3, warmup=1))
    train_loop(b, None, lambda i: halves[i % 2], sft, TrainConfig(steps=3, lr=1e-3, warmup=1, grad_accum=2))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_nan_guard_skips_then_gives_up(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    batch = encode_pairs(char_tokenizer, PROMPTS, ANSWERS)
    calls = {"n": 0}

    def flaky(m, b):
        calls["n"] += 1
        loss, metrics = sft(m, b)
        return (loss * float("nan"), metrics) if calls["n"] in (2, 3) else (loss, metrics)

    before = [p.clone() for p in model.parameters()]
    logged = []
    state = train_loop(model, None, lambda i: batch, flaky, TrainConfig(steps=4, lr=1e-3, warmup=1), log=logged.append)
    assert sum("skipped" in r for r in logged) == 2 and len(state["history"]) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(TrainingError, match="non-finite for 4 steps"):
        train_loop(
            model,
            None,
            lambda i: batch,
            lambda m, b: (torch.tensor(math.nan), {}),
            TrainConfig(steps=10, max_bad_steps=3),
        )


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, char_tokenizer):
    batches = [encode_pairs(char_tokenizer, PROMPTS[i : i + 2], ANSWERS[i : i + 2]) for i in (0, 2)]
    cfg = TrainConfig(steps=8, lr=5e-3, warmup=2, save_every=3)
    ref = tiny_model("llama", char_tokenizer)
    train_loop(ref, char_tokenizer, lambda i: batches[i % 2], sft, cfg)

    class Crash(Exception):
        pass

    def crashing(m, b, count={"n": 0}):  # noqa: B006 - a call counter
        count["n"] += 1
        if count["n"] == 7:
            raise Crash
        return sft(m, b)

    model = tiny_model("llama", char_tokenizer)
    with pytest.raises(Crash):
        train_loop(model, char_tokenizer, lambda i: batches[i % 2], crashing, cfg, out_dir=tmp_path)
    assert (tmp_path / "last" / "trainer_state.pt").exists()
    fresh = tiny_model("llama", char_tokenizer, seed=5)  # the rerun starts from other weights: the checkpoint wins
    state = train_loop(fresh, char_tokenizer, lambda i: batches[i % 2], sft, cfg, out_dir=tmp_path)
    assert [h["step"] for h in state["history"]] == list(range(1, 9))
    for pa, pb in zip(ref.parameters(), fresh.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)
    from reasonloop.models import load_model

    saved, _ = load_model(tmp_path / "last")
    for pa, pb in zip(saved.parameters(), fresh.parameters()):
        assert torch.allclose(pa, pb)
