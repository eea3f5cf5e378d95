"""Self-play on a tiny model: rounds end to end, the union of rounds, kill -9 in every stage, config errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from reasonloop.core import Sample, load_config, read_jsonl
from reasonloop.recipes.selfplay import SelfPlayConfig, kept_traces, run_selfplay, verifier_data

TINY = dict(
    task="arith", n_train=10, n_eval=6, rounds=2, budget=4, best_of=4, eval_budgets="2,4", max_new_tokens=24,
    epochs=1, batch_size=4, verifier_epochs=1, verifier_per_problem=2, check_facts=64,
)  # fmt: skip


def _data(run, r):
    return json.loads((run / f"round{r}" / "verifier_data.json").read_text())


def test_two_rounds_end_to_end(tmp_path, solver_tiny_dir, monkeypatch):
    from reasonloop.recipes import selfplay

    starts = []
    real_train = selfplay.train_value_verifier

    def spy(start, *args, **kw):
        starts.append(str(start))
        return real_train(start, *args, **kw)

    monkeypatch.setattr(selfplay, "train_value_verifier", spy)
    cfg = SelfPlayConfig(model=str(solver_tiny_dir), **TINY, verifier_init="previous", keep_order="verifier")
    res = run_selfplay(cfg, tmp_path / "run", log=lambda *_: None)
    run = tmp_path / "run"
    # V(1) starts from G(1), V(2) from V(1)'s value model
    assert starts == [str(run / "checkpoints" / "round1"), str(run / "round1" / "verifier" / "verifier")]
    records = res["records"]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert "verifier_curve" not in records[0]  # the base has no verifier yet
    for r in (1, 2):
        search = [Sample.from_dict(d) for d in read_jsonl(run / "samples" / f"round{r}-search.jsonl")]
        assert len(search) == 10 * 4  # budget 4 per training problem, each once
        assert len({(s.problem_id, s.meta["sample_index"]) for s in search}) == 40
        # the generator learned from the verified traces: correct ones, at most keep_per_problem per problem
        solved = {s.problem_id for s in search if s.reward == 1.0}
        assert records[r]["problems_kept"] == len(solved) and records[r]["train_solved"] == len(solved) / 10
        # the verifier's data of this round: at most 2 per problem, right first where there is one
        data = _data(run, r)
        assert all(sum(d["problem_id"] == p for d in data) <= 2 for p in {d["problem_id"] for d in data})
        assert (run / f"round{r}" / "verifier" / "reasonloop_verifier.json").exists()
    # round 2's search was scored by round 1's verifier, and the union grows: round 2 learns from both rounds
    scores = json.loads((run / "round2" / "search_scores.json").read_text())
    assert len(scores["scores"]) == 40 and scores["tokens"] > 0 and records[2]["tokens_search_verifier"] > 0
    assert records[1]["verifier_examples"] == len(_data(run, 1))
    assert records[2]["verifier_examples"] == len(_data(run, 1)) + len(_data(run, 2))
    # held-out measures, recomputed from the samples file: pass@4 = share of problems with a right sample
    held = list(read_jsonl(run / "samples" / "round2-heldout.jsonl"))
    solved_held = {h["problem_id"] for h in held if h["reward"] == 1.0}
    assert records[2]["pass@4"] == pytest.approx(len(solved_held) / 6)
    assert records[2]["search"]["4"]["accuracy"] == records[2]["verifier_curve"][3]  # best_of_n at budget 4
    assert "auroc_within_previous" not in records[1] and "auroc_within_previous" in records[2]
    report = (run / "report.md").read_text()
    assert "# Self-play on `arith`" in report and "| 2 |" in report and "verifier best-of-n" in report
    assert "the same on G(r-1)'s samples" in report
    for plot in ("generator.png", "verifier.png", "best_of_n.png"):
        assert (run / "plots" / plot).stat().st_size > 1000
    # a rerun does nothing new and returns the same records
    assert run_selfplay(cfg, run, log=lambda *_: None)["records"] == json.loads((run / "results.json").read_text())


def test_tree_search_rl_update_prm_and_frozen_memory(tmp_path, solver_tiny_dir):
    """The other branches in one run: beam search from round 2, the RL update with verifier step rewards,
    a PRM from Monte-Carlo values, frozen verifier memory."""
    cfg = SelfPlayConfig(
        model=str(solver_tiny_dir), **{**TINY, "n_train": 6, "n_eval": 4}, search="beam", update="rl", rl_steps=1,
        verifier="prm", mc_k=2, verifier_memory="frozen",
    )  # fmt: skip
    records = run_selfplay(cfg, tmp_path / "run", log=lambda *_: None)["records"]
    run = tmp_path / "run"
    tree = list(read_jsonl(run / "samples" / "round2-search.jsonl"))  # one line per problem: what beam search kept
    assert [t["problem_id"] for t in tree] == [json.loads(line)["problem_id"] for line in open(run / "samples" /
            "round2-search.jsonl")] and len(tree) == 6  # fmt: skip
    assert all(t["generator_tokens"] > 0 and t["verifier_tokens"] > 0 for t in tree)
    assert not (run / "round2" / "verifier").exists()  # frozen: only round 1 trained a verifier
    assert records[2]["verifier_examples"] == len(_data(run, 1)) and not records[2]["verifier_trained"]
    assert (run / "round1" / "mc_values.json").exists() and records[1]["tokens_mc"] > 0
    assert (run / "round2" / "rl" / "checkpoints" / "final" / "config.json").exists()
    assert set(records[2]["search"]) == {"2", "4"}  # beam search measured at both budgets on held-out problems


def test_step_dpo_update_from_the_search_samples(tmp_path, solver_tiny_dir):
    """update=step_dpo: per-step DPO pairs from round 1's sampled traces (Monte-Carlo critical steps), the new
    generator is round 1's checkpoint; tree search with it is refused up front."""
    cfg = SelfPlayConfig(model=str(solver_tiny_dir), **{**TINY, "rounds": 1}, update="step_dpo", mc_k=2)
    records = run_selfplay(cfg, tmp_path / "run", log=lambda *_: None)["records"]
    run = tmp_path / "run"
    update = json.loads((run / "round1" / "step_dpo" / "update.json").read_text())
    assert update["loss"] == "step_dpo" and update["examples"] == records[1]["step_dpo_examples"] > 0
    assert (run / "checkpoints" / "round1" / "config.json").exists()
    with pytest.raises(ValueError, match="update: step_dpo learns from sampled token ids"):
        SelfPlayConfig(update="step_dpo", search="beam")


