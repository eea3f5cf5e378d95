"""The ground online RL stands on: training on the sampled ids, a trainer set up once, the engine on live weights."""

from __future__ import annotations

import copy

import pytest
import torch

from reasonloop.core import Problem, Sample, grade_sample
from reasonloop.engine import HFEngine
from reasonloop.models import load_model
from reasonloop.tasks import ArithTask
from reasonloop.train import TrainConfig, Trainer, train_loop
from reasonloop.train.rollout import completion_logprobs, rollout_batch

from .conftest import tiny_model

PROMPTS = ["Q: 1+2\n", "Q: 12*3-4+5\n", "Q: 7\n"]  # different lengths: prompts are left-padded


def _samples(engine, n=3, max_new_tokens=12, seed=1):
    return [s for group in engine.generate(PROMPTS, n, max_new_tokens=max_new_tokens, seed=seed) for s in group]


@pytest.mark.parametrize("which", ["nano", "qwen2"])
def test_training_logprobs_of_sampled_tokens_equal_the_engines(which, trained_tiny_dir, char_tokenizer):
    if which == "nano":
        model, tok = load_model(trained_tiny_dir)
    else:
        model, tok = tiny_model("qwen2", char_tokenizer), char_tokenizer
    samples = _samples(HFEngine(model, tok))
    batch = rollout_batch(samples, tok.pad_token_id)
    assert batch.input_ids.shape[1] == max(len(p) for p in map(tok.encode, PROMPTS)) + batch.completion_length
    with torch.no_grad():
        lp = completion_logprobs(model, batch)
    for b, s in enumerate(samples):
        assert s.prompt_ids == tok(PROMPTS[b // 3])["input_ids"]
        torch.testing.assert_close(lp[b, : len(s.token_ids)], torch.tensor(s.logprobs), atol=1e-4, rtol=0)
    assert (lp * (1 - batch.mask)).abs().sum() == 0  # padding carries nothing


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_shared_prefix_forward_equals_the_plain_forward_values_and_gradients(kind, char_tokenizer, monkeypatch):
    """Each prompt encoded once for its completions gives the padded transformers forward's logprobs and grads."""
    from reasonloop.train import shared_prefix

    model = tiny_model(kind, char_tokenizer)
    plain = copy.deepcopy(model)
    batch = rollout_batch(_samples(HFEngine(model, char_tokenizer)), char_tokenizer.pad_token_id)
    assert batch.prompts.shape[0] == 3 and batch.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    (completion_logprobs(model, batch) * torch.linspace(0.5, 1.5, batch.completion_length)).sum().backward()
    monkeypatch.setattr(shared_prefix, "supports", lambda m: False)  # the transformers path
    (completion_logprobs(plain, batch) * torch.linspace(0.5, 1.5, batch.completion_length)).sum().backward()
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    monkeypatch.undo()
    sub = batch.select([7, 1, 2])  # a mini-batch keeps only the prompts its rows use
    assert sub.group.tolist() == [1, 0, 0] and sub.prompts.shape[0] == 2
    with torch.no_grad():
        torch.testing.assert_close(completion_logprobs(model, sub), sub.old_logprobs, atol=1e-4, rtol=0)


def test_a_rollout_batch_is_the_sampled_ids_not_a_retokenisation(char_tokenizer):
    s = Sample("p", "ignored text", token_ids=[9, 8, 7], logprobs=[-1.0, -2.0, -3.0], prompt_ids=[5, 6])
    short = Sample("q", "x", token_ids=[4], logprobs=[-0.5], prompt_ids=[1, 2, 3])
    b = rollout_batch([s, short], pad_id=0)
    assert b.input_ids.tolist() == [[0, 5, 6, 9, 8, 7], [1, 2, 3, 4, 0, 0]]
    assert b.attention_mask.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert b.position_ids[0, 1:].tolist() == [0, 1, 2, 3, 4] and b.position_ids[1, :4].tolist() == [0, 1, 2, 3]
    assert b.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.old_logprobs.tolist() == [[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]]
    one = b.select([1])  # its completion is one token: the padding columns after it go
    assert (
        one.input_ids.tolist() == [[1, 2, 3, 4]] and one.mask.tolist() == [[1]] and one.prompts.tolist() == [[1, 2, 3]]
    )
    assert b.prompts.tolist() == [[0, 5, 6], [1, 2, 3]] and b.group.tolist() == [0, 1]
    with pytest.raises(ValueError, match="prompt_ids"):
        rollout_batch([Sample("p", "text", token_ids=[1], logprobs=[-1.0])], pad_id=0)


def _loss(model, batch):
    logits = model(input_ids=batch).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    return loss, {"nll": loss.item()}


def _batches(n):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(4, 60, (2, 9), generator=g) for _ in range(n)]


def test_trainer_set_up_once_equals_train_loop_and_keeps_adam_state(char_tokenizer):
    cfg = TrainConfig(steps=4, lr=1e-2, warmup=2)
    batches = _batches(4)
    a, b, c = (tiny_model("llama", char_tokenizer) for _ in range(3))
    train_loop(a, char_tokenizer, lambda i: batches[i], _loss, cfg)
    trainer = Trainer(b, char_tokenizer, cfg)
    records = [trainer.step([batches[i]], _loss) for i in range(4)]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[1]["lr"] == pytest.approx(1e-2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0)
    # what calling the old train_loop once per batch did: a fresh optimiser (and schedule) every time
    for i in range(4):
        train_loop(c, char_tokenizer, lambda _, i=i: batches[i], _loss, TrainConfig(steps=1, lr=1e-2, warmup=2))
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    assert all(len(s) == 3 for s in trainer.opt.state.values())  # AdamW's step, exp_avg, exp_avg_sq kept


def test_trainer_resumes_optimizer_schedule_rng_and_extra_state(tmp_path, char_tokenizer):
    cfg = TrainConfig(steps=4, lr=1e-2, warmup=1)
    batches = _batches(4)
    whole = tiny_model("llama", char_tokenizer)
    t = Trainer(whole, char_tokenizer, cfg)
    for i in range(4):
        t.step([batches[i]], _loss)
    part = tiny_model("llama", char_tokenizer)
    t1 = Trainer(part, char_tokenizer, cfg, out_dir=tmp_path)
    for i in range(2):
        t1.step([batches[i]], _loss)
    t1.save({"rl_step": 7})
    rng = torch.get_rng_state()
    torch.manual_seed(123)  # the resumed trainer restores the RNG as it was saved
    fresh = tiny_model("llama", char_tokenizer, seed=5)
    t2 = Trainer(fresh, char_tokenizer, cfg, out_dir=tmp_path)
    assert t2.step_count == 2 and t2.extra == {"rl_step": 7} and torch.equal(torch.get_rng_state(), rng)
    for i in range(2, 4):
        t2.step([batches[i]], _loss)
    for pa, pb in zip(whole.parameters(), fresh.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-7, rtol=0)


def test_trainer_lr_scales_give_a_prefix_its_own_learning_rate(char_tokenizer):
    model = tiny_model("llama", char_tokenizer)
    t = Trainer(model, char_tokenizer, TrainConfig(steps=2, lr=1e-3, warmup=0), lr_scales={"lm_head": 10.0})
    t.step([_batches(1)[0]], _loss)
    lrs = sorted({round(g["lr"], 9) for g in t.opt.param_groups if g["params"]})
    assert lrs == [1e-3, 1e-2]
    head = {id(p) for p in model.lm_head.parameters()}
    for g in t.opt.param_groups:
        assert all((id(p) in head) == (g["lr_scale"] == 10.0) for p in g["params"])


def test_the_engine_samples_from_the_weights_being_trained(char_tokenizer):
    """No reload between steps: after an optimiser step the engine's logprobs are the updated model's."""
    model = tiny_model("llama", char_tokenizer)
    engine = HFEngine(model, char_tokenizer)
    before = _samples(engine, n=2)
    batch = rollout_batch(before, char_tokenizer.pad_token_id)
    trainer = Trainer(model, char_tokenizer, TrainConfig(steps=1, lr=5e-2, warmup=0))

    def push_up(m, b):  # raise the likelihood of what was sampled: a large, visible change
        lp = completion_logprobs(m, b)
        loss = -(lp * b.mask).sum() / b.mask.sum()
        return loss, {}

    trainer.step([batch], push_up)
    after = engine.generate([PROMPTS[0]], 1, temperature=0.0, max_new_tokens=12)[0][0]
    with torch.no_grad():
        want = completion_logprobs(model, rollout_batch([after], char_tokenizer.pad_token_id))[0]
        stale = completion_logprobs(copy.deepcopy(model).requires_grad_(False), batch)
    torch.testing.assert_close(torch.tensor(after.logprobs), want[: len(after.token_ids)], atol=1e-4, rtol=0)
    with torch.no_grad():  # and the update was real: the sampled tokens became more likely
        assert (stale * batch.mask).sum() > (batch.old_logprobs * batch.mask).sum() + 1.0


def test_lora_policy_samples_with_its_adapters_and_the_reference_disables_them(char_tokenizer):
    pytest.importorskip("peft")
    from reasonloop.train.lora import LoraSettings, add_lora

    base = tiny_model("llama", char_tokenizer)
    plain = copy.deepcopy(base)
    policy = add_lora(base, LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)  # adapters start at zero; make them matter
    engine = HFEngine(policy, char_tokenizer)
    assert engine.decoder is not None  # the fast path, not transformers.generate
    samples = _samples(engine, n=2)
    batch = rollout_batch(samples, char_tokenizer.pad_token_id)
    with torch.no_grad():
        adapted = completion_logprobs(policy, batch)
        with policy.disable_adapter():
            reference = completion_logprobs(policy, batch)
        base_lp = completion_logprobs(plain, batch)
    torch.testing.assert_close(adapted, batch.old_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(reference, base_lp, atol=1e-5, rtol=0)
    assert (adapted - reference).abs().max() > 0.1
    n_base = sum(p.numel() for p in plain.parameters())
    n_all = sum(p.numel() for p in policy.parameters())
    assert n_all - n_base < n_base // 4  # adapters only: no second copy of the weights for the reference


def test_grade_sample_is_the_one_grading_path():
    task = ArithTask()
    p = Problem("x", "Q: 2+3\n", "5")
    s = grade_sample(task.grade, p, Sample("", "2+3=5\nA: 5"), task.step_delimiter)
    assert (s.problem_id, s.steps, s.answer, s.reward) == ("x", ["2+3=5", "A: 5"], "5", 1.0)
    wrong = grade_sample(task.grade, p, Sample("", "2+3=6\nA: 6"), task.step_delimiter)
    assert wrong.reward == 0.0 and wrong.answer == "6"
