"""RFT on a tiny model: dedup keeps distinct paths, the run trains, reports and resumes."""

import pytest

from reasonloop.core import read_jsonl
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.rft import RftConfig, most_distinct, run_rft

from .conftest import greedy_accuracy_of


def test_most_distinct_is_farthest_first():
    a, b, c = ["1+2=3", "A: 3"], ["1+2=3", "3*1=3", "A: 3"], ["2+1=3", "A: 3"]
    assert most_distinct([a, a, a], 3) == [0]
    assert most_distinct([a, b, a, c], 2) == [0, 1]  # b is 1 step away from a, c is 1 step away too; ties -> first
    assert sorted(most_distinct([a, b, a, c], 5)) == [0, 1, 3]
    assert most_distinct([], 3) == []


@pytest.mark.parametrize("dedup", [True, False])
def test_rft_runs_and_resumes(tmp_path, solver_tiny_dir, dedup):
    cfg = RftConfig(
        model=str(solver_tiny_dir),
        n_train=12,
        n_eval=6,
        k=4,
        max_new_tokens=24,
        epochs=1,
        batch_size=4,
        dedup=dedup,
        max_paths=3,
    )
    state = run_rft(cfg, tmp_path / "run", log=lambda s: None)
    assert state["problems_solved"] > 0
    # the counts, from the samples file: correct samples per problem, their distinct step lists, and what training
    # keeps (farthest-first dedup keeps every distinct path up to max_paths; without dedup, the first max_paths)
    task, train, test = draw_problems(cfg)
    by_id = {p.id: p for p in train}
    right: dict[str, list] = {}
    for rec in read_jsonl(tmp_path / "run" / "samples" / "samples.jsonl"):
        assert rec["reward"] == float(task.is_correct(by_id[rec["problem_id"]], rec["text"]))
        if rec["reward"] == 1.0:
            right.setdefault(rec["problem_id"], []).append(tuple(rec["steps"]))
    distinct = {pid: len(set(v)) for pid, v in right.items()}
    assert state["problems_solved"] == len(right)
    assert state["correct_samples"] == sum(len(v) for v in right.values())
    assert state["distinct_correct_paths"] == sum(distinct.values())
    kept = distinct if dedup else {pid: len(v) for pid, v in right.items()}
    assert state["training_paths"] == sum(min(n, cfg.max_paths) for n in kept.values())
    # every kept path reached the right answer; those whose steps the world's exact check rejects are counted
    assert 0 <= state["training_paths_with_wrong_step"] <= state["training_paths"]
    if not dedup:  # without dedup the kept paths are the first max_paths right samples: count them here
        flawed = sum(
            task.first_error(by_id[pid], list(s)) is not None for pid, v in right.items() for s in v[: cfg.max_paths]
        )
        assert state["training_paths_with_wrong_step"] == flawed
    assert state["base_accuracy"] == greedy_accuracy_of(solver_tiny_dir, task, test, cfg.max_new_tokens)
    ckpt = tmp_path / "run" / "checkpoints" / "final"
    assert state["accuracy"] == greedy_accuracy_of(ckpt, task, test, cfg.max_new_tokens)
    assert (tmp_path / "run" / "report.md").read_text().startswith("# RFT")
    assert run_rft(cfg, tmp_path / "run", log=lambda s: None) == state  # a finished run is not redone


def test_rft_cli(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main

    args = [
        "rft",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"model={solver_tiny_dir}",
        "--set",
        "n_train=8",
        "--set",
        "n_eval=4",
    ]
    args += ["--set", "k=2", "--set", "max_new_tokens=24", "--set", "epochs=1", "--set", "batch_size=4"]
    assert main(args) == 0
    assert "RFT (k=2, dedup=on)" in capsys.readouterr().err


def test_rft_steps_fixes_the_training_compute(tmp_path, solver_tiny_dir):
    import torch

    cfg = RftConfig(model=str(solver_tiny_dir), n_train=8, n_eval=4, k=2, max_new_tokens=24, batch_size=4, steps=3)
    run_rft(cfg, tmp_path / "run", log=lambda s: None)
    state = torch.load(tmp_path / "run" / "checkpoints" / "train" / "last" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3
    with pytest.raises(ValueError, match="steps"):
        RftConfig(steps=-1)
