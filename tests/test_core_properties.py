"""Atomic JSONL and run directories: round trips and torn tails for any records (hypothesis), and every guard."""

import json
import os
import warnings

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonloop.core import ConfigError, DataError, JsonlWriter, ReasonloopError, RunDir, read_jsonl
from reasonloop.core.jsonl import _torn_tail_offset, atomic_write_json, atomic_write_text, repair_jsonl

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)
records = st.lists(st.dictionaries(st.text(), values, max_size=4), max_size=6)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(records, st.data())
def test_jsonl_round_trip_with_any_torn_tail(tmp_path, recs, data):
    path = tmp_path / "r.jsonl"
    path.unlink(missing_ok=True)
    with JsonlWriter(path) as w:
        w.write_many(recs)
    whole = path.read_bytes()
    assert list(read_jsonl(path)) == recs and whole.count(b"\n") == len(recs)
    # a killed writer leaves any non-empty prefix of one more line, without its newline
    line = (json.dumps(data.draw(st.dictionaries(st.text(), values, max_size=3)), ensure_ascii=False) + "\n").encode()
    cut = data.draw(st.integers(1, len(line) - 1))
    path.write_bytes(whole + line[:cut])
    assert _torn_tail_offset(path) == len(whole)
    with pytest.warns(UserWarning, match=f"r.jsonl:{len(recs) + 1}: last line is incomplete"):
        assert list(read_jsonl(path)) == recs  # the torn line is dropped, never parsed
    with pytest.raises(DataError, match=f"r.jsonl:{len(recs) + 1}: last line is incomplete"):
        list(read_jsonl(path, drop_torn_tail=False))
    with pytest.warns(UserWarning, match="dropped a torn last line"):
        assert repair_jsonl(path) is True
    assert path.read_bytes() == whole and repair_jsonl(path) is False
    with JsonlWriter(path) as w:  # appending after a repair starts on a fresh line
        w.write({"after": 1})
    assert list(read_jsonl(path)) == recs + [{"after": 1}]