def test_fresh_traces_of_the_new_generator_lead_the_verifiers_data(tmp_path, solver_tiny_dir):
    """verifier_fresh=k: G(r)'s own samples of the training problems are offered to V(r)'s data before the
    search traces; their tokens are counted; with frozen memory only round 1 samples them; with the traces kept in
    sampling order the search traces are not scored."""
    cfg = SelfPlayConfig(model=str(solver_tiny_dir), **TINY, verifier="bt", verifier_fresh=2,
                         verifier_memory="frozen", keep_order="sampled")  # fmt: skip
    records = run_selfplay(cfg, tmp_path / "run", log=lambda *_: None)["records"]
    run = tmp_path / "run"
    fresh = [Sample.from_dict(d) for d in read_jsonl(run / "samples" / "round1-fresh.jsonl")]
    assert len(fresh) == 10 * 2 and all(s.reward is not None for s in fresh)
    assert records[1]["tokens_fresh"] == sum(len(s.token_ids) for s in fresh) > 0
    search = {(s["problem_id"], s["text"]) for s in read_jsonl(run / "samples" / "round1-search.jsonl")}
    by_problem = {}
    for s in fresh:
        by_problem.setdefault(s.problem_id, []).append(s)
    chosen = {(d["problem_id"], d["text"]) for d in _data(run, 1)}
    for pid, text in chosen - {(s.problem_id, s.text) for s in fresh}:  # a search trace on one side comes only
        assert (pid, text) in search  # after every one of G(1)'s distinct traces on that side
        side = next(d["reward"] == 1.0 for d in _data(run, 1) if (d["problem_id"], d["text"]) == (pid, text))
        assert all((pid, s.text) in chosen for s in by_problem[pid] if (s.reward == 1.0) == side)
    assert any((s.problem_id, s.text) in chosen for s in fresh)
    assert not (run / "samples" / "round2-fresh.jsonl").exists() and records[2]["tokens_fresh"] == 0
    # traces kept in sampling order: nothing reads the verifier's scores of the search traces, so none are made
    assert not (run / "round2" / "search_scores.json").exists() and records[2]["tokens_search_verifier"] == 0


