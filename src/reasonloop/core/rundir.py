"""A run directory: everything one recipe or command did, resumable after a kill.

Layout::

    RUN/config.yaml      the configuration the run was started with
    RUN/state.json       what is finished (written atomically)
    RUN/samples/*.jsonl  append-only samples
    RUN/checkpoints/     saved models
    RUN/metrics.jsonl    one JSON object per logged step (also sent to TensorBoard / W&B: `core.sinks`)
    RUN/report.md, RUN/plots/
    RUN/.lock            held by the one process writing the run (its pid inside); see `core.lock`
"""

from __future__ import annotations

import json
import os
import shutil
import time
import weakref
from pathlib import Path
from typing import Any

import yaml

from reasonloop.core.jsonl import JsonlWriter, atomic_write_json, atomic_write_text, read_jsonl
from reasonloop.core.lock import WriterLock
from reasonloop.core.types import ConfigError


class RunDir:
    """A run directory, locked for this process while the object lives (a second process gets `LockedError`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.path / ".lock", f"run directory {self.path}").acquire()
        weakref.finalize(self, self._lock.release)
        for sub in ("samples", "checkpoints", "plots"):
            (self.path / sub).mkdir(exist_ok=True)
        self._drop_temporaries()
        self.sinks: list = []  # where `log_metrics` also writes (`open_sinks`); closed with the run
        weakref.finalize(self, _close_sinks, self.sinks)

    def _drop_temporaries(self) -> None:
        """Remove what a writer killed mid-write left: `.<name>.*.tmp` files of atomic writes and `<dir>.tmp`
        checkpoint directories. Safe: this process holds the run's lock, so no one else is writing them."""
        for tmp in [*self.path.glob(".*.tmp"), *self.path.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)
        for tmp in self.path.glob("checkpoints/**/*.tmp"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        """Close the metrics sinks and let another process write this run (the lock is also released when the
        object is collected or the process ends)."""
        _close_sinks(self.sinks)
        self._lock.release()

    # --- config ---------------------------------------------------------------
    def save_config(self, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        """Record the config; a rerun with a different config is refused (it would mix two runs).

        A key the recorded config lacks is accepted when the rerun leaves it at
        its default (`defaults`): a newer version added an option, and the run
        was made with the behaviour that default keeps. The record gains the key.
        """
        cfg_path = self.path / "config.yaml"
        if cfg_path.exists():
            old = yaml.safe_load(cfg_path.read_text()) or {}
            added = {k for k in set(config) - set(old) if defaults and k in defaults and config[k] == defaults[k]}
            changed = sorted(k for k in (set(old) | set(config)) - added if old.get(k) != config.get(k))
            if changed:
                raise ConfigError(
                    f"{cfg_path}: run was started with a different config (keys {changed}); "
                    "use a new run directory or restore the original config"
                )
            if not added:
                return
        atomic_write_text(cfg_path, yaml.safe_dump(config, sort_keys=True))

    # --- state ----------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        p = self.path / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.state
        state.update(changes)
        atomic_write_json(self.path / "state.json", state)
        return state

    # --- samples and metrics --------------------------------------------------
    def samples_path(self, name: str) -> Path:
        return self.path / "samples" / f"{name}.jsonl"

    def sample_writer(self, name: str) -> JsonlWriter:
        return JsonlWriter(self.samples_path(name))

    def read_samples(self, name: str) -> list[dict[str, Any]]:
        p = self.samples_path(name)
        return list(read_jsonl(p)) if p.exists() else []

    def open_sinks(self, names: tuple[str, ...] | list[str], config: dict[str, Any]) -> None:
        """Send every later `log_metrics` record to these sinks too (`core.sinks`: tensorboard, wandb)."""
        from reasonloop.core.sinks import open_sinks

        _close_sinks(self.sinks)
        self.sinks.extend(open_sinks(names, self.path, config))

    def log_metrics(self, **metrics: Any) -> None:
        """One line of `metrics.jsonl`, and the same record to each open sink."""
        record = {"time": time.time(), **metrics}
        with JsonlWriter(self.path / "metrics.jsonl") as w:
            w.write(record)
        for sink in self.sinks:
            sink.log(record)

    def checkpoint(self, name: str) -> Path:
        return self.path / "checkpoints" / name


def _close_sinks(sinks: list) -> None:
    """Close and forget each sink (a W&B run is finished: its file is complete only then)."""
    while sinks:
        sinks.pop(0).close()
