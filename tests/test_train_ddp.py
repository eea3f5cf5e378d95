"""The training loop under `accelerate launch` with 2 CPU processes (DDP over gloo) against 1 process.

One process with grad_accum=2 and two processes with grad_accum=1 read the same micro-batches per step (the
same global batch, the same order), so their loss curves must agree up to the order of floating-point sums:
we allow 1e-4 on each step's loss (measured: see docs/multi-process.md). The two-process run is killed after
its step-10 checkpoint and resumed, and only the main process may write metrics and checkpoints.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_model
from .ddp_worker import config, make_batches, make_loss

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate" / "ddp-2proc.yaml"),
        "--main_process_port", str(free_port()),
        str(ROOT / "tests" / "ddp_worker.py"), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_processes_follow_the_one_process_loss_curve_through_a_crash(tmp_path, char_tokenizer):
    from reasonloop.models import load_model, save_model
    from reasonloop.train.loop import train_loop

    model_dir = save_model(tiny_model("llama", char_tokenizer), char_tokenizer, tmp_path / "model")

    model, tokenizer = load_model(model_dir)
    one = train_loop(model, tokenizer, make_batches(tokenizer), make_loss(2), config(STEPS, grad_accum=2))["history"]

    out = tmp_path / "ddp"
    crashed = launch(str(model_dir), str(out), str(STEPS), "1", "13")
    assert crashed.returncode != 0 and "planned crash at step 13" in crashed.stderr + crashed.stdout
    assert (out / "ckpt" / "last" / "trainer_state.pt").exists()
    done = launch(str(model_dir), str(out), str(STEPS), "1")
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((out / "history.json").read_text())

    # step 5 read the poisoned micro-batch: skipped by both, on one process of the two
    assert [h["step"] for h in one] == [h["step"] for h in two] == [s for s in range(1, STEPS + 1) if s != 5]
    for a, b in zip(one, two):
        assert b["sft_nll"] == pytest.approx(a["sft_nll"], abs=1e-4), (a["step"], a["sft_nll"], b["sft_nll"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3, abs=1e-4)
    assert one[-1]["sft_nll"] < 0.5 * one[0]["sft_nll"]  # it learned: the curves compared are not flat

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["rank"] for r in logged} == {0}  # process 1 never wrote
    # the first launch logged steps 1-12 (5 as skipped) and died in 13; the second resumed from step 10
    assert [r["step"] for r in logged] == [*range(1, 13), *range(11, STEPS + 1)]
    assert [r["step"] for r in logged if "skipped" in r] == [5]

    saved, _ = load_model(out / "ckpt" / "last")
    for (name, p), q in zip(saved.named_parameters(), model.parameters()):
        assert p.detach().allclose(q.detach(), atol=1e-4), name


@pytest.mark.parametrize(
    "name, kind", [("ddp-2proc", "MULTI_GPU"), ("fsdp-4gpu", "FSDP"), ("deepspeed-zero2-4gpu", "DEEPSPEED")]
)
def test_documented_accelerate_configs_are_valid(name, kind):
    """The FSDP and DeepSpeed files are not run here (no GPU); accelerate still reads them (it refuses unknown
    keys), so a typo in the documented configs fails CI."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "examples" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.num_processes >= 2


def test_a_checkpoint_without_optimiser_state_is_refused_in_one_line(tmp_path, char_tokenizer):
    """What FSDP/DeepSpeed write (weights, no sharded optimiser state) cannot be resumed exactly: said, not
    silently resumed with a fresh optimiser."""
    import torch

    from reasonloop.train.loop import TrainConfig, Trainer, TrainingError

    trainer = Trainer(tiny_model("llama", char_tokenizer), char_tokenizer, TrainConfig(steps=2), out_dir=tmp_path)
    trainer.save()
    state = torch.load(tmp_path / "last" / "trainer_state.pt", weights_only=False)
    assert state["optimizer"] is not None  # one process: saved
    torch.save({**state, "optimizer": None}, tmp_path / "last" / "trainer_state.pt")
    with pytest.raises(TrainingError, match="cannot resume exactly") as err:
        Trainer(tiny_model("llama", char_tokenizer), char_tokenizer, TrainConfig(steps=2), out_dir=tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path / "last") in str(err.value)
