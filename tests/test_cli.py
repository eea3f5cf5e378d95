"""Smoke tests of every CLI command on a tiny model, and their one-line errors."""

import json

import pytest

from reasonloop.cli import main
from reasonloop.core import read_jsonl

TINY = [
    "--set",
    "hidden_size=32",
    "--set",
    "n_layers=2",
    "--set",
    "mlp_size=64",
    "--set",
    "steps=4",
    "--set",
    "batch_size=4",
    "--set",
    "seq_len=48",
    "--set",
    "warmup=2",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "nano"
    assert main(["--threads", "2", "init", "--out", str(out), *TINY, "--eval-problems", "4"]) == 0
    return out


def test_init_builds_and_evaluates(built, capsys):
    assert (built / "config.json").exists() and (built / "tokenizer.json").exists()
    report = json.loads((built / "eval_arith.json").read_text())
    assert 0.0 <= report["greedy_accuracy"] <= 1.0 and "pass@16" in report and "maj@16" in report
    assert json.loads((built / "reasonloop_build.json").read_text())["config"]["steps"] == 4
    # a second init reuses the model
    assert main(["init", "--out", str(built), "--eval-problems", "0"]) == 0
    assert "already" in capsys.readouterr().err


def test_init_builds_a_countdown_base(tmp_path):
    out = tmp_path / "cd"
    spec = "task=countdown:n_numbers=3,number_max=9,target_max=100"
    assert main(["--threads", "2", "init", "--out", str(out), *TINY, "--set", spec, "--eval-problems", "3"]) == 0
    report = json.loads((out / "eval_countdown.json").read_text())
    assert report["task"] == "countdown" and report["num_problems"] == 3
    training = json.loads((out / "nano_training.json").read_text())
    assert training["world"]["n_numbers"] == 3 and training["config"]["task"].startswith("countdown:")


def test_init_refuses_a_file_task_or_a_typo_in_the_world(tmp_path, capsys):
    assert main(["init", "--out", str(tmp_path / "x"), "--set", "task=gsm8k"]) != 0
    assert "built-in world" in capsys.readouterr().err
    assert main(["init", "--out", str(tmp_path / "x"), "--set", "task=countdown:n_number=3"]) != 0
    assert "unknown key 'n_number' (did you mean 'n_numbers'?)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_eval_writes_json(built, tmp_path):
    out = tmp_path / "e.json"
    args = [
        "eval",
        "--model",
        str(built),
        "--task",
        "countdown",
        "--num-problems",
        "3",
        "--n",
        "4",
        "--max-new-tokens",
        "16",
        "--output",
        str(out),
    ]
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "countdown" and res["num_problems"] == 3 and "pass@4" in res and "maj@2" in res


def test_sample_resumes_without_duplicates(built, tmp_path):
    out = tmp_path / "s.jsonl"
    args = [
        "sample",
        "--model",
        str(built),
        "--num-problems",
        "5",
        "--n",
        "3",
        "--max-new-tokens",
        "12",
        "--output",
        str(out),
    ]
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 15
    # simulate a kill mid-write: 7 whole lines and a torn eighth
    out.write_text("\n".join(lines[:7]) + "\n" + lines[7][: len(lines[7]) // 2])
    with pytest.warns(UserWarning, match="torn"):
        assert main(args) == 0
    recs = list(read_jsonl(out))
    keys = [(r["problem_id"], r["meta"]["sample_index"]) for r in recs]
    assert len(recs) == 15 and len(set(keys)) == 15
    assert all(set(r) >= {"problem_id", "text", "reward", "answer", "steps"} for r in recs)


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["eval", "--model", "/nonexistent/model", "--num-problems", "1"],
            "model path '/nonexistent/model' does not exist",
        ),
        (["eval", "--task", "arithmetic"], "unknown task 'arithmetic'"),
        (["init", "--out", "/tmp/x", "--set", "stepz=3"], "unknown key 'stepz'"),
        (["eval", "--task", "gsm8k"], "--data"),
        (["eval", "--task-option", "max_opz=3"], "unknown key 'max_opz'"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_help_for_every_command(capsys):
    for cmd in ["init", "sample", "eval", "demo"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: reasonloop " + cmd in capsys.readouterr().out


def test_eval_reports_accuracy_by_chain_length(built):
    report = json.loads((built / "eval_arith.json").read_text())
    groups = report["by_group"]
    assert set(groups) <= {"2", "3", "4"} and sum(g["problems"] for g in groups.values()) == report["num_problems"]
    assert all({"greedy_accuracy", "pass@1", "pass@16"} <= set(g) for g in groups.values())
