"""The `Generator` contract, the same tests for every backend: `hf` (in process), `openai` (over HTTP against
`reasonloop serve`) and `vllm` (in-process vLLM: run only where vLLM and a GPU are both present, and skipped
elsewhere, CI included; BENCHMARKS.md says where they ran). Everywhere, the `vllm` backend's own code also runs
against `fake_vllm` (vLLM's API answered by the hf engine): `vllm-fake` below.

What a recipe relies on from any backend: `n` samples per prompt; the prompt ids the model read and every sampled
token id with its logprob (what RL and per-step DPO train on); text decoded from the ids and cut at the first stop
string; a seed that makes a call reproducible, per prompt; `logprobs` that score a completion as sampling drew it;
compute counted; bad arguments refused before any work.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from pathlib import Path

import pytest
import torch

from reasonloop.core import Generator, Grade, ReasonloopError, derive_seed
from reasonloop.engine import HFEngine, open_generator
from reasonloop.models import load_model, load_tokenizer, save_model

from .conftest import tiny_model
from .test_serve import serving

PROMPTS = ["1+2=", "3*4-5=", "(7+1)*2="]
STOP = ["a", "e", "o", "=", "1", "2"]  # frequent enough on a random model that some samples end on one
# logprobs agree within this between two calls and between sampling and scoring: float32 on CPU; vLLM runs the
# checkpoint in 16-bit on the GPU, and sampling and scoring take different kernels there
TOLERANCE = {"hf": 1e-4, "openai": 1e-4, "vllm": 5e-2, "vllm-fake": 1e-4}


def vllm_installed() -> bool:
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def vllm_here() -> bool:
    return vllm_installed() and torch.cuda.is_available()


def use_vllm(kind: str, monkeypatch) -> None:
    """Make `import vllm` give the real vLLM ("vllm"; skip where it cannot run) or `fake_vllm` ("vllm-fake")."""
    if kind == "vllm" and not vllm_here():
        pytest.skip("vLLM and a GPU are not both here (pip install 'reasonloop[vllm]' on a GPU machine)")
    if kind == "vllm-fake":
        from . import fake_vllm

        monkeypatch.setitem(sys.modules, "vllm", fake_vllm)


def vllm_model(tokenizer):
    """A tiny Llama with 64-wide heads (the head sizes vLLM's GPU attention kernels take)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", params=["hf", "openai", "vllm-fake", "vllm"])
def backend(request, tmp_path_factory, char_tokenizer):
    """(kind, generator, tokenizer, model directory) for each backend on a tiny model saved here."""
    kind = request.param
    model = vllm_model(char_tokenizer) if kind.startswith("vllm") else tiny_model("llama", char_tokenizer)
    path = save_model(model, char_tokenizer, tmp_path_factory.mktemp(f"contract-{kind}") / "model")
    tokenizer = load_tokenizer(path)
    if kind == "openai":
        with serving(path, "tiny", "--max-n", "8", "--max-tokens", "64", "--max-prompts", "4") as base:
            yield kind, open_generator(f"openai:{base}#tiny"), tokenizer, path
        return
    if kind == "hf":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield kind, HFEngine.from_pretrained(path), tokenizer, path
        torch.set_num_threads(threads)
        return
    with pytest.MonkeyPatch.context() as mp:
        use_vllm(kind, mp)
        yield kind, open_generator(f"vllm:{path}"), tokenizer, path


def close_enough(a: list[float], b: list[float], tol: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def test_samples_carry_the_ids_and_logprobs_training_needs(backend):
    kind, gen, tokenizer, _ = backend
    assert isinstance(gen, Generator)
    groups = gen.generate(PROMPTS, 3, temperature=1.0, max_new_tokens=12, seed=3)
    assert [len(g) for g in groups] == [3, 3, 3]
    reasons = set()
    for i, group in enumerate(groups):
        for s in group:
            assert s.prompt_ids == tokenizer(PROMPTS[i])["input_ids"]
            assert 1 <= len(s.token_ids) <= 12 and len(s.logprobs) == len(s.token_ids)
            assert all(math.isfinite(x) and x <= 1e-6 for x in s.logprobs)
            assert s.text == tokenizer.decode(s.token_ids, skip_special_tokens=True)
            assert s.meta["seed"] == derive_seed(3, i) and s.meta["temperature"] == 1.0
            reasons.add(s.meta["finish_reason"])
            if s.meta["finish_reason"] == "length":
                assert len(s.token_ids) == 12
            else:
                assert s.meta["finish_reason"] == "eos" and s.token_ids[-1] == tokenizer.eos_token_id
    assert "length" in reasons


def test_a_seed_makes_a_call_reproducible_prompt_by_prompt(backend):
    kind, gen, _, _ = backend
    kw = dict(temperature=1.0, max_new_tokens=16, seed=7)
    first, again = gen.generate(PROMPTS, 2, **kw), gen.generate(PROMPTS, 2, **kw)
    keyed = gen.generate(PROMPTS, 2, temperature=1.0, max_new_tokens=16, seeds=[derive_seed(7, i) for i in range(3)])
    other = gen.generate(PROMPTS, 2, temperature=1.0, max_new_tokens=16, seed=8)
    flat = [s for g in first for s in g]
    for got in (again, keyed):
        for a, b in zip(flat, [s for g in got for s in g]):
            assert a.token_ids == b.token_ids and a.text == b.text
            assert close_enough(a.logprobs, b.logprobs, TOLERANCE[kind])
    assert [s.token_ids for g in other for s in g] != [s.token_ids for s in flat]
    assert len({tuple(s.token_ids) for s in flat}) > 1  # the n samples of a prompt are not copies


def test_greedy_sampling_is_deterministic_and_scored_as_drawn(backend):
    kind, gen, tokenizer, _ = backend
    groups = gen.generate(PROMPTS, 2, temperature=0.0, max_new_tokens=10)
    for g in groups:
        assert g[0].token_ids == g[1].token_ids
    assert [g[0].token_ids for g in gen.generate(PROMPTS, 1, temperature=0.0, max_new_tokens=10)] == [
        g[0].token_ids for g in groups
    ]


def test_scoring_a_sampled_completion_gives_its_sampled_logprobs(backend):
    kind, gen, tokenizer, _ = backend
    samples = [(p, s) for p, g in zip(PROMPTS, gen.generate(PROMPTS, 4, max_new_tokens=12, seed=1)) for s in g]
    # completions the tokenizer gives back as sampled (no stop cut, no special token in the text)
    drawn = [(p, s) for p, s in samples if tokenizer(s.text, add_special_tokens=False)["input_ids"] == s.token_ids]
    assert len(drawn) >= 3
    scored = gen.logprobs([p for p, _ in drawn], [s.text for _, s in drawn])
    for (_, s), lps in zip(drawn, scored):
        assert close_enough(lps, s.logprobs, TOLERANCE[kind])


def test_stop_strings_end_samples_and_are_cut_from_the_text(backend):
    _, gen, tokenizer, _ = backend
    groups = gen.generate(PROMPTS, 4, temperature=1.0, max_new_tokens=20, stop=STOP, seed=5)
    stopped = [s for g in groups for s in g if s.meta["finish_reason"] == "stop"]
    assert stopped
    for g in groups:
        for s in g:
            assert not any(x in s.text for x in STOP)
    for s in stopped:
        full = tokenizer.decode(s.token_ids, skip_special_tokens=True)
        assert s.meta["stop"] in STOP and full.startswith(s.text + s.meta["stop"])


def test_compute_is_counted(backend):
    _, gen, _, _ = backend
    before = gen.counts.copy()
    groups = gen.generate(PROMPTS, 2, max_new_tokens=8, seed=2)
    spent = gen.counts - before
    assert spent.generated == sum(len(s.token_ids) for g in groups for s in g)
    assert spent.calls == 1 and spent.prefilled >= sum(len(p) for p in PROMPTS)
    before = gen.counts.copy()
    gen.logprobs(["1+2="], ["33"])
    assert (gen.counts - before).scored == 2


def test_bad_arguments_are_refused_before_any_work(backend):
    _, gen, _, _ = backend
    before = gen.counts.copy()
    with pytest.raises(ValueError, match="n >= 1"):
        gen.generate(PROMPTS, 0)
    with pytest.raises(ValueError, match="seeds has 1 entries for 3 prompts"):
        gen.generate(PROMPTS, 1, seeds=[1])
    with pytest.raises(ValueError, match="same length"):
        gen.logprobs(PROMPTS, ["1"])
    assert (gen.counts - before).total == 0


# --- vLLM only: following the trainer's weights --------------------------------------------------------------------


@pytest.fixture(params=["vllm-fake", "vllm"])
def vllm_kind(request, monkeypatch) -> str:
    use_vllm(request.param, monkeypatch)
    monkeypatch.setattr("reasonloop.recipes.common._VLLM_ENGINES", {})  # STaR's engine cache: none from other tests
    return request.param


def test_vllm_follows_the_weights_it_is_given(vllm_kind, tmp_path, char_tokenizer):
    path = save_model(vllm_model(char_tokenizer), char_tokenizer, tmp_path / "start")
    engine = open_generator(f"vllm:{path}")
    model, _ = load_model(path)
    completions = ["12", "7=7", "x+1"]
    before = engine.logprobs(PROMPTS, completions)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine.update_weights(model)
    expected = HFEngine(model, char_tokenizer).logprobs(PROMPTS, completions)
    after = engine.logprobs(PROMPTS, completions)
    assert all(close_enough(a, e, TOLERANCE[vllm_kind]) for a, e in zip(after, expected))
    assert not all(close_enough(a, b, 0.1) for a, b in zip(after, before))
    save_model(model.to(torch.float32), char_tokenizer, tmp_path / "moved")
    engine.load_weights_from_disk(path)  # back to the start from disk, then to the moved weights from disk
    assert all(close_enough(a, b, TOLERANCE[vllm_kind]) for a, b in zip(engine.logprobs(PROMPTS, completions), before))
    engine.load_weights_from_disk(tmp_path / "moved")
    assert all(
        close_enough(a, e, TOLERANCE[vllm_kind]) for a, e in zip(engine.logprobs(PROMPTS, completions), expected)
    )


def test_vllm_sleeps_and_wakes(vllm_kind, tmp_path, char_tokenizer):
    from reasonloop.engine.vllm_engine import VLLMEngine

    path = save_model(vllm_model(char_tokenizer), char_tokenizer, tmp_path / "m")
    engine = VLLMEngine(path, enable_sleep_mode=True)
    greedy = engine.generate(PROMPTS, 1, temperature=0.0, max_new_tokens=8)
    engine.sleep(1)
    with pytest.raises(ReasonloopError, match="asleep"):
        engine.generate(PROMPTS, 1)
    engine.wake_up()
    again = engine.generate(PROMPTS, 1, temperature=0.0, max_new_tokens=8)
    assert [g[0].token_ids for g in again] == [g[0].token_ids for g in greedy]
    engine.sleep(2)  # weights dropped: the next update brings them back
    engine.update_weights(load_model(path)[0])
    assert [g[0].token_ids for g in engine.generate(PROMPTS, 1, temperature=0.0, max_new_tokens=8)] == [
        g[0].token_ids for g in greedy
    ]


def test_without_vllm_its_spec_is_a_one_line_error(tmp_path, char_tokenizer, monkeypatch):
    if vllm_installed():
        pytest.skip("vLLM is installed here")
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    path = save_model(tiny_model("llama", char_tokenizer), char_tokenizer, tmp_path / "m")
    with pytest.raises(ReasonloopError, match=r"needs vLLM, which is not installed here .*reasonloop\[vllm\]"):
        open_generator(f"vllm:{path}")
    with pytest.raises(ReasonloopError, match="does not exist"):
        open_generator(f"vllm:{Path(tmp_path) / 'nowhere'}")


def test_rl_samples_through_vllm_on_the_weights_it_trains(vllm_kind, tmp_path, char_tokenizer):
    from reasonloop.recipes.rl import RLConfig, RLRun, run_rl
    from reasonloop.tasks import ArithTask

    path = save_model(vllm_model(char_tokenizer), char_tokenizer, tmp_path / "start")
    cfg = RLConfig(model=str(path), sampler="vllm", steps=3, n_train=8, n_eval=4, prompts_per_step=4, group_size=4,
                   max_new_tokens=16, eval_every=1, lr=1e-3)  # fmt: skip
    result = run_rl(cfg, tmp_path / "run", log=lambda *_: None)
    assert [r["step"] for r in result["records"]] == [0, 1, 2, 3]
    rl = RLRun(cfg, path, tmp_path / "ckpt")  # one step by hand: after it, vLLM holds the updated policy
    completions = ["12", "7=7", "x+1"]
    before = rl.sampler().logprobs(PROMPTS, completions)

    def by_length(problem, text):  # a reward every group has signal under: completions differ in length
        return Grade(float(len(text) % 2), text, "parity of the length")

    rl.train_step(ArithTask().problems("train", 4, seed=100), by_length, "\n", 0)
    expected = HFEngine(rl.policy, rl.tokenizer).logprobs(PROMPTS, completions)
    assert not all(close_enough(a, b, 1e-3) for a, b in zip(expected, before))  # the step moved the policy
    got = rl.sampler().logprobs(PROMPTS, completions)
    assert all(close_enough(a, e, TOLERANCE[vllm_kind]) for a, e in zip(got, expected))


def test_star_samples_each_round_through_vllm_on_that_rounds_weights(vllm_kind, tmp_path, solver_tiny_dir):
    from reasonloop.recipes import common, run_star

    from .test_star import tiny_cfg

    path = solver_tiny_dir  # solves some problems, so round 1 has rationales to train on
    result = run_star(tiny_cfg(path, sampler="vllm", rounds=2), tmp_path / "run", log=lambda s: None)
    assert len(result["rounds"]) == 2
    (engine,) = common._VLLM_ENGINES.values()  # one engine for both rounds, on round 2's starting weights
    completions = ["12", "7=7", "x+1"]
    expected = HFEngine.from_pretrained(tmp_path / "run" / "checkpoints" / "round1").logprobs(PROMPTS, completions)
    start = HFEngine.from_pretrained(path).logprobs(PROMPTS, completions)
    assert not all(close_enough(a, b, 1e-3) for a, b in zip(expected, start))
    got = engine.logprobs(PROMPTS, completions)
    assert all(close_enough(a, e, TOLERANCE[vllm_kind]) for a, e in zip(got, expected))