def test_torn_tail_offset_walks_back_over_long_lines(tmp_path):
    path = tmp_path / "long.jsonl"
    head = b'{"a": 1}\n' + b'{"b": "' + b"x" * 70_000 + b'"}\n'
    path.write_bytes(head + b'{"c": "' + b"y" * 140_000)  # a torn line longer than two 64 KiB blocks
    assert _torn_tail_offset(path) == len(head)
    path.write_bytes(b'{"c": "' + b"y" * 70_000)  # no newline at all: the whole file is torn
    assert _torn_tail_offset(path) == 0
    path.write_bytes(b"")
    assert _torn_tail_offset(path) is None
    path.write_bytes(b'{"a": 1}\n')
    assert _torn_tail_offset(path) is None
    path.write_bytes(b'{"a": 1}\n{')
    assert _torn_tail_offset(path) == 9


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match=r"missing.jsonl: no such file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
    p = tmp_path / "bad.jsonl"
    p.write_text('\n  \n{"x": 1}\n{"x": oops}\n')
    it = read_jsonl(p)
    assert next(it) == {"x": 1}  # blank lines are skipped
    with pytest.raises(DataError, match=r"bad.jsonl:4: invalid JSON: Expecting value$"):
        next(it)
    p.write_bytes(b'{"x": 1}\n\xff\xfe\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        list(read_jsonl(p))
    p.write_text('{"x": 1}\n"text"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object, got str$"):
        list(read_jsonl(p))
    assert repair_jsonl(tmp_path / "missing.jsonl") is False


def test_writer_writes_whole_utf8_lines_and_fsyncs_when_asked(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "deep" / "w.jsonl"  # the parent is made
    w = JsonlWriter(path)
    w.write({"é": "ü"})
    assert path.read_bytes() == '{"é": "ü"}\n'.encode()  # flushed at once, not ASCII-escaped
    assert synced == []
    w.close()
    w.close()  # closing twice is harmless
    with JsonlWriter(path, fsync=True) as w:
        w.write_many([{"a": 1}, {"b": 2}])
    assert len(synced) == 2 and list(read_jsonl(path)) == [{"é": "ü"}, {"a": 1}, {"b": 2}]


def test_atomic_writes_replace_whole_files_and_clean_up_after_a_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'  # sorted, indented, newline-ended

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises((OSError, ReasonloopError), match="disk full"):  # as it is, or wrapped in a one-line error
        atomic_write_text(target, "half")
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}  # the old file, whole
    assert os.listdir(target.parent) == ["f.json"]  # and no temporary file left behind


def test_rundir_layout_state_samples_and_metrics(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "a" / "run")
    assert sorted(p.name for p in run.path.iterdir() if not p.name.startswith(".")) == [
        "checkpoints",
        "plots",
        "samples",
    ]
    RunDir(run.path)  # reopening an existing run is fine
    assert run.state == {}
    assert run.update_state(round=1, done=["x"]) == {"round": 1, "done": ["x"]}
    assert run.update_state(round=2) == {"round": 2, "done": ["x"]} == run.state
    assert json.loads((run.path / "state.json").read_text()) == {"done": ["x"], "round": 2}
    assert run.samples_path("r1") == run.path / "samples" / "r1.jsonl"
    assert run.read_samples("r1") == []
    with run.sample_writer("r1") as w:
        w.write({"problem_id": "p"})
    assert run.read_samples("r1") == [{"problem_id": "p"}]
    monkeypatch.setattr("time.time", lambda: 123.0)
    run.log_metrics(step=1)
    run.log_metrics(step=2, loss=0.5)
    assert list(read_jsonl(run.path / "metrics.jsonl")) == [
        {"time": 123.0, "step": 1},
        {"time": 123.0, "step": 2, "loss": 0.5},
    ]
    assert run.checkpoint("round1") == run.path / "checkpoints" / "round1"


def test_rundir_config_guard(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg_path = run.path / "config.yaml"
    run.save_config({"a": 1, "b": "x"})
    assert yaml.safe_load(cfg_path.read_text()) == {"a": 1, "b": "x"}
    before = cfg_path.stat().st_ino  # an atomic rewrite would make a new file
    run.save_config({"b": "x", "a": 1})  # the same config: accepted, not rewritten
    assert cfg_path.stat().st_ino == before
    with pytest.raises(
        ConfigError, match=r"config.yaml: run was started with a different config \(keys \['a', 'b'\]\)"
    ):
        run.save_config({"a": 2, "b": "y"})
    with pytest.raises(ConfigError, match=r"keys \['b'\]"):
        run.save_config({"a": 1})  # a key dropped is a change too
    with pytest.raises(ConfigError, match=r"keys \['c'\]"):
        run.save_config({"a": 1, "b": "x", "c": 0})  # a new key without defaults
    with pytest.raises(ConfigError, match=r"keys \['c'\]"):
        run.save_config({"a": 1, "b": "x", "c": 1}, defaults={"c": 0})  # a new key away from its default
    run.save_config({"a": 1, "b": "x", "c": 0}, defaults={"c": 0, "a": 5})  # at its default: accepted and recorded
    assert yaml.safe_load(cfg_path.read_text()) == {"a": 1, "b": "x", "c": 0}
    with pytest.raises(ConfigError, match=r"keys \['a'\]"):
        run.save_config({"a": 5, "b": "x", "c": 0}, defaults={"a": 5})  # a recorded key is never "new"
    empty = RunDir(tmp_path / "empty")
    (empty.path / "config.yaml").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty.save_config({}, defaults={})  # an empty record equals an empty config


def test_torn_tail_offsets_at_block_and_file_starts(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n{")  # the newline is the file's first byte
    assert _torn_tail_offset(path) == 1
    path.write_bytes(b"\n" + b"x" * 65536)  # ... and the only byte left after one full block
    assert _torn_tail_offset(path) == 1
    path.write_bytes(b"\n{")
    with pytest.warns(UserWarning, match=r"t.jsonl:2: last line is incomplete \(torn write\); dropped$"):
        assert list(read_jsonl(path)) == []  # a blank first line, then the torn one: line 2


def test_warnings_point_at_the_caller(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"a": 1}\n{"b"')
    with pytest.warns(UserWarning) as caught:
        list(read_jsonl(path))
    with pytest.warns(UserWarning) as repaired:
        repair_jsonl(path)
    # they name the caller's line, not one inside jsonl.py (exactly the caller's file: mutation testing's
    # trampolines put a frame of their own in between)
    import reasonloop.core.jsonl as jsonl

    assert os.path.basename(caught[0].filename) != os.path.basename(jsonl.__file__)
    assert os.path.basename(repaired[0].filename) != os.path.basename(jsonl.__file__)


def test_undecodable_bytes_are_reported_with_the_decoder_reason(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\n')
    with pytest.raises(
        DataError, match=r"u.jsonl:2: invalid JSON: ('utf-8' codec can't decode byte 0xff in position 0|not UTF-8 text)"
    ):
        list(read_jsonl(path))


def test_atomic_and_appending_writes_make_missing_parents_and_write_beside_the_target(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append((src, dst)) or real_replace(src, dst))
    target = tmp_path / "a" / "b" / "f.json"
    atomic_write_text(target, "x")
    ((src, dst),) = replaced
    src = os.fspath(src)
    # the temporary file sits beside the target (same filesystem: os.replace is atomic), hidden and named after it
    assert os.path.dirname(src) == str(target.parent) and os.path.basename(src).startswith(".f.json.")
    assert src.endswith(".tmp") and dst == target and target.read_text() == "x"
    with JsonlWriter(tmp_path / "c" / "d" / "w.jsonl") as w:
        w.write({"k": 1})
    assert list(read_jsonl(tmp_path / "c" / "d" / "w.jsonl")) == [{"k": 1}]


def test_recorded_config_is_sorted_yaml_and_the_refusal_says_what_to_do(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_config({"b": 1, "a": 2})
    assert (run.path / "config.yaml").read_text() == "a: 2\nb: 1\n"
    with pytest.raises(ConfigError, match=r"\(keys \['b'\]\); use a new run directory or restore the original config$"):
        run.save_config({"b": 3, "a": 2})


def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    from .conftest import require_shared

    missing = tmp_path / "shared" / "data"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_shared(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true but the shared data is missing: expected .*shared/data"):
        require_shared(missing)
    missing.mkdir(parents=True)
    assert require_shared(missing) == missing
