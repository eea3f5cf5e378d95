"""V-STaR on a tiny model: STaR, a DPO verifier from all rounds' samples, vote and best-of-n curves."""

import json

import pytest

from reasonloop.core import read_jsonl
from reasonloop.recipes import VStarConfig, run_vstar
from reasonloop.recipes.common import draw_problems
from reasonloop.verifiers import DpoVerifier

from .conftest import top_reward, vote_credit


def test_vstar_runs_reports_and_resumes(tmp_path, solver_tiny_dir, capsys):
    cfg = VStarConfig(
        model=str(solver_tiny_dir), n_train=12, n_eval=6, rounds=1, samples=4, max_new_tokens=24, epochs=1,
        batch_size=4, best_of=4, verifier_epochs=1, verifier_batch_size=4,
    )  # fmt: skip
    res = run_vstar(cfg, tmp_path / "run", log=lambda s: None)
    assert res["pairs"] > 0  # the solver gets some problems right and some wrong
    run = tmp_path / "run"
    # the curves, recomputed from the held-out samples file: 6 problems x 4 samples, problem-major
    held = list(read_jsonl(run / "samples" / "heldout.jsonl"))
    groups = [held[i : i + 4] for i in range(0, 24, 4)]
    assert len(held) == 24 and all(len({r["problem_id"] for r in g}) == 1 for g in groups)
    vote = [sum(vote_credit(g[:n]) for g in groups) / 6 for n in range(1, 5)]
    assert res["curves"]["majority_vote"] == pytest.approx(vote) and res["maj@4"] == pytest.approx(vote[-1])
    first = sum(g[0]["reward"] for g in groups) / 6  # one sample: every rule takes it
    assert vote[0] == pytest.approx(first) and res["curves"]["verifier_best_of_n"][0] == pytest.approx(first)
    # best-of-n with the trained verifier's scores (policy against its starting point, the final generator)
    verifier = DpoVerifier.from_dirs(run / "verifier" / "policy", run / "star" / "checkpoints" / "round1")
    task, _, test = draw_problems(cfg)
    scores = verifier.score_completions([p.prompt for p in test for _ in range(4)], [r["text"] for r in held])
    best = [sum(top_reward(g[:n], scores[4 * i : 4 * i + n]) for i, g in enumerate(groups)) / 6 for n in range(1, 5)]
    assert res["curves"]["verifier_best_of_n"] == pytest.approx(best)
    assert res["verifier_best_of_4"] == pytest.approx(best[-1])
    pos = [s for s, r in zip(scores, held) if r["reward"] == 1.0]
    neg = [s for s, r in zip(scores, held) if r["reward"] != 1.0]
    if pos and neg:  # AUROC: the share of (right, wrong) pairs the verifier orders right, ties half
        wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
        assert res["verifier_auroc"] == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-9)
    assert (run / "plots" / "accuracy_vs_n.png").stat().st_size > 0
    assert "verifier best-of-4" in (run / "report.md").read_text()
    assert json.loads((run / "results.json").read_text())["pairs"] == res["pairs"]
    # a rerun reuses everything: same samples, same verifier, same numbers
    assert run_vstar(cfg, run, log=lambda s: None)["curves"] == res["curves"]


def test_vstar_cli(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main

    sets = [f"model={solver_tiny_dir}", "n_train=8", "n_eval=4", "rounds=1", "samples=2", "max_new_tokens=24"]
    sets += ["epochs=1", "batch_size=4", "best_of=2", "verifier_epochs=1", "verifier_batch_size=4"]
    args = ["vstar", "--run-dir", str(tmp_path / "run")] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    assert "verifier best-of-2" in capsys.readouterr().err


def test_vstar_arith_example_config_loads():
    """The V-STaR-on-arith story (the demo before self-play) is a shipped config."""
    from pathlib import Path

    from reasonloop.core import load_config

    cfg = load_config(VStarConfig, Path(__file__).resolve().parents[1] / "examples" / "vstar" / "arith.yaml")
    assert (cfg.task, cfg.rounds, cfg.samples, cfg.best_of, cfg.continue_training) == ("arith", 5, 4, 16, True)


def test_line_plots_draw_every_series(tmp_path, monkeypatch):
    """The verifier report plots seven series; an earlier version silently dropped all past the fourth."""
    import matplotlib.axes

    from reasonloop.eval import save_line_plot

    drawn = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(k["label"]) or original(self, *a, **k)
    )
    series = {f"s{i}": [float(i), float(i + 1)] for i in range(7)}
    save_line_plot(tmp_path / "p.png", [1, 2], series, xlabel="x", ylabel="y", title="t")
    assert drawn == list(series) and (tmp_path / "p.png").stat().st_size > 0
