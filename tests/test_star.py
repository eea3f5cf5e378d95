"""STaR on a tiny model: it runs, reports, and survives kill -9 during sampling and during training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasonloop.core import ConfigError, read_jsonl
from reasonloop.recipes import StarConfig, run_star
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.star import select_rationales

from .conftest import greedy_accuracy_of


def tiny_cfg(model_dir, **kw):
    base = dict(
        model=str(model_dir),
        n_train=12,
        n_eval=6,
        rounds=2,
        patience=5,
        samples=2,
        max_new_tokens=24,
        epochs=1,
        batch_size=4,
    )
    return StarConfig(**{**base, **kw})


def test_star_runs_and_reports(tmp_path, solver_tiny_dir):
    cfg = tiny_cfg(solver_tiny_dir)
    res = run_star(cfg, tmp_path / "run", log=lambda s: None)
    assert len(res["rounds"]) == 2
    run = tmp_path / "run"
    # every accuracy is the greedy accuracy of that round's checkpoint, decoded and graded again here
    task, _, test = draw_problems(cfg)
    assert res["base_accuracy"] == greedy_accuracy_of(solver_tiny_dir, task, test, cfg.max_new_tokens)
    for r in res["rounds"]:
        ckpt = run / "checkpoints" / f"round{r['round']}"
        assert r["held_out_accuracy"] == greedy_accuracy_of(ckpt, task, test, cfg.max_new_tokens), r
    assert res["final_accuracy"] == res["rounds"][-1]["held_out_accuracy"]
    assert res["best_accuracy"] == max([res["base_accuracy"]] + [r["held_out_accuracy"] for r in res["rounds"]])
    # round 1's rationales: the distinct correct samples of each problem, at most keep_per_problem of them
    by_id = {p.id: p for p in draw_problems(cfg)[1]}
    right: dict[str, set] = {}
    for rec in read_jsonl(run / "samples" / "round1-plain.jsonl"):
        assert rec["reward"] == float(task.is_correct(by_id[rec["problem_id"]], rec["text"]))
        if rec["reward"] == 1.0:
            right.setdefault(rec["problem_id"], set()).add(rec["text"])
    assert res["rounds"][0]["train_solved_plain"] == len(right)
    assert res["rounds"][0]["rationales_plain"] == sum(min(len(v), cfg.keep_per_problem) for v in right.values())
    assert (run / "report.md").read_text().startswith("# STaR")
    assert (run / "plots" / "accuracy_per_round.png").stat().st_size > 0
    assert (run / "checkpoints" / "round2" / "config.json").exists()
    assert res["rounds"][0]["rationales_plain"] > 0  # the solver finds some, so round 1 really fine-tuned
    plain = list(read_jsonl(run / "samples" / "round1-plain.jsonl"))
    assert len(plain) == 12 * 2
    # rerunning a finished run does nothing new
    again = run_star(tiny_cfg(solver_tiny_dir), run, log=lambda s: None)
    assert again["rounds"] == res["rounds"]
    with pytest.raises(ConfigError, match="different config"):
        run_star(tiny_cfg(solver_tiny_dir, samples=3), run, log=lambda s: None)


def test_select_rationales_keeps_distinct_correct_ones():
    from reasonloop.core import Sample

    s = [
        Sample("a", "x", reward=1.0),
        Sample("a", "x", reward=1.0),
        Sample("a", "y", reward=0.0),
        Sample("a", "z", reward=1.0),
        Sample("b", "w", reward=0.0),
    ]
    assert select_rationales(s, 1) == {"a": ["x"]}
    assert select_rationales(s, 5) == {"a": ["x", "z"]}


SCRIPT = """
import sys
from reasonloop.recipes import StarConfig, run_star
from reasonloop.recipes.common import draw_problems
cfg = StarConfig(model=sys.argv[1], n_train=int(sys.argv[3]), n_eval=4, rounds=1, samples=4, max_new_tokens=24,
                 epochs=float(sys.argv[4]), batch_size=2, max_batch=4)
run_star(cfg, sys.argv[2], log=lambda s: None)
"""


def _kill_when(cmd, ready, timeout=120.0):
    proc = subprocess.Popen(cmd, env={**os.environ, "REASONLOOP_THREADS": "1"})
    t0 = time.time()
    while not ready() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("phase", ["sampling", "training"])
def test_kill_9_then_rerun_resumes_without_duplicates(tmp_path, solver_tiny_dir, phase):
    run = tmp_path / "run"
    samples = run / "samples" / "round1-plain.jsonl"
    n_train, epochs = (60, 1) if phase == "sampling" else (8, 30)
    cmd = [sys.executable, "-c", SCRIPT, str(solver_tiny_dir), str(run), str(n_train), str(epochs)]
    if phase == "sampling":
        ready = lambda: _lines(samples) >= 12  # noqa: E731 - some problems written, most not
    else:
        ready = lambda: (run / "checkpoints" / "round1-train" / "last" / "trainer_state.pt").exists()  # noqa: E731
    assert _kill_when(cmd, ready), f"the run finished before it could be killed during {phase}"
    if phase == "sampling":
        assert 12 <= _lines(samples) < n_train * 4
    subprocess.run(cmd, check=True, env={**os.environ, "REASONLOOP_THREADS": "1"})
    recs = list(read_jsonl(samples))
    keys = [(r["problem_id"], r["meta"]["sample_index"]) for r in recs]
    assert len(keys) == len(set(keys)) == n_train * 4  # nothing lost, nothing twice
    state = json.loads((run / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1]
    assert (run / "checkpoints" / "round1" / "config.json").exists()


def test_a_round_without_rationales_carries_the_model_over(tmp_path, trained_tiny_dir):
    logs = []
    res = run_star(tiny_cfg(trained_tiny_dir, rounds=1, rationalize=False), tmp_path / "run", log=logs.append)
    assert res["rounds"][0]["rationales_plain"] == 0 and any("carried over" in m for m in logs)


def test_star_cli(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main

    cfg = tmp_path / "star.yaml"
    cfg.write_text(
        f"model: {solver_tiny_dir}\nn_train: 8\nn_eval: 4\nrounds: 1\nsamples: 2\nmax_new_tokens: 24\nbatch_size: 4\n"
    )
    assert main(["star", str(cfg), "--run-dir", str(tmp_path / "run"), "--set", "epochs=1"]) == 0
    assert "STaR: held-out greedy accuracy" in capsys.readouterr().err
    assert (tmp_path / "run" / "report.md").exists()
    assert main(["star", str(cfg), "--run-dir", str(tmp_path / "run2"), "--set", "epoch=1"]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err
