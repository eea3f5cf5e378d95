"""Per-step DPO: critical steps on a generator with known success rates, the losses against hand-computed values,
per-step DPO as plain DPO on the whole sequences, the recipe end to end (three losses), kill -9 during the rollouts
and during training, and its one-line errors."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reasonloop.core import Problem, Sample, load_config, read_jsonl
from reasonloop.eval.critical_steps import critical_step_agreement
from reasonloop.recipes.step_dpo import StepDpoConfig, StepDpoUpdateConfig, run_step_dpo, step_dpo_update
from reasonloop.tasks import ArithTask
from reasonloop.train import dpo_loss, sequence_logprobs
from reasonloop.train.losses import advantage_weighted_loss, step_dpo_loss
from reasonloop.train.step_pairs import critical_step, pair_batch, splits_at_steps, step_pair, token_steps
from reasonloop.verifiers import mc_step_rollouts

from .conftest import tiny_model

# --- critical steps on a fake generator whose success rate from each prefix is known --------------------------------

PROBLEM = Problem("p", "Q: 2+3*2-1\n", "9", {"solution": "2+3=5\n5*2=10\n10-1=9\nA: 9"})
RIGHT = ["2+3=5", "5*2=10", "10-1=9", "A: 9"]
WRONG = ["2+3=5", "5*2=11", "11-1=10", "A: 10"]  # the first error is step 1


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def decode(token_ids: list[int]) -> str:
    return "".join(map(chr, token_ids))


def grade(problem, completion):
    return SimpleNamespace(score=float(completion.strip().endswith(f"A: {problem.answer}")))


class KnownRates:
    """From a prompt ending in `done` steps of a solution, the first `round(k * rate)` of the k rollouts write the
    rest of the right solution and the others a wrong ending; `rates[(steps so far)]` sets the rate."""

    def __init__(self, rates: dict[tuple[str, ...], float]):
        self.rates = rates

    def generate(self, prompts, n, **kw):
        out = []
        for prompt in prompts:
            prefix = prompt[len(PROBLEM.prompt) :]
            done = tuple(s for s in prefix.split("\n") if s)
            wins = round(n * self.rates[done])
            rest = "\n".join(RIGHT[len(done) :]) if list(done) == RIGHT[: len(done)] else "3-1=2\nA: 9"
            out.append(
                [
                    Sample("", t, token_ids=ids(t) + [0], prompt_ids=ids(prompt))
                    for t in [rest] * wins + ["0+0=0\nA: 0"] * (n - wins)
                ]
            )
        return out


def _sampled(steps: list[str], reward: float) -> Sample:
    text = "\n".join(steps)
    return Sample("p", text, steps=steps, token_ids=ids(text) + [0], prompt_ids=ids(PROBLEM.prompt), reward=reward)


def test_critical_steps_and_pairs_on_a_generator_with_known_success_rates():
    rates = {(): 0.5, ("2+3=5",): 0.75, ("2+3=5", "5*2=11"): 0.0, ("2+3=5", "5*2=11", "11-1=10"): 0.0}
    rates.update({("2+3=5", "5*2=10"): 1.0, ("2+3=5", "5*2=10", "10-1=9"): 1.0})
    wrong, right = _sampled(WRONG, 0.0), _sampled(RIGHT, 1.0)
    out = mc_step_rollouts(KnownRates(rates), grade, [(PROBLEM, WRONG), (PROBLEM, RIGHT)], 4)
    assert out[0].values == [0.5, 0.75, 0.0, 0.0, 0.0]  # Q of each prefix: the rates, then the grade
    assert out[1].values == [0.5, 0.75, 1.0, 1.0, 1.0]
    # wrong: the first pit is step 1, where the value collapses from 0.75 to 0; right: the largest gain, where
    # steps 0 and 1 gain 0.25 alike: the first of equals, step 0
    assert critical_step(out[0].values, correct=False) == 1
    assert critical_step(out[1].values, correct=True) == 0
    good = next(r for r in out[0].rollouts[1] if r.reward == 1.0)
    pair = step_pair(wrong, out[0].values, good, None, decode, "\n")
    # the context is the prompt plus the shared prefix; chosen: the rollout that succeeds from it; rejected: the
    # wrong solution from its pit on (its own sampled ids, end-of-sequence included)
    assert decode(pair.context_ids) == PROBLEM.prompt + "2+3=5\n"
    assert decode(pair.chosen_ids) == "5*2=10\n10-1=9\nA: 9\x00"
    assert decode(pair.rejected_ids) == "5*2=11\n11-1=10\nA: 10\x00"
    assert (pair.step, pair.advantage, pair.negative, pair.joined) == (1, -0.75, True, True)
    bad = next(r for r in out[1].rollouts[0] if r.reward != 1.0)
    pair = step_pair(right, out[1].values, None, bad, decode, "\n")
    assert decode(pair.context_ids) == PROBLEM.prompt and pair.step == 0 and not pair.negative
    assert decode(pair.chosen_ids) == "\n".join(RIGHT) + "\x00" and decode(pair.rejected_ids) == "0+0=0\nA: 0\x00"
    # no pair without the rollout it needs, and none for a solution the policy never had a chance at
    assert step_pair(wrong, out[0].values, None, bad, decode, "\n") is None
    assert step_pair(wrong, [0.0, 0.0, 0.0, 0.0, 0.0], good, None, decode, "\n") is None


def test_critical_step_rules_by_hand():
    assert critical_step([0.5, 0.5, 0.25, 0.0], correct=False) == 2  # a slow decline: the pit is where it hits 0
    assert critical_step([0.5, 0.0, 0.5, 0.0], correct=False) == 0  # the first collapse, not a later one
    assert critical_step([0.5, 0.25, 0.0], correct=False, pit=0.25) == 0
    assert critical_step([0.2, 0.1, 0.9, 1.0], correct=True) == 1  # the decisive step, after a dip
    assert critical_step([0.5], correct=False) is None
    assert token_steps(decode, ids("ab\ncd\n\x00"), "\n") == [0, 0, 0, 1, 1, 1, 2]


def test_agreement_with_the_true_first_error_improves_with_more_rollouts():
    # one wrong solution, true first error at step 2; prefixes 0 and 1 are sound but succeed half the time
    wins = [[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    rows = critical_step_agreement([(wins, 1)], [1, 2, 4])
    assert [r["found"] for r in rows] == [0.0, 1.0, 1.0]  # k=1: prefix 0 looks hopeless, no pit
    assert [r["agreement"] for r in rows] == [0.0, 1.0, 1.0]
    rows = critical_step_agreement([([[1.0, 1.0], [0.0, 1.0]], 1)], [1, 2])
    assert rows[0]["early"] == 1.0 and rows[1]["agreement"] == 1.0


# --- the losses against hand-computed values -------------------------------------------------------------------------


def test_dpo_and_step_dpo_losses_by_hand():
    pc, pr = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    # margins: 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5 and 0.5 * ((-3 + 2) - (-1 + 2)) = -1.0
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2
    loss, m = step_dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert m["step_dpo_loss"] == pytest.approx(expected, abs=1e-6) and m["reward_accuracy"] == 0.5
    assert m["reward_margin"] == pytest.approx(-0.25)
    assert dpo_loss(pc, pr, rc, rr, beta=0.5)[0].item() == pytest.approx(expected, abs=1e-6)


def test_advantage_weighted_loss_by_hand():
    # uniform logits over 2 tokens: every log p = log 1/2; positions 1..3 are completion tokens
    logits = torch.zeros(1, 4, 2)
    input_ids = torch.tensor([[0, 1, 0, 1]])
    mask = torch.tensor([[0, 1, 1, 1]])
    adv = torch.tensor([[9.0, 0.5, 0.0, -1.0]])  # position 0 is prompt: ignored
    loss, m = advantage_weighted_loss(logits, input_ids, mask, adv, beta=0.5, max_weight=2.0)
    weights = [min(math.exp(1.0), 2.0), 1.0, math.exp(-2.0)]
    assert loss.item() == pytest.approx(math.log(2) * sum(weights) / 3, abs=1e-6)
    assert m["mean_weight"] == pytest.approx(sum(weights) / 3, abs=1e-6) and m["tokens"] == 3


@pytest.mark.parametrize("span", ["critical step only", "to the end"])
def test_step_dpo_on_one_pair_equals_plain_dpo_on_the_whole_sequences(span, char_tokenizer):
    """Per-step DPO conditions both continuations on the shared prefix; plain DPO on prefix + continuation (the
    sequences truncated where the continuation ends) gives the same loss, since the prefix's log-ratio cancels."""
    torch.manual_seed(0)
    policy, ref = tiny_model("llama", char_tokenizer, seed=1), tiny_model("llama", char_tokenizer, seed=2)
    enc = lambda s: char_tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, prefix = char_tokenizer(PROBLEM.prompt)["input_ids"], enc("2+3=5\n")
    good, bad = ("5*2=10\n", "5*2=11\n") if span == "critical step only" else ("5*2=10\n10-1=9\nA: 9", "5*2=11\nA: 7")
    pad = char_tokenizer.pad_token_id

    def logps(model, batch):
        return sequence_logprobs(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                                 batch.input_ids, batch.completion_mask)  # fmt: skip

    step = pair_batch([SimpleNamespace(context_ids=prompt + prefix, chosen_ids=enc(good), rejected_ids=enc(bad))], pad)
    whole = pair_batch(
        [SimpleNamespace(context_ids=prompt, chosen_ids=prefix + enc(good), rejected_ids=prefix + enc(bad))], pad
    )
    a, b = logps(policy, step), logps(ref, step)
    c, d = logps(policy, whole), logps(ref, whole)
    per_step, m1 = step_dpo_loss(a[:1], a[1:], b[:1], b[1:], beta=0.3)
    plain, m2 = dpo_loss(c[:1], c[1:], d[:1], d[1:], beta=0.3)
    assert per_step.item() == pytest.approx(plain.item(), abs=1e-5)
    assert m1["reward_margin"] == pytest.approx(m2["reward_margin"], abs=1e-5)
    assert abs(c[0] - a[0]).item() > 1e-3  # the whole sequences' log-probs differ: only the margin is shared


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_pair_logprobs_share_contexts_and_equal_the_padded_rows(kind, char_tokenizer, monkeypatch):
    """`pair_logprobs` (each context encoded once, LM head on continuations only) equals summing the padded rows'
    log-probabilities, values and gradients, with contexts of different lengths, one shared by two pairs."""
    from reasonloop.train import shared_prefix, step_pairs
    from reasonloop.train.step_pairs import PreferencePair, pair_logprobs

    model = tiny_model(kind, char_tokenizer, seed=3)
    assert shared_prefix.supports(model)  # the path under test, not the fallback
    enc = lambda s: char_tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = char_tokenizer(PROBLEM.prompt)["input_ids"]
    pairs = [
        PreferencePair("p", prompt + enc("2+3=5\n"), enc("5*2=10\n"), enc("5*2=11\n10-1=9\nA: 9")),
        PreferencePair("p", prompt, enc("2+3=5\n"), enc("2+3=6\n6*2=12")),
        PreferencePair("p", prompt + enc("2+3=5\n"), enc("5*2=10\nA: 10"), enc("5")),  # the first pair's context
    ]
    pad = char_tokenizer.pad_token_id
    b = pair_batch(pairs, pad)
    want = sequence_logprobs(
        model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
    )
    want.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for pack in (512, 40):  # all pairs in one packed row, and one pair per row
        monkeypatch.setattr(step_pairs, "PACK_TOKENS", pack)
        model.zero_grad()
        got = pair_logprobs(model, pairs, pad)
        got.sum().backward()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        for g, p in zip(grads, model.parameters()):
            torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


