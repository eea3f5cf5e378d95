"""Shared fixtures: tiny Llama / Qwen2 checkpoints built and saved inside the tests."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_model(kind: str, tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    raise ValueError(kind)


def greedy_accuracy_of(model_dir, task, problems, max_new_tokens) -> float:
    """Held-out greedy accuracy of a saved model, decoded and graded here rather than read from a recipe."""
    from reasonloop.engine import HFEngine

    out = HFEngine.from_pretrained(model_dir).generate(
        [p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=max_new_tokens
    )
    return sum(task.is_correct(p, o[0].text) for p, o in zip(problems, out)) / len(problems)


def vote_credit(records: list[dict]) -> float:
    """The vote's credit as documented: the most common answer wins (no answer never does), ties share the
    credit equally, and a winning answer earns the mean grade of its samples."""
    counts = Counter(r["answer"] for r in records if r["answer"] is not None)
    if not counts:
        return 0.0
    winners = [a for a, c in counts.items() if c == max(counts.values())]
    means = [sum(r["reward"] for r in records if r["answer"] == a) / counts[a] for a in winners]
    return sum(means) / len(winners)


def top_reward(records: list[dict], scores: list[float]) -> float:
    """The grade of the highest-scored sample (ties: the earliest)."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return records[best]["reward"]


@pytest.fixture(scope="session")
def char_tokenizer():
    from reasonloop.models.nano import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_model_dir(request, tmp_path_factory, char_tokenizer) -> Path:
    """A tiny randomly initialised model of each architecture, saved like any HF checkpoint."""
    from reasonloop.models import save_model

    path = tmp_path_factory.mktemp(f"tiny-{request.param}") / "model"
    save_model(tiny_model(request.param, char_tokenizer), char_tokenizer, path)
    return path


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory) -> Path:
    """A tiny nano model trained for a few steps through the real `init` code path."""
    from reasonloop.recipes.nano import NanoConfig, train_nano

    path = tmp_path_factory.mktemp("nano-tiny") / "model"
    cfg = NanoConfig(
        hidden_size=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_size=64, steps=30, batch_size=8, seq_len=64, warmup=5
    )
    return train_nano(path, cfg)


def assert_stops_only_on_text(tokenizer, out, stop: str, exercised: int) -> None:
    """Every sample of `out` (per-prompt lists) ended as a "stop" exactly when its text without special tokens holds
    `stop`, and at least `exercised` samples hold a special token (whose name may hold `stop`, its text does not)."""
    special = set(tokenizer.all_special_ids)
    samples = [s for ss in out for s in ss]
    assert sum(any(t in special for t in s.token_ids) for s in samples) >= exercised  # the case is exercised
    for s in samples:
        text = tokenizer.decode(s.token_ids, skip_special_tokens=True)
        assert (s.meta["finish_reason"] == "stop") == (stop in text)


def require_shared(path: Path) -> Path:
    """`path` if it exists; else skip the test on a developer's machine, but fail it under CI (`CI=true`), where a
    layout change must not silently hide the real-data tests."""
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but the shared data is missing: expected {path} beside the repository", pytrace=False)
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets beside the repository (`../shared/data`); see `require_shared`."""
    return require_shared(SHARED)


@pytest.fixture(scope="session")
def solver_tiny_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny model that has memorised the canonical solutions of the first 60 train problems STaR draws
    (seed 100), so recipes find correct rationales on it within seconds."""
    from reasonloop.models import save_model
    from reasonloop.tasks import ArithTask
    from reasonloop.train import TrainConfig, encode_pairs, sft_loss, train_loop

    problems = ArithTask().problems("train", 60, seed=100)
    batch = encode_pairs(char_tokenizer, [p.prompt for p in problems], [p.meta["solution"] for p in problems])
    model = tiny_model("llama", char_tokenizer)

    def loss_fn(m, b):
        return sft_loss(
            m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
        )

    train_loop(model, char_tokenizer, lambda i: batch, loss_fn, TrainConfig(steps=150, lr=1e-2, warmup=5))
    return save_model(model, char_tokenizer, tmp_path_factory.mktemp("solver") / "model")
