"""Where a run's metrics go besides `RUN/metrics.jsonl`: TensorBoard and Weights & Biases.

A recipe's `metrics_sinks` key names them (`metrics_sinks: [tensorboard, wandb]`,
or `--set metrics_sinks=tensorboard,wandb`); every record the recipe writes to
`metrics.jsonl` goes to each sink too, the same keys and values. Each sink's
package is imported only when the sink is named; a missing one is a one-line
error naming the package to install.

- `tensorboard`: event files in `RUN/tensorboard/` (`tensorboard --logdir
  RUN/tensorboard`), one scalar per numeric key, at the record's `step` (or
  `round`; else the record's position in this process's log). Needs the
  `tensorboard` extra.
- `wandb`: a W&B run with the run directory's config, files under `RUN/wandb/`,
  its id derived from the run directory, so a resumed recipe continues the same
  W&B run. Needs `pip install wandb`. Without credentials (no `WANDB_API_KEY`,
  no `wandb login`) and no `WANDB_MODE`, it logs offline, says so in one line,
  and never waits on the network: `wandb sync RUN/wandb/offline-run-*` uploads
  it later. `WANDB_PROJECT` names the project (default `reasonloop`).

Sinks are not part of a run's identity: a rerun may add or drop them (the key is
left out of `config.yaml`), and they see only what is logged from then on.
"""

from __future__ import annotations

import hashlib
import math
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from reasonloop.core.types import ConfigError

SINKS = ("tensorboard", "wandb")


class MetricsSink(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The record's finite numbers, nested mappings flattened with '/'; text and lists are left out.

    >>> scalars({"step": 3, "loss": 0.5, "note": "x", "ok": True, "eval": {"acc": 1}, "bad": float("nan")})
    {'step': 3.0, 'loss': 0.5, 'ok': 1.0, 'eval/acc': 1.0}
    """
    out: dict[str, float] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


class TensorBoardSink:
    """Scalars to `log_dir` through torch's `SummaryWriter` (flushed at every record: a kill loses nothing)."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "metrics_sinks: 'tensorboard' needs the tensorboard package: pip install 'reasonloop[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.logged = 0

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        step = int(values.get("step", values.get("round", self.logged)))
        for key, value in values.items():
            if key not in ("step", "time"):
                self.writer.add_scalar(key, value, global_step=step, walltime=record.get("time"))
        self.writer.flush()
        self.logged += 1

    def close(self) -> None:
        self.writer.close()


def _wandb_configured() -> bool:
    """Whether W&B has been told where to log: a mode, an API key, or a `wandb login` in ~/.netrc."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbSink:
    """One W&B run per run directory (resumed by id); offline unless W&B is configured (see the module docstring)."""

    def __init__(self, run_path: Path, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ConfigError("metrics_sinks: 'wandb' needs the wandb package: pip install wandb") from None
        mode = None
        if not _wandb_configured():
            mode = "offline"
            print(
                f"wandb: no API key and no WANDB_MODE: logging offline to {run_path / 'wandb'} "
                "(upload later with `wandb sync`)",
                file=sys.stderr,
            )
        run_id = hashlib.sha1(str(run_path.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "reasonloop"), name=run_path.name, id=run_id, resume="allow",
            dir=str(run_path), config=config, mode=mode,
        )  # fmt: skip

    def log(self, record: dict[str, Any]) -> None:
        # no explicit step: a resumed recipe may log a step again, which W&B would drop; `step` is a field instead
        self.run.log({k: v for k, v in scalars(record).items() if k != "time"})

    def close(self) -> None:
        self.run.finish()


def open_sinks(names: tuple[str, ...] | list[str], run_path: Path, config: dict[str, Any]) -> list[MetricsSink]:
    """The sinks `names` asks for, in that order (see the module docstring); an unknown name is a one-line error."""
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise ConfigError(f"metrics_sinks: unknown sink '{unknown[0]}' (known: {', '.join(SINKS)})")
    sinks: list[MetricsSink] = []
    for name in dict.fromkeys(names):  # each once, in order
        if name == "tensorboard":
            sinks.append(TensorBoardSink(run_path / "tensorboard"))
        else:
            sinks.append(WandbSink(run_path, config))
    return sinks