# --- the recipe ------------------------------------------------------------------------------------------------------

TINY = dict(task="arith", n_train=12, n_eval=6, k=4, max_new_tokens=24)
UPDATE = dict(mc_k=4, solutions_per_problem=2, epochs=2, batch_size=4)


def _weights(d) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, solver_tiny_dir):
    d = tmp_path_factory.mktemp("step-dpo-whole")
    config = d / "cfg.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": str(solver_tiny_dir), "update": UPDATE}))
    state = run_step_dpo(load_config(StepDpoConfig, config), d / "run", log=lambda *_: None)
    return config, d / "run", state


def test_recipe_end_to_end(whole, solver_tiny_dir, capsys):
    config, run, state = whole
    records = list(read_jsonl(run / "update" / "mc_values.jsonl"))
    samples = [Sample.from_dict(d) for d in read_jsonl(run / "samples" / "samples.jsonl")]
    assert len(samples) == 12 * 4 and sorted(r["i"] for r in records) == list(range(len(records)))
    assert state["valued"] == len(records) and state["valued_wrong"] > 0
    for rec in records:  # values are the rollouts' success rates, then the solution's own grade
        assert rec["values"][:-1] == [sum(w) / 4 for w in rec["wins"]] and rec["values"][-1] == rec["sample"]["reward"]
    task = ArithTask()
    problems = {p.id: p for p in task.problems("train", 12, seed=100)}
    # every pit was recomputed from the file, and its pair's rejected side is the wrong solution's own tokens
    wrong = [r for r in records if r["sample"]["reward"] == 0.0]
    pits = [
        critical_step(r["values"], False)
        for r in wrong
        if splits_at_steps(r["sample"]["text"], r["sample"]["steps"], "\n")
    ]
    assert state["negative_pairs"] == sum(p is not None for p in pits) > 0 and state["unjoined_pairs"] == 0
    assert state["examples"] == state["negative_pairs"] + state["positive_pairs"]
    truth = [task.first_error(problems[r["sample"]["problem_id"]], r["sample"]["steps"]) for r in records]
    wrong_known = sum(r["sample"]["reward"] == 0.0 and t is not None for r, t in zip(records, truth))
    assert [a["k"] for a in state["agreement"]] == [1, 2, 4] and state["agreement"][0]["n"] == wrong_known
    # training moved the weights away from the start, and the report shows before, after and both plots
    start, after = _weights(solver_tiny_dir), _weights(run / "update" / "model")
    assert any(not torch.equal(start[k], after[k]) for k in start)
    assert len(state["history"]) == math.ceil(2 * state["examples"] / 4)
    report = (run / "report.md").read_text()
    assert "# step_dpo on `arith`" in report and "first pit = true first error" in report
    for plot in ("agreement.png", "training.png"):
        assert (run / "plots" / plot).stat().st_size > 1000
    # a rerun does nothing new and returns the same state; so does the command, which points at the report
    again = run_step_dpo(load_config(StepDpoConfig, config), run, log=lambda *_: None)
    assert again["accuracy"] == state["accuracy"] and again["history"] == state["history"]
    from reasonloop.cli import main

    assert main(["step-dpo", str(config), "--run-dir", str(run)]) == 0
    assert f"report at {run / 'report.md'}" in capsys.readouterr().err.replace("\n", "")  # rich, on stderr


