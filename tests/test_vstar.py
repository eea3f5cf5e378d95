"""V-STaR on a tiny model: STaR, a DPO verifier from all rounds' samples, vote and best-of-n curves."""

import json

from reasonloop.recipes import VStarConfig, run_vstar


def test_vstar_runs_reports_and_resumes(tmp_path, solver_tiny_dir, capsys):
    cfg = VStarConfig(
        model=str(solver_tiny_dir), n_train=12, n_eval=6, rounds=1, samples=4, max_new_tokens=24, epochs=1,
        batch_size=4, best_of=4, verifier_epochs=1, verifier_batch_size=4,
    )  # fmt: skip
    res = run_vstar(cfg, tmp_path / "run", log=lambda s: None)
    assert res["pairs"] > 0  # the solver gets some problems right and some wrong
    for curve in res["curves"].values():
        assert len(curve) == 4 and all(0 <= a <= 1 for a in curve)
    assert res["maj@4"] == res["curves"]["majority_vote"][-1]
    run = tmp_path / "run"
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


def test_demo_cli_prints_table_and_writes_report_with_both_plots(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main
    from reasonloop.recipes import DEMO_DEFAULTS, demo_config

    assert demo_config().rounds == DEMO_DEFAULTS["rounds"] and demo_config().continue_training
    assert demo_config(overrides=["rounds=2"]).rounds == 2
    sets = [f"model={solver_tiny_dir}", "n_train=8", "n_eval=4", "rounds=2", "samples=2", "max_new_tokens=24"]
    sets += ["epochs=1", "batch_size=4", "best_of=4", "verifier_epochs=1", "verifier_batch_size=4"]
    run = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run)] + [x for s in sets for x in ("--set", s)]) == 0
    out = capsys.readouterr()
    assert "STaR greedy accuracy by round" in out.err and "verifier best-of-4" in out.err
    report = (run / "report.md").read_text()
    for plot in ("star/plots/accuracy_per_round.png", "plots/accuracy_vs_n.png"):
        assert plot in report and (run / plot).stat().st_size > 0
    assert "AUROC" in report
    # a config typo is one line naming the key, before anything runs
    assert main(["demo", "--run-dir", str(tmp_path / "x"), "--set", "roundz=3"]) == 2
    assert "roundz" in capsys.readouterr().err and not (tmp_path / "x").exists()


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
