"""Metrics sinks: a recipe's metrics.jsonl records, read back from TensorBoard's event files and from W&B's
offline run file, must be the same numbers."""

from __future__ import annotations

import json
import sys

import pytest

from reasonloop.core import ConfigError, read_jsonl
from reasonloop.core.rundir import RunDir
from reasonloop.recipes import run_star

from .test_star import tiny_cfg


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} read with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_history(run_file) -> list[dict]:
    """The `history` records (one per `log` call) of a W&B run file: W&B's protobuf `Record`s framed as a LevelDB
    log (a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte header: crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            if rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                out.append({k: v for k, v in items.items() if not k.startswith("_")})
    return out


def numbers(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "time"}


def test_star_metrics_go_to_tensorboard_and_wandb_offline(tmp_path, solver_tiny_dir, monkeypatch, capsys):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login: W&B is not configured, so it goes offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    run_star(tiny_cfg(solver_tiny_dir, rounds=1, metrics_sinks=("tensorboard", "wandb")), run, log=lambda s: None)
    assert "logging offline to" in capsys.readouterr().err
    records = [numbers(r) for r in read_jsonl(run / "metrics.jsonl")]
    assert [r["round"] for r in records] == [0, 1]  # the base, then round 1

    tb = tensorboard_scalars(run / "tensorboard")
    expected_tags = {k for r in records for k in r}
    assert set(tb) == expected_tags  # every numeric key, nothing else
    for tag, points in tb.items():
        want = [(int(r["round"]), r[tag]) for r in records if tag in r]
        assert [s for s, _ in points] == [s for s, _ in want], tag
        assert [v for _, v in points] == pytest.approx([v for _, v in want], rel=1e-6), tag  # float32 in events

    (run_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    assert wandb_history(run_file) == records

    # sinks are not part of the run: the same run resumed without them is not refused
    assert run_star(tiny_cfg(solver_tiny_dir, rounds=1), run, log=lambda s: None)["rounds"]
    assert "metrics_sinks" not in (run / "config.yaml").read_text()


def test_an_unknown_sink_or_a_missing_package_is_one_line(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match="metrics_sinks: unknown sink 'mlflow' \\(known: tensorboard, wandb\\)"):
        run.open_sinks(["mlflow"], {})
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match="needs the tensorboard package: pip install 'reasonloop\\[tensorboard\\]'"):
        run.open_sinks(["tensorboard"], {})
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match="'wandb' needs the wandb package: pip install wandb"):
        run.open_sinks(["wandb"], {})
    run.log_metrics(step=1, loss=0.5)  # no sink: metrics.jsonl only
    assert [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0.5]