@pytest.mark.parametrize("loss", ["dpo", "advantage_weighted"])
def test_the_other_losses_train_through_the_update_function(loss, tmp_path, solver_tiny_dir, whole):
    _, run, _ = whole
    task = ArithTask()
    problems = task.problems("train", 12, seed=100)
    samples = [Sample.from_dict(d) for d in read_jsonl(run / "samples" / "samples.jsonl")]
    cfg = StepDpoUpdateConfig(**{**UPDATE, "loss": loss, "epochs": 1})
    info = step_dpo_update(solver_tiny_dir, problems, samples, task, tmp_path / "u", cfg, max_new_tokens=24)
    assert (info["model"] / "config.json").exists() and info["history"]
    if loss == "dpo":  # whole right against whole wrong solutions, no rollouts
        assert not (tmp_path / "u" / "mc_values.jsonl").exists() and "awr_loss" not in info["history"][0]
        assert info["history"][0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at step 1
    else:  # every valued solution, weighted by its steps' advantages
        records = list(read_jsonl(tmp_path / "u" / "mc_values.jsonl"))
        splittable = [r for r in records if splits_at_steps(r["sample"]["text"], r["sample"]["steps"], "\n")]
        assert info["examples"] == len(splittable) > 0 and "mean_weight" in info["history"][0]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reasonloop.core import load_config
    from reasonloop.recipes import step_dpo
    from reasonloop.train import loop
    where, at = sys.argv[3], int(sys.argv[4])
    n = [0]
    def tick(here):
        if here == where:
            n[0] += 1
            if n[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
    write = step_dpo.JsonlWriter.write
    def counted_write(self, record):
        write(self, record)
        if self.path.name == "mc_values.jsonl":  # a solution's values are on disk, the rest of its group not yet
            tick("rollouts")
    step_dpo.JsonlWriter.write = counted_write
    step = loop.Trainer.step
    def trainer_step(self, *a, **k):
        out = step(self, *a, **k)
        tick("training")
        return out
    loop.Trainer.step = trainer_step
    step_dpo.run_step_dpo(load_config(step_dpo.StepDpoConfig, sys.argv[1]), sys.argv[2], log=lambda *_: None)
    """
)


@pytest.mark.parametrize("where, at", [("rollouts", 3), ("training", 3)])
def test_kill_9_during_rollouts_or_training_then_rerun_matches_an_uninterrupted_run(where, at, tmp_path, whole):
    config, run_whole, state = whole
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = tmp_path / "killed"
    env = {**os.environ, "REASONLOOP_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(config), str(run), where, str(at)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert "accuracy" not in json.loads((run / "state.json").read_text())  # it died before the end
    if where == "rollouts":
        assert not (run / "update" / "train").exists()
        assert len(list(read_jsonl(run / "update" / "mc_values.jsonl"))) == 3  # half a group of rollouts on disk
    else:
        assert (run / "update" / "train" / "last" / "trainer_state.pt").exists()  # a checkpoint to resume from
    resumed = run_step_dpo(load_config(StepDpoConfig, config), run, log=lambda *_: None)
    mc = "update/mc_values.jsonl"
    assert (run / mc).read_bytes() == (run_whole / mc).read_bytes()
    a, b = _weights(run / "update" / "model"), _weights(run_whole / "update" / "model")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed["accuracy"] == state["accuracy"] and resumed["examples"] == state["examples"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("update.loss=ipo", "key 'update': loss: expected one of step_dpo, dpo, advantage_weighted, got 'ipo'"),
        ("update.mc_k=0", "key 'update': key 'mc_k' must be >= 1, got 0"),
        ("update.pit=1", "key 'update': key 'pit' must be in [0, 1), got 1.0"),
        ("update.mck=4", "key 'update': unknown key 'mck' (did you mean 'mc_k'?)"),
        ("k=0", "key 'k' must be >= 1, got 0"),
    ],
)
def test_config_errors_are_one_line_before_anything_runs(override, message, tmp_path, capsys):
    from reasonloop.cli import main

    assert main(["step-dpo", "--run-dir", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_step_dpo_with_nothing_to_train_on_is_one_line(tiny_model_dir, tmp_path, capsys):
    from reasonloop.cli import main

    sets = [f"model={tiny_model_dir}", "n_train=3", "n_eval=2", "k=2", "max_new_tokens=8", "update.mc_k=1"]
    argv = ["step-dpo", "--run-dir", str(tmp_path / "run"), *(x for s in sets for x in ("--set", s))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "step_dpo: no critical step with a rollout to pair it with among 6 samples" in err[-1]
