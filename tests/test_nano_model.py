"""The nano base model built with the default config: imperfect on purpose (slow: trains for about 1.5 minutes)."""

import json

import pytest

from reasonloop.cli import main


@pytest.mark.slow
def test_default_nano_base_is_imperfect_on_purpose(tmp_path):
    out = tmp_path / "nano"
    assert main(["--threads", "2", "init", "--out", str(out), "--eval-problems", "200"]) == 0
    ev = json.loads((out / "eval_arith.json").read_text())
    assert 0.20 <= ev["greedy_accuracy"] <= 0.50, ev["greedy_accuracy"]
    assert ev["pass@16"] >= 2 * ev["greedy_accuracy"], (ev["pass@16"], ev["greedy_accuracy"])
    training = json.loads((out / "nano_training.json").read_text())
    assert training["val_greedy_accuracy"] >= training["config"]["target_accuracy"]
