"""The RL recipe on a tiny model: every algorithm runs and reports; kill -9 mid-rollout and mid-update resumes to the
same result, each step logged once; bad input is one line before anything runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from reasonloop.cli import main
from reasonloop.core import ConfigError, load_config
from reasonloop.models import load_model
from reasonloop.recipes.rl import RLConfig, run_rl

TINY = dict(n_train=8, n_eval=6, prompts_per_step=4, group_size=4, max_new_tokens=40, eval_every=2, lr=1e-3)


def _cfg(model, **kw):
    return RLConfig(model=str(model), **{**TINY, **kw})


def _steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "algorithm, extra",
    [
        ("grpo", {"kl_coef": 0.05, "epochs": 2, "minibatch_size": 8}),
        ("dr_grpo", {"aggregate": "constant"}),
        ("rloo", {"kl_coef": 0.05, "kl_in": "reward", "aggregate": "sequence_mean"}),
        ("reinforce_pp", {"group_size": 1, "entropy_coef": 0.01}),
        ("ppo", {"critic": {"shared": True}}),
        ("ppo", {"group_size": 2, "epochs": 2}),
    ],
)
def test_every_algorithm_runs_learns_something_and_reports(algorithm, extra, tmp_path, solver_tiny_dir):
    run_dir = tmp_path / "run"
    cfg = load_config(RLConfig, None, None, defaults={**TINY, "model": str(solver_tiny_dir), "steps": 3,
                                                      "algorithm": algorithm, **extra})  # fmt: skip
    res = run_rl(cfg, run_dir, log=lambda *_: None)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    steps = records[1:]
    for r in steps:
        assert 0.0 <= r["reward_mean"] <= 1.0 and r["tokens_sampled"] > 0
        assert r["grad_norm"] > 0 or (r["no_signal_groups"] == 1.0 and algorithm in ("grpo", "dr_grpo", "rloo"))
        assert r["rollout_tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 and "entropy" in r and "clip_frac_high" in r
    assert steps[-1]["tokens_sampled"] > steps[0]["tokens_sampled"]
    if cfg.kl_coef > 0:
        assert all(r["kl_k3"] >= -1e-6 for r in steps) and steps[0]["kl_k1"] == pytest.approx(0.0, abs=1e-5)
    if algorithm == "ppo":
        assert all("value_loss" in r and "explained_variance" in r for r in steps)
    assert [r["step"] for r in records if "held_out_accuracy" in r] == [0, 2, 3]
    assert res["final_accuracy"] == records[-1]["held_out_accuracy"]
    model, _ = load_model(res["model"])  # the final policy is a plain checkpoint
    start, _ = load_model(solver_tiny_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start.parameters()))
    report = (run_dir / "report.md").read_text()
    assert f"# {algorithm} on `arith`" in report and "| 3 |" in report
    for plot in ("accuracy_vs_steps.png", "accuracy_vs_tokens.png", "reward.png"):
        assert (run_dir / "plots" / plot).stat().st_size > 1000


def test_rewards_come_from_the_grader_file(tmp_path, solver_tiny_dir):
    """A grader file replaces the world's check: a grader that accepts nothing gives reward 0 everywhere."""
    grader = tmp_path / "never.yaml"
    grader.write_text("type: string_check\noperation: eq\ninput: '{{sample.output_text}}'\nreference: 'no such text'\n")
    res = run_rl(_cfg(solver_tiny_dir, steps=1, grader=str(grader)), tmp_path / "run", log=lambda *_: None)
    (step,) = [r for r in res["records"] if r["step"] == 1]
    assert step["reward_mean"] == 0.0 and step["no_signal_groups"] == 1.0


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reasonloop.recipes import rl
    from reasonloop.core import load_config
    phase, at = sys.argv[3], int(sys.argv[4])
    calls = {"n": 0}
    if phase == "rollout":  # die right after sampling step `at`, before grading it
        orig = rl.rewards_of
        def rewards_of(*a, **k):
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(*a, **k)
        rl.rewards_of = rewards_of
    else:  # die after the first optimiser step of step `at`'s update (mid-update, weights changed in memory)
        orig = rl.Trainer.step
        def step(self, *a, **k):
            out = orig(self, *a, **k)
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        rl.Trainer.step = step
    cfg = load_config(rl.RLConfig, sys.argv[1])
    rl.run_rl(cfg, sys.argv[2], log=lambda *_: None)
    """
)


@pytest.mark.parametrize("phase", ["rollout", "update"])
def test_kill_9_mid_step_then_rerun_matches_an_uninterrupted_run(phase, tmp_path, solver_tiny_dir):
    import yaml

    settings = {**TINY, "model": str(solver_tiny_dir), "steps": 4, "epochs": 2, "minibatch_size": 8, "kl_coef": 0.02}
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump(settings))
    whole = run_rl(load_config(RLConfig, config), tmp_path / "whole", log=lambda *_: None)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run_dir = tmp_path / "killed"
    env = {**os.environ, "REASONLOOP_THREADS": "1"}
    # rollout: killed while step 3 is being graded; update: killed mid-way through step 2's four optimiser steps
    at = 3 if phase == "rollout" else 6
    proc = subprocess.run([sys.executable, str(script), str(config), str(run_dir), phase, str(at)], env=env)
    assert proc.returncode == -9
    assert _steps(run_dir)[-1] < 4  # it really stopped early
    resumed = run_rl(load_config(RLConfig, config), run_dir, log=lambda *_: None)
    assert _steps(run_dir) == [0, 1, 2, 3, 4]  # every step exactly once
    for a, b in zip(whole["records"], resumed["records"]):
        assert a["step"] == b["step"] and a.get("reward_mean") == b.get("reward_mean")
        assert a.get("held_out_accuracy") == b.get("held_out_accuracy")
        assert a["tokens_sampled"] == b["tokens_sampled"]
    m1, _ = load_model(whole["model"])
    m2, _ = load_model(resumed["model"])
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm=grop", "algorithm: unknown 'grop'"),
        ("group_size=1", "group_size: grpo needs at least 2"),
        ("aggregate=mean", "aggregate: unknown 'mean'"),
        ("kl_in=both", "kl_in: expected 'loss' or 'reward'"),
        ("critic.lamda=0.9", "unknown key 'lamda' (did you mean 'lam'?)"),
        ("steps=0", "key 'steps' must be"),
        ("lr=-1", "key 'lr' must be"),
        ("critic.gamma=2", "key 'gamma' must be"),
        ("sampler=vlm", "sampler: expected '' (in process) or 'vllm', got 'vlm'"),
    ],
)
def test_bad_config_is_one_line_before_anything_runs(override, message, tmp_path, capsys):
    code = main(["rl", "--run-dir", str(tmp_path / "r"), "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_grader_file_that_does_not_load_fails_before_any_model_is_loaded(tmp_path, capsys):
    bad = tmp_path / "g.yaml"
    bad.write_text("type: numerc\n")
    code = main(["rl", "--run-dir", str(tmp_path / "r"), "--set", f"grader={bad}", "--set", "model=/no/such/model"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(bad) in err and "unknown type 'numerc'" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="does not exist"):
        run_rl(RLConfig(grader=str(tmp_path / "missing.yaml"), model="/no/such/model"), tmp_path / "r2")


def test_a_vllm_sampler_that_is_not_installed_fails_before_anything_runs(tmp_path, capsys):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    code = main(["rl", "--run-dir", str(tmp_path / "r"), "--set", "sampler=vllm", "--set", "model=/no/such/model"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs vLLM, which is not installed here" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_reward_that_is_not_a_number_stops_with_a_clear_message_and_keeps_what_was_done(
    tmp_path, solver_tiny_dir, monkeypatch
):
    from reasonloop.core import Grade
    from reasonloop.recipes import rl
    from reasonloop.train import TrainingError

    calls = {"n": 0}

    def flaky(problem, completion):
        calls["n"] += 1
        if calls["n"] > 16 + 6 + 5:  # the start evaluation (6 problems) and step 1 (16 samples) grade normally
            return Grade(float("nan"), None, "nan")
        return Grade(1.0, None, "ok")

    monkeypatch.setattr(rl, "load_reward", lambda cfg, task: flaky)
    with pytest.raises(TrainingError, match=r"reward of sample \d+ of problem '.+' is not a number"):
        run_rl(_cfg(solver_tiny_dir, steps=3), tmp_path / "run", log=lambda *_: None)
    assert _steps(tmp_path / "run") == [0, 1]
    assert (tmp_path / "run" / "checkpoints" / "train" / "last" / "trainer_state.pt").exists()


def test_rl_cli_runs_and_resumes(tmp_path, solver_tiny_dir, capsys):
    args = ["rl", "--run-dir", str(tmp_path / "r"), "--set", f"model={solver_tiny_dir}"]
    args += [f"--set={k}={v}" for k, v in TINY.items()] + ["--set", "steps=2"]
    assert main(args) == 0
    assert "held-out greedy accuracy" in capsys.readouterr().err
    assert main(args) == 0  # finished: a rerun changes nothing
    assert _steps(tmp_path / "r") == [0, 1, 2]


def test_the_example_config_loads():
    from pathlib import Path

    cfg = load_config(RLConfig, Path(__file__).parents[1] / "examples" / "rl" / "grpo_arith.yaml")
    assert cfg.algorithm == "grpo" and cfg.optimizer_steps == cfg.steps * 4


@pytest.mark.parametrize("aggregate", ["token_mean", "sequence_mean", "constant"])
def test_rows_without_signal_are_left_out_with_the_same_loss_and_gradient(aggregate, tmp_path, solver_tiny_dir):
    """A mini-batch's rows whose advantages are all zero are dropped from the forward and backward passes; the
    kept rows' scaled loss, and its gradient, equal the whole mini-batch's; no row with signal: zero gradients."""
    from reasonloop.recipes.rl import RLRun
    from reasonloop.tasks import ArithTask
    from reasonloop.train.rollout import rollout_batch

    cfg = _cfg(solver_tiny_dir, aggregate=aggregate, max_new_tokens=24)
    rl = RLRun(cfg, solver_tiny_dir, tmp_path / "ckpt")
    problems = ArithTask().problems("train", 3, seed=100)
    groups = rl.engine.generate([p.prompt for p in problems], 4, temperature=1.0, max_new_tokens=24, seed=3)
    batch = rollout_batch([s for g in groups for s in g], rl.tokenizer.pad_token_id)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # group 1 has no signal
    rl.advantages(batch, rewards)
    assert (batch.advantages[4:8] == 0).all() and (batch.advantages[[0, 1, 8, 9]] != 0).any(dim=1).all()
    batch.old_logprobs = batch.old_logprobs + 0.1 * batch.mask  # ratios != 1, so clipping takes part

    def loss_and_grads(b):
        rl.policy.zero_grad(set_to_none=True)
        loss, _ = rl.loss(rl.policy, b)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in rl.policy.parameters()]

    kept = rl.signal_rows(batch)
    assert len(kept) == 8 and kept.loss_scale != 1.0
    (whole, g_whole), (part, g_part) = loss_and_grads(batch), loss_and_grads(kept)
    assert part == pytest.approx(whole, abs=1e-6)
    for a, b in zip(g_whole, g_part):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    quiet = batch.select(torch.arange(4, 8))  # one group, no signal: every gradient is exactly zero either way
    assert rl.signal_rows(quiet) is None
    assert all((g == 0).all() for g in loss_and_grads(quiet)[1]) and all(
        (g == 0).all() for g in loss_and_grads(None)[1]
    )
    # a loss that reads every row (an entropy bonus) keeps them all
    import dataclasses

    rl.cfg = dataclasses.replace(cfg, entropy_coef=0.01)
    assert rl.signal_rows(batch) is batch
