"""The `quiet-star` recipe on a tiny model: it trains and reports (and its baseline too), a text file works, kill -9
then rerun matches an uninterrupted run step for step, bad input is one line before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from reasonloop.cli import main
from reasonloop.models.quiet_star import QuietStarModel
from reasonloop.recipes.quiet_star import QuietStarConfig, encode_documents, hard_spans, run_quiet_star

TINY = dict(n_train=8, n_eval=4, batch_size=4, steps=4, eval_every=2, save_every=2, n_ahead=2, lr=1e-3)


def _steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    from reasonloop.models import save_model
    from reasonloop.models.nano import build_tokenizer
    from tests.conftest import tiny_model

    tok = build_tokenizer()
    return save_model(tiny_model("llama", tok), tok, tmp_path_factory.mktemp("qs") / "model")


def test_recipe_trains_thoughts_and_reports(tmp_path, tiny_llama_dir):
    res = run_quiet_star(QuietStarConfig(model=str(tiny_llama_dir), **TINY), tmp_path / "run", log=lambda *_: None)
    assert _steps(tmp_path / "run") == [0, 1, 2, 3, 4]
    records = res["records"]
    assert [r["step"] for r in records if "held_out_nll" in r] == [0, 2, 4]
    assert records[0]["held_out_nll"] == pytest.approx(records[0]["held_out_nll_thought"], abs=1e-5)  # w = 0 at start
    assert records[0]["held_out_hard_tokens"] > 0
    # step 1 starts at w = 0, where no thought changes the prediction: every reward is 0; then thoughts differ
    assert records[1]["reward_mean_abs"] == 0 and all(r["reward_positive"] > 0 for r in records[2:])
    model = QuietStarModel.from_pretrained(res["model"])  # thought tokens and mixing head saved
    assert model.mixing_head.net[-1].weight.abs().sum() > 0  # the head left zero: it learned
    report = (tmp_path / "run" / "report.md").read_text()
    assert "# Quiet-STaR on the worked solutions of `arith`" in report and "| 4 |" in report
    for plot in ("loss.png", "held_out_nll.png"):
        assert (tmp_path / "run" / "plots" / plot).stat().st_size > 1000
    base = run_quiet_star(
        QuietStarConfig(model=str(tiny_llama_dir), **{**TINY, "thoughts": False, "steps": 2, "eval_every": 0}),
        tmp_path / "base", log=lambda *_: None,
    )  # fmt: skip
    assert "reinforce_loss" not in base["records"][1] and base["final"]["nll"] != res["final"]["nll"]
    assert "# Baseline (no thoughts)" in (tmp_path / "base" / "report.md").read_text()


def test_text_file_documents_and_hard_tokens_through_the_command(tmp_path, tiny_llama_dir, capsys):
    data = tmp_path / "docs.txt"
    data.write_text("\n\n".join(f"Q: {a}+{b}\n{a}+{b}={a + b}\nA: {a + b}" for a in range(4) for b in range(4)))
    sets = [f"model={tiny_llama_dir}", f"data={data}", "steps=1", "n_ahead=2", "batch_size=4", "n_eval=6"]
    assert main(["quiet-star", "--run-dir", str(tmp_path / "run"), *sum((["--set", x] for x in sets), [])]) == 0
    assert "report at" in capsys.readouterr().err
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["final"]["hard_tokens"] == 6 * 2  # six held-out documents, one-digit result and answer each
    from reasonloop.models.nano import build_tokenizer

    _, mask, hard = encode_documents(build_tokenizer(), ["Q: 2+3\n2+3=5\nA: 5"], 64)
    assert hard[0].nonzero().flatten().tolist() == [11, 16] and mask.sum() == 18  # 17 characters and EOS
    assert hard_spans("9*3=27\nA: 27") == [(4, 6), (10, 12)]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reasonloop.recipes import quiet_star as qs
    from reasonloop.core import load_config
    calls = {"n": 0}
    orig = qs.Trainer.step
    def step(self, *a, **k):  # die inside step 4 (its update done, not logged); steps 1-2 are saved, 3 only logged
        out = orig(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    qs.Trainer.step = step
    qs.run_quiet_star(load_config(qs.QuietStarConfig, sys.argv[1]), sys.argv[2], log=lambda *_: None)
    """
)


def test_kill_9_then_rerun_matches_an_uninterrupted_run(tmp_path, tiny_llama_dir):
    import yaml

    from reasonloop.core import load_config

    config = tmp_path / "qs.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval_every": 0, "model": str(tiny_llama_dir)}))
    whole = run_quiet_star(load_config(QuietStarConfig, config), tmp_path / "whole", log=lambda *_: None)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(config), str(tmp_path / "killed")], env=env)
    assert proc.returncode == -9
    assert _steps(tmp_path / "killed") == [0, 1, 2, 3]  # step 3 was logged, never checkpointed
    resumed = run_quiet_star(load_config(QuietStarConfig, config), tmp_path / "killed", log=lambda *_: None)
    assert _steps(tmp_path / "killed") == [0, 1, 2, 3, 4]  # every step exactly once
    for a, b in zip(whole["records"], resumed["records"]):
        assert a["step"] == b["step"]
        assert a.get("loss") == pytest.approx(b.get("loss"), abs=1e-6)
        assert a.get("held_out_nll") == pytest.approx(b.get("held_out_nll"), abs=1e-6)
    m1, m2 = QuietStarModel.from_pretrained(whole["model"]), QuietStarModel.from_pretrained(resumed["model"])
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("n_thoughts=1", "key 'n_thoughts' must be >= 2"),
        ("n_ahaed=3", "unknown key 'n_ahaed' (did you mean 'n_ahead'?)"),
        ("eval_data=x.txt", "eval_data needs data"),
        ("data=/no/such/file.txt", "/no/such/file.txt: no such file"),
        ("base_weight=2", "key 'base_weight' must be in [0, 1]"),
    ],
)
def test_bad_config_is_one_line_before_anything_runs(override, message, tmp_path, capsys, tiny_llama_dir):
    code = main(["quiet-star", "--run-dir", str(tmp_path / "r"), "--set", f"model={tiny_llama_dir}", "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