def test_the_verifier_on_the_previous_generators_samples(tmp_path, solver_tiny_dir):
    """`auroc_within_on`: a verifier's within-problem AUROC on a round's held-out file, read back per problem in
    sample order whatever the order of its lines (a resumed run appends), problems without both labels left out."""
    from reasonloop.recipes.selfplay import SelfPlay

    sp = SelfPlay(
        SelfPlayConfig(model=str(solver_tiny_dir), **{**TINY, "n_eval": 2, "best_of": 3, "eval_budgets": "1,3"}),
        tmp_path / "run",
    )
    a, b = sp.test
    rows = [  # (problem, sample index, text, reward); the verifier scores a text by its number
        (b, 2, "0.9", 1.0), (a, 0, "0.2", 1.0), (a, 1, "0.7", 0.0), (b, 0, "0.1", 0.0), (a, 2, "0.5", 1.0),
        (b, 1, "0.3", 0.0), (a, 3, "0.99", 0.0),  # a 4th sample of a: beyond best_of, not read
    ]  # fmt: skip
    path = sp.run.samples_path("round1-heldout")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(Sample(p.id, t, steps=[t], reward=r, meta={"sample_index": i}).to_dict()) + "\n"
                            for p, i, t, r in rows))  # fmt: skip

    class ByNumber:
        def score_many(self, prompts, steps):
            assert prompts == [a.prompt] * 3 + [b.prompt] * 3  # the test problems' order, best_of each
            return [float(st[0]) for st in steps]

    assert [s.text for s in sp.heldout(1)] == ["0.2", "0.7", "0.5", "0.1", "0.3", "0.9"]
    # a: right 0.2, 0.5 against wrong 0.7: both lose (0/2); b: right 0.9 beats both wrong (2/2); mean 0.5
    assert sp.auroc_within_on(ByNumber(), 1) == 0.5


