"""Smoke tests of every CLI command on a tiny model, and their one-line errors."""

import argparse
import json
import os

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


def test_init_builds_an_extract_base_over_the_worlds_own_defaults(tmp_path):
    out = tmp_path / "ex"
    sets = [*TINY, "--set", "task=extract", "--set", "n_seed_solutions=20"]
    assert main(["--threads", "2", "init", "--out", str(out), *sets, "--eval-problems", "2"]) == 0
    report = json.loads((out / "eval_extract.json").read_text())
    assert report["task"] == "extract" and report["num_problems"] == 2
    assert report["greedy_accuracy"] <= report.get("greedy_mean_grade", report["greedy_accuracy"]) <= 1.0
    config = json.loads((out / "nano_training.json").read_text())["config"]
    # --set wins over the world's defaults; the keys not set take extract's (seed_fraction 0.7, not arith's 0.5)
    assert (config["steps"], config["n_seed_solutions"], config["seed_fraction"]) == (4, 20, 0.7)


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
        (["serve", "/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
        (["serve", "openai:http://127.0.0.1:9/v1#m"], "is served over HTTP; this needs local weights"),
        (["eval", "--model", "openai:http://127.0.0.1:9/v1"], "expected openai:URL#model"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_help_for_every_command(capsys):
    from reasonloop.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(sub.choices)
    assert len(commands) >= 11 and {"init", "sample", "eval", "grade", "star", "scale"} <= set(commands)
    for cmd in commands:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: reasonloop " + cmd in capsys.readouterr().out


def test_eval_reports_accuracy_by_chain_length(built):
    report = json.loads((built / "eval_arith.json").read_text())
    groups = report["by_group"]
    assert set(groups) <= {"2", "3", "4"} and sum(g["problems"] for g in groups.values()) == report["num_problems"]
    assert all({"greedy_accuracy", "pass@1", "pass@16"} <= set(g) for g in groups.values())


# --- every input error, through main(): exit 2, one line on stderr, the culprit named --------------------------


def _one_line_error(argv: list[str], capsys, *, after_progress: bool = False) -> str:
    """main(argv) exits 2 with one line on stderr (the last line, `after_progress` bars of work already done)."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    if after_progress:
        err = err.splitlines()[-1]
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def bad(tmp_path_factory, built):
    """Files that are wrong in one way each (and good ones to pair them with)."""
    import shutil

    d = tmp_path_factory.mktemp("bad")
    (d / "dir").mkdir()
    (d / "noverifier").mkdir()
    (d / "good.jsonl").write_text('{"answer": "7", "completion": "#### 7"}\n')
    (d / "other.jsonl").write_text('{"x": 1}\n')
    (d / "binary.jsonl").write_bytes(b'{"answer": "7", "completion": "\xff\xfe\x00"}\n')
    (d / "notobj.jsonl").write_text("[1, 2]\n")
    (d / "nonstr.jsonl").write_text('{"answer": "1", "completion": 5}\n')
    (d / "noanswer.jsonl").write_text('{"completion": "5"}\n')
    (d / "gsm8k.yaml").write_text("type: gsm8k\n")
    (d / "py_bad.yaml").write_text("type: python\ntests: assert True\ntimeout_s: -1\n")
    (d / "invalid.yaml").write_text("n_train: [1, 2\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "neg.yaml").write_text("n_train: -5\n")
    long_question = "1 + " * 2000 + "1"  # ~8,000 characters: far beyond the tiny model's 1,024 positions
    (d / "long.jsonl").write_text(json.dumps({"question": long_question, "answer": "x\n#### 2001"}) + "\n")
    for name, damage in {
        "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
        "empty": lambda f: f.write_bytes(b""),
        "random": lambda f: f.write_bytes(os.urandom(4096)),
    }.items():
        shutil.copytree(built, d / name, ignore=shutil.ignore_patterns("eval_*"))
        damage(d / name / "model.safetensors")
    shutil.copytree(built, d / "notokenizer", ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    return d


FLAG_ERRORS = [  # argv, what the one-line error must say
    (["sample", "--output", "o.jsonl", "--n", "0"], "argument --n: must be >= 1, got 0"),
    (["sample", "--output", "o.jsonl", "--n", "-1"], "argument --n: must be >= 1, got -1"),
    (["sample", "--output", "o.jsonl", "--n", "two"], "argument --n: expected int, got 'two'"),
    (["sample", "--output", "o.jsonl", "--num-problems", "-3"], "argument --num-problems: must be >= 1, got -3"),
    (["eval", "--num-problems", "0"], "argument --num-problems: must be >= 1, got 0"),
    (["eval", "--n", "-1"], "argument --n: must be >= 0, got -1"),
    (["eval", "--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    (["sample", "--output", "o.jsonl", "--temperature", "-1"], "argument --temperature: must be >= 0, got -1.0"),
    (["eval", "--top-p", "2"], "argument --top-p: must be in (0, 1], got 2.0"),
    (["eval", "--top-p", "nan"], "argument --top-p: must be in (0, 1], got nan"),
    (["sample", "--output", "o.jsonl", "--max-batch", "0"], "argument --max-batch: must be >= 1, got 0"),
    (["eval", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["init", "--eval-problems", "-1"], "argument --eval-problems: must be >= 0, got -1"),
    (["--threads", "0", "eval"], "argument --threads: must be >= 1, got 0"),
    (["grade", "--grader", "g", "--input", "i", "--output", "o", "--workers", "-1"], "--workers: must be >= 0"),
    (["grade", "--grader", "g", "--input", "i", "--output", "o", "--chunk-size", "0"], "--chunk-size: must be >= 1"),
    (["eval", "--bogus"], "unrecognized arguments: --bogus"),
    (["sample"], "the following arguments are required: --output"),
    (["star"], "the following arguments are required: --run-dir"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["serve", "nano", "--port", "0"], "argument --port: must be in [1, 65535], got 0"),
    (["serve", "nano", "--max-n", "0"], "argument --max-n: must be >= 1, got 0"),
]


@pytest.mark.parametrize("argv,message", FLAG_ERRORS, ids=[" ".join(a) for a, _ in FLAG_ERRORS])
def test_flags_out_of_range_are_one_line_errors_naming_the_flag(argv, message, capsys):
    assert message in _one_line_error(argv, capsys)


CONFIG_ERRORS = [  # (command, --set item), what the one-line error must say
    ("star", "n_train=-5", "key 'n_train' must be >= 1, got -5"),
    ("star", "epochs=-2", "key 'epochs' must be > 0, got -2.0"),
    ("star", "lr=-1", "key 'lr' must be > 0, got -1.0"),
    ("star", "n_eval=0", "key 'n_eval' must be >= 1, got 0"),
    ("rft", "batch_size=0", "key 'batch_size' must be >= 1, got 0"),
    ("rft", "k=0", "key 'k' must be >= 1, got 0"),
    ("vstar", "verifier_beta=0", "key 'verifier_beta' must be > 0, got 0.0"),
    ("verifiers", "mc_k=0", "key 'mc_k' must be >= 1, got 0"),
    ("search", "budget=0", "key 'budget' must be >= 1, got 0"),
    ("scale", "max_depth=0", "key 'max_depth' must be >= 1, got 0"),
    ("demo", "n_eval=0", "key 'n_eval' must be >= 1, got 0"),
    ("init", "seed_fraction=2", "key 'seed_fraction' must be in [0, 1], got 2.0"),
    ("init", "hidden_size=30", "hidden_size must be a multiple of n_heads"),
    ("star", "n_train", "override 'n_train': expected key=value"),
    ("star", "n_trian=5", "unknown key 'n_trian' (did you mean 'n_train'?)"),
    ("star", "task=arith:max_ops=0", "arith options: key 'max_ops' must be >= 1, got 0"),
]


@pytest.mark.parametrize("command,item,message", CONFIG_ERRORS, ids=[f"{c} {i}" for c, i, _ in CONFIG_ERRORS])
def test_config_values_out_of_range_are_one_line_errors_naming_the_key(command, item, message, tmp_path, capsys):
    run_dir = [] if command in ("init", "demo") else ["--run-dir", str(tmp_path / "run")]
    out = ["--out", str(tmp_path / "nano")] if command == "init" else []
    assert message in _one_line_error([command, *run_dir, *out, "--set", item], capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "nano").exists()  # refused before anything ran


def test_yaml_config_missing_invalid_or_not_a_mapping(bad, tmp_path, capsys):
    run = ["--run-dir", str(tmp_path / "run")]
    assert "config file does not exist" in _one_line_error(["star", str(tmp_path / "none.yaml"), *run], capsys)
    assert f"{bad / 'invalid.yaml'}: invalid YAML" in _one_line_error(["rft", str(bad / "invalid.yaml"), *run], capsys)
    err = _one_line_error(["vstar", str(bad / "list.yaml"), *run], capsys)
    assert f"{bad / 'list.yaml'}: expected a mapping" in err
    err = _one_line_error(["star", str(bad / "neg.yaml"), *run], capsys)
    assert f"{bad / 'neg.yaml'}: key 'n_train' must be >= 1, got -5" in err


def test_task_option_without_equals_and_out_of_range(capsys):
    assert "--task-option 'max_ops': expected key=value" in _one_line_error(
        ["eval", "--task-option", "max_ops"], capsys
    )
    err = _one_line_error(["eval", "--task-option", "test_fraction=1.5"], capsys)
    assert "key 'test_fraction' must be in (0, 1), got 1.5" in err


def test_grade_input_errors(bad, tmp_path, capsys):
    def grade(inp: str, out: str = str(tmp_path / "o.jsonl"), grader: str = str(bad / "gsm8k.yaml")) -> str:
        return _one_line_error(["grade", "--grader", grader, "--input", inp, "--output", out], capsys)

    assert f"{tmp_path / 'none.jsonl'}: no such file" in grade(str(tmp_path / "none.jsonl"))
    assert f"{bad / 'binary.jsonl'}:1: invalid JSON: not UTF-8 text" in grade(str(bad / "binary.jsonl"))
    assert f"{bad / 'notobj.jsonl'}:1: expected a JSON object, got list" in grade(str(bad / "notobj.jsonl"))
    assert f"{bad / 'nonstr.jsonl'}:1: field 'completion' must be a string" in grade(str(bad / "nonstr.jsonl"))
    assert f"{bad / 'noanswer.jsonl'}:1: missing field 'answer'" in grade(str(bad / "noanswer.jsonl"))
    assert f"{bad / 'dir'}: --output is a directory" in grade(str(bad / "good.jsonl"), out=str(bad / "dir"))
    err = grade(str(bad / "good.jsonl"), out=str(bad / "other.jsonl"))
    assert f"{bad / 'other.jsonl'}:1: not the grade of {bad / 'good.jsonl'} line 1" in err
    err = grade(str(bad / "good.jsonl"), grader=str(bad / "py_bad.yaml"))
    assert "key 'timeout_s' must be > 0, got -1.0" in err and str(bad / "py_bad.yaml") in err
    assert not (tmp_path / "o.jsonl").exists()


def test_grade_judge_model_without_a_loader(bad, tmp_path, capsys, monkeypatch):
    import reasonloop.cli as cli

    monkeypatch.setattr(cli, "_judge_engine", None)  # an entry point that offers no way to load a model
    argv = ["grade", "--grader", str(bad / "gsm8k.yaml"), "--input", str(bad / "good.jsonl")]
    err = _one_line_error([*argv, "--output", str(tmp_path / "o.jsonl"), "--judge-model", "nano"], capsys)
    assert "--judge-model needs a model loader" in err


def test_sample_and_eval_output_errors(bad, tmp_path, capsys):
    err = _one_line_error(["sample", "--output", str(bad / "dir")], capsys)
    assert f"{bad / 'dir'}: --output is a directory" in err
    err = _one_line_error(["sample", "--output", str(bad / "other.jsonl"), "--num-problems", "1"], capsys)
    assert f"{bad / 'other.jsonl'}:1: not a samples file of `reasonloop sample`" in err
    assert f"{bad / 'dir'}: --output is a directory" in _one_line_error(["eval", "--output", str(bad / "dir")], capsys)


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_corrupt_weights_are_one_line_naming_the_file(bad, damage, capsys):
    err = _one_line_error(["eval", "--model", str(bad / damage), "--num-problems", "1"], capsys)
    assert f"{bad / damage / 'model.safetensors'}: not a readable safetensors file" in err


def test_missing_tokenizer_and_missing_verifier_manifest(bad, built, tmp_path, capsys):
    err = _one_line_error(["eval", "--model", str(bad / "notokenizer"), "--num-problems", "1"], capsys)
    assert f"model path '{bad / 'notokenizer'}' has no tokenizer" in err
    sets = ["--set", f"model={built}", "--set", f"verifier={bad / 'noverifier'}", "--set", "n_eval=1"]
    err = _one_line_error(["search", "--run-dir", str(tmp_path / "run"), *sets], capsys)
    assert f"verifier path '{bad / 'noverifier'}' has no reasonloop_verifier.json" in err


def test_a_prompt_longer_than_the_model_context_is_refused_before_generating(bad, built, tmp_path, capsys):
    argv = ["sample", "--model", str(built), "--task", "gsm8k", "--data", str(bad / "long.jsonl")]
    err = _one_line_error([*argv, "--output", str(tmp_path / "s.jsonl")], capsys)
    assert f"{bad / 'long.jsonl'}:1: prompt is" in err and "longer than the model's context (1,024)" in err
    assert not (tmp_path / "s.jsonl").exists()


def test_a_50_mb_line_is_refused_naming_file_and_line_within_1_gib(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "huge.jsonl"
    with open(data, "w") as f:
        f.write(json.dumps({"question": "What is 1 + 1?", "answer": "x\n#### 2"}) + "\n")
        f.write('{"question": "' + "7 + " * (50 * 1024 * 1024 // 4) + '1", "answer": "#### 1"}\n')
    code = (
        "import resource, sys\nfrom reasonloop.cli import main\n"
        f"rc = main(['sample', '--task', 'gsm8k', '--data', {str(data)!r}, '--output', {str(tmp_path / 'o.jsonl')!r}])\n"
        "print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"  # KiB
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, peak_kib = out.stdout.split()
    assert rc == "2" and f"error: {data}:2: line longer than 16,777,216 bytes" in out.stderr, out.stderr
    assert int(peak_kib) < 1024 * 1024, f"peak memory {int(peak_kib) // 1024} MiB"


def test_a_question_over_the_prompt_cap_is_refused_naming_file_and_line(tmp_path, capsys):
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"question": "x" * 100_001, "answer": "#### 1"}) + "\n")
    err = _one_line_error(["sample", "--task", "gsm8k", "--data", str(data), "--output", str(tmp_path / "o")], capsys)
    assert f"{data}:1: field 'question' is 100,001 characters, more than the limit of 100,000" in err


def test_rft_with_no_correct_sample_is_one_line(built, tmp_path, capsys):
    sets = [f"model={built}", "n_train=2", "n_eval=1", "k=1", "max_new_tokens=4", "task=arith:min_ops=4,max_ops=4"]
    argv = ["rft", "--run-dir", str(tmp_path / "run"), *(x for s in sets for x in ("--set", s))]
    err = _one_line_error(argv, capsys, after_progress=True)
    assert "no correct solution among 1 samples of 2 problems: nothing to train on" in err


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    import reasonloop.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_eval", interrupted)
    assert main(["eval"]) == 130
    assert capsys.readouterr().err == "interrupted: rerun the same command to resume\n"


# --- one writer per output file ------------------------------------------------------------------------------


def _cli_in_another_process(argv: list[str], until, what: str):
    """Start `reasonloop argv` in a subprocess and return it once `until()` holds (it must still be running)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from reasonloop.cli import main; main({argv!r})"],
        env={**os.environ, "PYTHONPATH": src},
        stderr=subprocess.DEVNULL,
    )
    t0 = time.time()
    while not until():
        if proc.poll() is not None or time.time() - t0 > 120:
            proc.kill()
            pytest.fail(f"the first process ended or stalled before {what}")
        time.sleep(0.02)
    return proc


def test_two_samplers_on_one_output_the_second_refuses_and_a_rerun_after_kill_9_takes_over(built, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    argv = ["sample", "--model", str(built), "--num-problems", "30", "--n", "2", "--max-new-tokens", "24"]
    argv += ["--max-batch", "2", "--output", str(out)]  # one problem per generate call: written a line at a time
    first = _cli_in_another_process(argv, lambda: out.exists() and out.read_bytes().count(b"\n") >= 4, "sampling")
    try:
        err = _one_line_error(argv, capsys)
        assert err == (
            f"error: output file {out} is being written by another process (pid {first.pid}); "
            "one writer at a time: wait for it or stop it"
        )
    finally:
        first.kill()  # SIGKILL
        first.wait()
    assert main(argv) == 0  # the killed writer's lock is taken over; it resumes where the first one stopped
    keys = [(r["problem_id"], r["meta"]["sample_index"]) for r in read_jsonl(out)]
    assert len(keys) == len(set(keys)) == 60


def test_a_second_grader_on_one_output_refuses(bad, tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "graded.jsonl"
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = (
        "import sys, time\nfrom reasonloop.core.lock import output_lock\n"
        f"output_lock({str(out)!r}).acquire()\nprint('holding', flush=True)\ntime.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": src}
    )
    argv = ["grade", "--grader", str(bad / "gsm8k.yaml"), "--input", str(bad / "good.jsonl"), "--output", str(out)]
    try:
        assert holder.stdout.readline() == "holding\n"
        assert f"(pid {holder.pid})" in _one_line_error(argv, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert main([*argv, "--workers", "0"]) == 0 and [r["score"] for r in read_jsonl(out)] == [1.0]


def test_two_star_runs_on_one_run_dir_the_second_refuses_and_a_rerun_after_kill_9_takes_over(built, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [f"model={built}", "n_train=8", "n_eval=2", "rounds=1", "samples=2", "max_new_tokens=16", "epochs=1"]
    argv = ["star", "--run-dir", str(run), *(x for s in [*sets, "batch_size=4"] for x in ("--set", s))]
    lock = run / ".lock"
    first = _cli_in_another_process(argv, lambda: lock.exists() and lock.read_text().strip().isdigit(), "locking")
    try:
        assert lock.read_text() == f"{first.pid}\n"
        err = _one_line_error(argv, capsys)
        assert f"error: run directory {run} is being written by another process (pid {first.pid})" in err
    finally:
        first.kill()
        first.wait()
    assert main(argv) == 0  # takes over the killed run's directory and finishes it
    state = json.loads((run / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1] and (run / "checkpoints" / "round1" / "config.json").exists()


# --- a full disk while writing ----------------------------------------------------------------------------------

DISK_FULL = """
import contextlib, json, os, shutil, sys
from pathlib import Path
from reasonloop.graders.sandbox_child import CLONE_NEWNS, MS_PRIVATE, MS_REC, _LIBC, _check, _mount
import reasonloop.cli as cli

small, after, fill_when, leave = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
argv = json.loads(sys.argv[5])
_check(_LIBC.unshare(CLONE_NEWNS), "unshare")  # the tmpfs lives and dies with this process
_mount(None, "/", None, MS_REC | MS_PRIVATE)
_mount("tmpfs", small, "tmpfs", 0, "size=16m")
filler = os.path.join(small, "filler")
real_bar = cli.progress_bar


def fill():  # the disk is full, but for `leave` bytes
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, bytes(1 << 16))
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)


@contextlib.contextmanager
def bar(total, description):
    calls = [0]
    with real_bar(total, description) as advance:
        def counted(k=1, status=None):
            calls[0] += 1
            if description.startswith(fill_when.split("@")[0]) and calls[0] == int(fill_when.split("@")[1]):
                fill()
            advance(k, status)
        yield counted


cli.progress_bar = bar
first = cli.main(argv)
os.remove(filler)  # free space
cli.progress_bar = real_bar
second = cli.main(argv)
left = [str(p) for p in Path(small).rglob("*") if ".tmp" in p.name]
shutil.copytree(small, after)  # the tmpfs goes with this process: keep what it held for the test to read
print(json.dumps({"first": first, "second": second, "temporaries": left}))
"""

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


def _fill_disk_during(argv: list[str], small, fill_when: str, leave: int) -> tuple[dict, list[str]]:
    """Run `argv` twice with `small` a 16 MB tmpfs: the first run fills it at `fill_when` (`<bar>@<advance>`),
    leaving `leave` bytes; the second runs after the filler is deleted. What `small` held ends in `small.after`."""
    import subprocess
    import sys
    from pathlib import Path

    small.mkdir()
    src = str(Path(__file__).resolve().parents[1] / "src")
    after = small.with_name(small.name + ".after")
    cmd = [sys.executable, "-c", DISK_FULL, str(small), str(after), fill_when, str(leave), json.dumps(argv)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}, timeout=600)
    if "cannot create namespaces" in out.stderr or "mount" in out.stderr and out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    return json.loads(out.stdout.strip().splitlines()[-1]), errors


@ROOT_ONLY
def test_disk_full_during_sample_is_one_line_and_the_rerun_finishes(built, tmp_path):
    small = tmp_path / "small"
    out = small / "s.jsonl"
    argv = ["sample", "--model", str(built), "--num-problems", "6", "--n", "2", "--max-new-tokens", "16"]
    argv += ["--max-batch", "2", "--output", str(out)]
    # full after 2 problems: the rest of the file's last page holds a record or two, then a write stops half-way
    res, errors = _fill_disk_during(argv, small, "sampling@4", leave=0)
    assert res["first"] == 2 and res["second"] == 0 and res["temporaries"] == []
    assert errors == [
        f"error: {out}: cannot write: No space left on device; free space (or fix the file system) and rerun to resume"
    ]
    kept = tmp_path / "small.after" / "s.jsonl"
    keys = [(r["problem_id"], r["meta"]["sample_index"]) for r in read_jsonl(kept)]  # no torn line either
    assert len(keys) == len(set(keys)) == 12  # nothing lost, nothing twice


@ROOT_ONLY
def test_disk_full_during_a_checkpoint_save_is_one_line_and_the_rerun_finishes(solver_tiny_dir, tmp_path):
    small = tmp_path / "small"
    run = small / "run"
    sets = [f"model={solver_tiny_dir}", "n_train=8", "n_eval=2", "rounds=1", "samples=2", "max_new_tokens=48"]
    argv = ["star", "--run-dir", str(run), *(x for s in [*sets, "epochs=4", "batch_size=2"] for x in ("--set", s))]
    res, errors = _fill_disk_during(argv, small, "fine-tuning@1", leave=0)  # full once the first step is done
    assert res["first"] == 2 and res["second"] == 0 and res["temporaries"] == []
    assert len(errors) == 1 and errors[0].startswith(f"error: {run / 'checkpoints' / 'round1-train' / 'last'}: ")
    assert "cannot write: " in errors[0] and "No space left on device" in errors[0]
    kept = tmp_path / "small.after" / "run"
    state = json.loads((kept / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1] and (kept / "checkpoints" / "round1" / "config.json").exists()
    assert state["rounds"][0]["rationales_plain"] > 0  # it did fine-tune (and so saved checkpoints)
    samples = list(read_jsonl(kept / "samples" / "round1-plain.jsonl"))
    keys = [(r["problem_id"], r["meta"]["sample_index"]) for r in samples]
    assert len(keys) == len(set(keys)) == 16


# --- docs/cli-errors.md lists every flag and config key with its check, and only tests that exist ---------------

CONFIGS = {  # where each command's --set keys (or grader YAML keys) live
    "init": "reasonloop.recipes.nano:NanoConfig",
    "rl": "reasonloop.recipes.rl:RLConfig",
    "rl (critic.*)": "reasonloop.recipes.rl:CriticConfig",
    "rl (reward.*)": "reasonloop.recipes.rl:RewardConfig",
    "star": "reasonloop.recipes.star:StarConfig",
    "star (ray.*)": "reasonloop.engine.fanout:RayConfig",
    "rft": "reasonloop.recipes.rft:RftConfig",
    "step-dpo": "reasonloop.recipes.step_dpo:StepDpoConfig",
    "step-dpo (update.*)": "reasonloop.recipes.step_dpo:StepDpoUpdateConfig",
    "quiet-star": "reasonloop.recipes.quiet_star:QuietStarConfig",
    "vstar": "reasonloop.recipes.vstar:VStarConfig",
    "verifiers": "reasonloop.recipes.verifiers:VerifiersConfig",
    "search": "reasonloop.recipes.scale:SearchConfig",
    "scale": "reasonloop.recipes.scale:ScaleConfig",
    "selfplay, demo": "reasonloop.recipes.selfplay:SelfPlayConfig",
    "--task-option, task=arith:...": "reasonloop.tasks.arith:ArithConfig",
    "--task-option, task=countdown:...": "reasonloop.tasks.countdown:CountdownConfig",
    "--task-option, task=extract:...": "reasonloop.tasks.extract:ExtractConfig",
    **{f"grade (type: {t})": f"reasonloop.graders.registry:{t}" for t in ["python", "math", "numeric", "gsm8k"]},
    **{
        f"grade (type: {t})": f"reasonloop.graders.registry:{t}"
        for t in ["json_fields", "text_similarity", "model", "score_model", "label_model"]
    },
}


TEXT_CHECKS = {  # what is checked for a flag that takes text ("command flag" overrides "flag")
    "--task": "a known task; its options are checked as below",
    "--data": "an existing JSONL file; lines of at most 16 MiB, questions of at most 100,000 characters",
    "--task-option": "key=value; the world's key and its range (below)",
    "--model": "a model spec: a directory (config.json, a tokenizer, readable safetensors), hf:DIR, nano, or openai:URL#model",
    "sample --output": "not a directory; an existing file must be one `sample` wrote; one writer at a time",
    "eval --output": "not a directory",
    "problems --output": "not a directory",
    "grade --output": "not a directory; an existing file must grade the same input; one writer at a time",
    "--input": "an existing JSONL file of objects with `answer` and a string `completion`",
    "--grader": "a YAML mapping: a known `type` and its keys (below)",
    "--judge-model": "a model directory; the entry point must offer a loader",
    "--set": "key=value; a known key of the command's config, its type and range (below)",
    "--run-dir": "one writer at a time; a rerun must use the same config",
    "--out": "a directory (created)",
    "--ray-address": "a Ray cluster address (`auto`, `ray://HOST:10001`, `HOST:6379`); one that does not answer is a one-line error",
    "--config": "a YAML file holding a mapping of the config's keys",
}


def _doc_flag_rows() -> list[str]:
    from reasonloop.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = []
    for command, p in [("(all)", parser), *sorted(sub.choices.items())]:
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            rng, flag = getattr(a.type, "range", None), a.option_strings[-1]
            check = f"{rng}" if rng else "one of " + ", ".join(a.choices) if a.choices else "-"
            check = TEXT_CHECKS.get(f"{command} {flag}", TEXT_CHECKS.get(flag, check))
            kind = "switch" if a.nargs == 0 else getattr(a.type, "__name__", "text") if a.type else "text"
            rows.append(f"| {command} | `{a.option_strings[-1]}` | {kind} | {check} |")
    return rows


def _doc_config_rows() -> list[str]:
    import dataclasses
    import importlib
    import typing

    from reasonloop.core.config import field_range
    from reasonloop.graders.registry import GRADERS

    def find(spec: str) -> type:
        for candidate in spec.split("|"):
            module, name = candidate.split(":")
            if module.endswith("registry"):
                return GRADERS[name][0]
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise LookupError(spec)

    rows = []
    for where, spec in CONFIGS.items():
        cls = find(spec)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = getattr(hints[f.name], "__name__", str(hints[f.name]).replace("|", "or"))
            if kind in ("int", "float"):
                rng = field_range(cls, f.name)
                assert rng is not None, f"{cls.__name__}.{f.name} declares no range"
                rows.append(f"| {where} | `{f.name}` | {kind} | {rng} |")
    return rows


def test_cli_errors_doc_lists_every_flag_and_key_and_names_real_tests():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "cli-errors.md").read_text()
    missing = [row for row in _doc_flag_rows() + _doc_config_rows() if row not in doc]
    assert not missing, "docs/cli-errors.md lacks:\n" + "\n".join(missing)
    tests = {m for f in (root / "tests").glob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    named = set(re.findall(r"`(test_\w+)`", doc.split("## Every flag")[0]))  # the table of error classes
    assert named and named <= tests, f"the doc names tests that do not exist: {sorted(named - tests)}"
