import json
import os

import pytest
import yaml

from reasonloop.core import (
    ConfigError,
    DataError,
    JsonlWriter,
    Problem,
    RunDir,
    Sample,
    atomic_write_text,
    load_config,
    read_jsonl,
    split_steps,
)
from reasonloop.models.nano import NanoConfig


def test_jsonl_roundtrip(tmp_path):
    p = tmp_path / "a.jsonl"
    with JsonlWriter(p) as w:
        w.write({"x": 1})
        w.write({"x": 2})
    assert [r["x"] for r in read_jsonl(p)] == [1, 2]


def test_torn_last_line_dropped_not_parsed(tmp_path):
    p = tmp_path / "a.jsonl"
    # A torn write that happens to be valid JSON must still be dropped: it has no newline.
    p.write_text('{"x": 1}\n{"x": 2}\n{"x": 3}')
    with pytest.warns(UserWarning, match="torn"):
        assert [r["x"] for r in read_jsonl(p)] == [1, 2]
    with pytest.raises(DataError, match=r"a.jsonl:3"):
        list(read_jsonl(p, drop_torn_tail=False))


def test_writer_repairs_torn_tail_on_reopen(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"x": 1}\n{"x": 2, "y": "trunc')
    with pytest.warns(UserWarning), JsonlWriter(p) as w:
        w.write({"x": 3})
    assert [r["x"] for r in read_jsonl(p)] == [1, 3]
    assert p.read_text().endswith("\n")


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"x": 1}\n\n{"x": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: invalid JSON"):
        list(read_jsonl(p))
    p.write_text('{"x": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object"):
        list(read_jsonl(p))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "hello")
    atomic_write_text(tmp_path / "f.txt", "world")
    assert (tmp_path / "f.txt").read_text() == "world"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'stepz'.*did you mean 'steps'"):
        load_config(NanoConfig, cfg)
    with pytest.raises(ConfigError, match=r"'steps': expected int"):
        load_config(NanoConfig, None, ["steps=many"])
    assert load_config(NanoConfig, None, ["steps=7", "lr=0.1"]).steps == 7
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(NanoConfig, tmp_path / "missing.yaml")


def test_rundir_refuses_a_different_config(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_config({"a": 1})
    run.save_config({"a": 1})
    with pytest.raises(ConfigError, match=r"different config \(keys \['a'\]\)"):
        run.save_config({"a": 2})
    # an option added by a newer version resumes the run when left at its default, and is then recorded
    run.save_config({"a": 1, "b": False}, defaults={"b": False})
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"a": 1, "b": False}
    with pytest.raises(ConfigError, match=r"keys \['c'\]"):
        run.save_config({"a": 1, "b": False, "c": True}, defaults={"c": False})
    run.update_state(round=1)
    assert run.state == {"round": 1}
    run.log_metrics(step=1, loss=0.5)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["loss"] == 0.5


def test_sample_and_problem_roundtrip():
    s = Sample(problem_id="p", text="1+1=2\nA: 2", steps=split_steps("1+1=2\nA: 2", "\n"), reward=1.0)
    assert Sample.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(DataError, match="unknown sample field"):
        Sample.from_dict({"problem_id": "p", "text": "", "bogus": 1})
    p = Problem("id", "Q", "3", {"k": 1})
    assert Problem.from_dict(p.to_dict()) == p