def test_kept_traces_and_verifier_data_by_hand():
    ss = [
        Sample("a", "w", reward=0.0),
        Sample("a", "r1", reward=1.0, meta={"verifier_score": 0.1}),
        Sample("a", "r2", reward=1.0, meta={"verifier_score": 0.7}),
        Sample("a", "r2", reward=1.0, meta={"verifier_score": 0.7}),
        Sample("b", "x", reward=0.0),
    ]
    assert kept_traces(ss, 4) == [("a", "r2"), ("a", "r1")]  # distinct, best-scored first; b has none
    assert [s.text for s in verifier_data(ss, 4)] == ["r1", "w", "r2", "x"]
    assert [s.text for s in verifier_data(ss, 2)] == ["r1", "w", "x"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reasonloop.core import load_config
    from reasonloop.engine import fanout
    from reasonloop.recipes import selfplay
    from reasonloop.train import loop
    stage, at = sys.argv[3], int(sys.argv[4])
    now = {"stage": None, "round": 0, "n": 0}
    def enter(name):
        orig = getattr(selfplay.SelfPlay, name)
        def wrapped(self, r, *a, **k):
            now["stage"], now["round"] = name, r
            return orig(self, r, *a, **k)
        setattr(selfplay.SelfPlay, name, wrapped)
    for name in ("search", "update_generator", "update_verifier", "measure"):
        enter(name)
    def tick():
        if (now["stage"], now["round"]) == (stage, 2):
            now["n"] += 1
            if now["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL)
    grade = fanout.grade_sample  # what the local executor grades sampled traces with
    def grade_sample(*a, **k):
        tick()
        return grade(*a, **k)
    fanout.grade_sample = grade_sample
    step = loop.Trainer.step
    def trainer_step(self, *a, **k):
        out = step(self, *a, **k)
        tick()
        return out
    loop.Trainer.step = trainer_step
    selfplay.run_selfplay(load_config(selfplay.SelfPlayConfig, sys.argv[1]), sys.argv[2], log=lambda *_: None)
    """
)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, solver_tiny_dir):
    d = tmp_path_factory.mktemp("selfplay-whole")
    config = d / "sp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": str(solver_tiny_dir)}))
    return config, run_selfplay(load_config(SelfPlayConfig, config), d / "run", log=lambda *_: None)["records"]


@pytest.mark.parametrize("stage, at", [("search", 17), ("update_generator", 1), ("update_verifier", 1), ("measure", 9)])
def test_kill_9_in_each_stage_then_rerun_matches_an_uninterrupted_run(stage, at, tmp_path, whole):
    config, records = whole
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = tmp_path / "killed"
    env = {**os.environ, "REASONLOOP_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(config), str(run), stage, str(at)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists()  # it really died in round 2
    resumed = run_selfplay(load_config(SelfPlayConfig, config), run, log=lambda *_: None)["records"]
    for name in ("round1-search", "round2-search", "round2-heldout"):  # no trace lost or written twice
        keys = [(d["problem_id"], d["meta"]["sample_index"]) for d in read_jsonl(run / "samples" / f"{name}.jsonl")]
        assert len(keys) == len(set(keys)) == (TINY["n_train"] * 4 if "search" in name else TINY["n_eval"] * 4)
    _close(resumed, records)


def _close(a, b, where="records") -> None:
    """Equal, floats up to the rounding a resumed training may bring (samples and counts exactly)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-6), where
    else:
        assert a == b, where


@pytest.mark.parametrize(
    "override, message",
    [
        ("serach=beam", "serach"),
        ("search=bfs", "search: expected one of best_of_n, weighted_vote, beam, mcts"),
        ("verifier_memory=latest", "verifier_memory"),
        ("verifier_init=last", "verifier_init: expected one of generator, base, previous"),
        ("keep_order=best", "keep_order: expected one of verifier, sampled"),
        ("verifier_fresh=-1", "key 'verifier_fresh' must be"),
        ("eval_budgets=4", "eval_budgets"),
        ("eval_budgets=4,32", "best_of >= 32"),
        ("check_weight=-1", "key 'check_weight' must be"),
        ("check_facts=0", "key 'check_facts' must be"),
    ],
)
def test_config_errors_are_one_line_before_anything_runs(override, message, tmp_path, capsys):
    from reasonloop.cli import main

    assert main(["selfplay", "--run-dir", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_demo_builds_the_countdown_base_once_then_plays(tmp_path, solver_tiny_dir, monkeypatch, capsys):
    import shutil

    from reasonloop.cli import main
    from reasonloop.recipes import demo, nano
    from reasonloop.recipes.nano import NanoConfig

    cfg = demo.demo_config()
    assert (cfg.model, cfg.task, cfg.search, cfg.verifier) == ("nano-countdown", demo.DEMO_TASK, "best_of_n", "bt")
    assert NanoConfig(**demo.DEMO_BASE).task == demo.DEMO_TASK  # the base's settings are a valid config
    built = []

    def fake_train_nano(out, cfg):  # the real build takes minutes; the demo's wiring is what is tested here
        built.append(cfg)
        shutil.copytree(solver_tiny_dir, out)
        return out

    monkeypatch.setenv("REASONLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(nano, "train_nano", fake_train_nano)
    sets = [f"{k}={v}" for k, v in {**TINY, "rounds": 1}.items()]
    run = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run)] + [x for s in sets for x in ("--set", s)]) == 0
    assert built == [NanoConfig(**demo.DEMO_BASE)] and (tmp_path / "home" / "nano-countdown" / "config.json").exists()
    out = capsys.readouterr().err
    assert "per round" in out and "majority" in out and "(BT)" in out and "demo finished" in out
    assert (run / "report.md").exists() and (run / "plots" / "best_of_n.png").exists()
    assert main(["demo", "--run-dir", str(run)] + [x for s in sets for x in ("--set", s)]) == 0  # resumes; no rebuild
    assert len(built) == 1
    assert main(["demo", "--run-dir", str(tmp_path / "x"), "--set", "roundz=3"]) == 2
    assert "roundz" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_more_problems_than_the_world_has_is_one_line_before_anything_runs(tmp_path, solver_tiny_dir, capsys):
    from reasonloop.cli import main

    args = [
        "selfplay",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"model={solver_tiny_dir}",
        "--set",
        "n_train=5000",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: countdown: asked for 5000 distinct train problems, found ") and "\n" not in err
    assert "n_train" in err and not (tmp_path / "run").exists()
