"""Killed mid-batch and rerun, `sample` and a STaR round end exactly where an uninterrupted run does (issue 16).

Each interrupted run is a real process killed with SIGKILL several times, at points chosen to land inside a
sampling batch: while a batch is being decoded (the k-th sampled token step of that process), or after the k-th
line of a file was written when k is not a whole batch (a batch half on disk). The rerun after the last kill
must leave the very files an uninterrupted run with the same seed leaves, byte for byte, and for STaR the same
fine-tuned model and held-out accuracy. Every process, the uninterrupted one included, uses 2 torch threads:
float rounding (the logprobs in the file) depends on the thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from reasonloop.cli import main
from reasonloop.models import load_model
from reasonloop.recipes import StarConfig, run_star

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Runs `python KILLER MODE FILTER K -- what...` and SIGKILLs itself at the K-th event of MODE:
#   step: the K-th decoding step of a sampling (temperature > 0) batch, i.e. inside a batch being decoded;
#   line: right after the K-th line written to a JSONL file whose name contains FILTER.
# `what` is `cli ARGV...` (the reasonloop command) or `star MODEL RUN_DIR` (run_star with STAR_CFG below).
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import reasonloop.engine.hf as hf
    from reasonloop.core import jsonl
    torch.set_num_threads(2)
    mode, name_filter, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    what = sys.argv[5:]
    count = {"n": 0}
    def bump():
        count["n"] += 1
        if count["n"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    if mode == "step":
        sample_tokens = hf._sample_tokens
        def counted(logits, temperature, top_p, u):
            if temperature > 0:
                bump()
            return sample_tokens(logits, temperature, top_p, u)
        hf._sample_tokens = counted
    else:
        write = jsonl.JsonlWriter.write
        def counted_write(self, record):
            write(self, record)
            if name_filter in self.path.name:
                bump()
        jsonl.JsonlWriter.write = counted_write
    if what[0] == "cli":
        from reasonloop.cli import main
        main(what[1:])
    else:
        from reasonloop.recipes import StarConfig, run_star
        run_star(StarConfig(model=what[1], **STAR_CFG), what[2], log=lambda s: None)
    """
)
# 12 problems x 4 samples, 8 rows (2 problems) per batch: 6 batches, a batch is 8 lines of the samples file
STAR_CFG = dict(n_train=12, n_eval=8, rounds=1, samples=4, max_new_tokens=24, epochs=2, batch_size=4, max_batch=8)


def _killed(tmp_path: Path, mode: str, name_filter: str, at: int, what: list[str]) -> None:
    script = tmp_path / "killer.py"
    script.write_text(f"STAR_CFG = {STAR_CFG!r}\n{KILLER}")
    cmd = [sys.executable, str(script), mode, name_filter, str(at), "--", *what]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, stderr=subprocess.DEVNULL)
    assert proc.returncode == -signal.SIGKILL, f"{mode} {at}: the run ended ({proc.returncode}) before its kill"


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sample_killed_mid_batch_three_times_writes_the_uninterrupted_file(tmp_path, solver_tiny_dir):
    def argv(out: Path) -> list[str]:
        return ["--threads", "2", "sample", "--model", str(solver_tiny_dir), "--num-problems", "12", "--n", "4",
                "--max-new-tokens", "24", "--max-batch", "8", "--seed", "3", "--output", str(out)]  # fmt: skip

    whole, killed = tmp_path / "whole.jsonl", tmp_path / "killed.jsonl"
    assert main(argv(whole)) == 0
    assert _lines(whole) == 48
    seen = []
    for mode, at in [("line", 5), ("step", 30), ("line", 14)]:
        _killed(tmp_path, mode, "killed", at, ["cli", *argv(killed)])
        seen.append(_lines(killed))
    # killed with 5 lines of batch 1 written; then while decoding (batch 1 redone, whole, and batch 2 under way, as
    # one batch takes at most 24 steps); then 14 lines later, with 6 of batch 3's 8 lines written
    assert seen == [5, 8, 22]
    assert main(argv(killed)) == 0
    assert killed.read_bytes() == whole.read_bytes()


def _star_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "samples").glob("*.jsonl"))}


def test_star_round_killed_mid_batch_four_times_ends_as_the_uninterrupted_run(tmp_path, solver_tiny_dir):
    whole = run_star(StarConfig(model=str(solver_tiny_dir), **STAR_CFG), tmp_path / "whole", log=lambda s: None)
    plain, hint = (tmp_path / "killed" / "samples" / f"round1-{k}.jsonl" for k in ("plain", "hint"))
    n_hint = _lines(tmp_path / "whole" / "samples" / "round1-hint.jsonl")
    assert n_hint >= 4, "some problem needs rationalising, so the hinted pass has a batch to kill"
    seen = []
    for mode, name_filter, at in [("line", "plain", 3), ("step", "", 40), ("line", "plain", 14), ("line", "hint", 3)]:
        _killed(tmp_path, mode, name_filter, at, ["star", str(solver_tiny_dir), str(tmp_path / "killed")])
        seen.append((_lines(plain), _lines(hint)))
    # 3 lines of batch 1; while decoding batch 2 (batch 1 redone first, at most 24 steps); 14 lines later (batch 2
    # redone, 8, and 6 of batch 3's); during the hinted pass, 3 lines into its first batch (4 or 8 lines)
    assert seen == [(3, 0), (8, 0), (22, 0), (48, 3)]
    resumed = run_star(StarConfig(model=str(solver_tiny_dir), **STAR_CFG), tmp_path / "killed", log=lambda s: None)
    assert _star_files(tmp_path / "killed") == _star_files(tmp_path / "whole")
    assert resumed["rounds"] == whole["rounds"]  # held-out accuracy and the counts of rationales used
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert state["rounds"][0]["held_out_accuracy"] == whole["final_accuracy"]
    m1, _ = load_model(tmp_path / "whole" / "checkpoints" / "round1")
    m2, _ = load_model(tmp_path / "killed" / "checkpoints" / "round1")
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)
