"""`reasonloop verifiers`, `search` and `scale` end to end on a tiny model, and verifier manifests."""

import json

import pytest

from reasonloop.core import ReasonloopError, read_jsonl
from reasonloop.recipes.scale import ScaleConfig, run_scale
from reasonloop.recipes.verifiers import VerifiersConfig, run_verifiers
from reasonloop.tasks import ArithTask
from reasonloop.verifiers.registry import load_verifier, write_manifest

from .conftest import top_reward, vote_credit


@pytest.mark.filterwarnings("ignore:.*dropped a torn last line")
def test_verifiers_then_scale_end_to_end(tmp_path, solver_tiny_dir, capsys):
    cfg = VerifiersConfig(
        generator=str(solver_tiny_dir), n_train=10, samples=4, mc_k=2, epochs=1, n_eval=6, best_of=4,
        max_new_tokens=24, batch_size=8, genrm_votes=2, kinds="orm,prm,pav,bt,dpo,genrm,genrm_cot",
    )  # fmt: skip
    res = run_verifiers(cfg, tmp_path / "v", log=lambda s: None)
    assert set(res["verifiers"]) == {"orm", "prm", "pav", "bt", "dpo", "genrm", "genrm_cot"}
    # the curves from the held-out samples file (6 problems x 4, problem-major) and each verifier's own scores
    held = list(read_jsonl(tmp_path / "v" / "samples" / "heldout.jsonl"))
    groups = [held[i : i + 4] for i in range(0, 24, 4)]
    assert len(held) == 24 and all(len({r["problem_id"] for r in g}) == 1 for g in groups)
    assert res["majority_vote"] == pytest.approx([sum(vote_credit(g[:n]) for g in groups) / 6 for n in range(1, 5)])
    test = ArithTask().problems("test", 6, seed=cfg.seed)
    for kind in ("orm", "prm", "pav", "bt", "dpo"):  # deterministic scorers (GenRM samples its verifications)
        scores = load_verifier(tmp_path / "v" / kind).score_many(
            [p.prompt for p in test for _ in range(4)], [r["steps"] or [""] for r in held]
        )
        best = [
            sum(top_reward(g[:n], scores[4 * i : 4 * i + n]) for i, g in enumerate(groups)) / 6 for n in range(1, 5)
        ]
        assert res["verifiers"][kind]["best_of_n"] == pytest.approx(best), kind
    for kind in ("genrm", "genrm_cot"):  # one sample: every rule picks it
        assert res["verifiers"][kind]["best_of_n"][0] == res["majority_vote"][0]
    assert json.loads((tmp_path / "v" / "genrm_cot" / "reasonloop_verifier.json").read_text())["checks"] is True
    report = (tmp_path / "v" / "report.md").read_text()
    assert "Error-step identification" in report and (tmp_path / "v" / "plots" / "best_of_n.png").stat().st_size > 0
    # every kind loads from its directory and scores partial solutions
    for kind in ("orm", "prm", "pav", "bt", "dpo", "genrm", "genrm_cot"):
        v = load_verifier(tmp_path / "v" / kind)
        (score,) = v.score_prefixes(["Q: 1+2\n"], [["1+2=3"]])
        assert isinstance(score, float) and v.tokens_scored > 0
        # a solution with no steps (the generator stopped at once) never beats a real attempt
        empty, real = v.score_many(["Q: 1+2\n"] * 2, [[], ["1+2=3", "A: 3"]])
        assert empty < real, (kind, empty, real)
    # a rerun reuses everything
    assert run_verifiers(cfg, tmp_path / "v", log=lambda s: None)["verifiers"]["orm"] == res["verifiers"]["orm"]

    scfg = ScaleConfig(
        model=str(solver_tiny_dir), verifier=str(tmp_path / "v" / "prm"), n_eval=4, budgets="1,4",
        seeds="0,1", strategies="majority,best_of_n,beam,mcts", max_new_tokens=24, max_depth=6,
    )  # fmt: skip
    out = run_scale(scfg, tmp_path / "s", log=lambda s: None)
    assert len(out["cells"]) == 4 * 2 * 2
    assert [p["budget"] for p in out["curves"]["beam"]] == [1, 4]
    # every curve point from the cell files: each row's solution graded again, then mean, min and max over seeds
    task, problems = ArithTask(), {p.id: p for p in ArithTask().problems("test", 4, seed=0)}
    for strategy, points in out["curves"].items():
        for point in points:
            accs = []
            for seed in (0, 1):
                rows = [json.loads(x) for x in (tmp_path / "s" / "samples" / f"{strategy}-b{point['budget']}-s{seed}.jsonl")
                        .read_text().splitlines()]  # fmt: skip
                assert sorted(r["problem_id"] for r in rows) == sorted(problems)
                for r in rows:
                    assert r["correct"] == (
                        r["answer"] is not None and task.is_correct(problems[r["problem_id"]], r["text"])
                    )
                    assert r["answer"] == task.extract_answer(r["text"])
                accs.append(sum(r["correct"] for r in rows) / 4)
            assert (point["accuracy"], point["accuracy_min"], point["accuracy_max"]) == pytest.approx(
                (sum(accs) / 2, min(accs), max(accs))
            ), (strategy, point)
    # at budget 1 majority vote and best-of-N draw the same single sample with the same seed: the same answer
    for seed in (0, 1):
        texts = [
            [
                json.loads(x)["text"]
                for x in (tmp_path / "s" / "samples" / f"{s}-b1-s{seed}.jsonl").read_text().splitlines()
            ]
            for s in ("majority", "best_of_n")
        ]
        assert texts[0] == texts[1]
    assert (tmp_path / "s" / "plots" / "accuracy_vs_tokens.png").stat().st_size > 0
    lines = (tmp_path / "s" / "samples" / "beam-b4-s1.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {"generator_tokens", "verifier_tokens", "kept"} <= set(json.loads(lines[0]))
    # killed mid-cell: a torn last line and a missing problem are redone, nothing is duplicated
    path = tmp_path / "s" / "samples" / "mcts-b4-s0.jsonl"
    kept = path.read_text().splitlines()[:2]
    path.write_text("\n".join(kept) + '\n{"problem_id": "torn')
    # a sampling cell killed after 2 lines of its one 4-problem generator call: the call is made again whole (with
    # its seed, not one keyed by what was left), so the rerun writes the lines an uninterrupted run wrote
    voted = tmp_path / "s" / "samples" / "majority-b4-s1.jsonl"
    whole = voted.read_bytes()
    voted.write_bytes(b"".join(whole.splitlines(keepends=True)[:2]))
    again = run_scale(scfg, tmp_path / "s", log=lambda s: None)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 4 == len({r["problem_id"] for r in rows}) and len(again["cells"]) == 16
    assert voted.read_bytes() == whole

    from reasonloop.cli import main

    args = ["search", "--run-dir", str(tmp_path / "one"), "--set", f"model={solver_tiny_dir}", "--set", "n_eval=3"]
    args += ["--set", f"verifier={tmp_path / 'v' / 'pav'}", "--set", "strategy=beam", "--set", "budget=4"]
    assert main(args + ["--set", "max_new_tokens=24"]) == 0
    assert "beam (N=4) on 3 held-out arith problems" in capsys.readouterr().err


def test_scale_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="need a verifier"):
        ScaleConfig(strategies="majority,beam")
    with pytest.raises(ValueError, match="unknown"):
        ScaleConfig(strategies="majority,astar")
    with pytest.raises(ValueError, match="does not define"):
        ScaleConfig(verifier="orm=/x", strategies="beam@pav")
    with pytest.raises(ValueError, match="lookahead"):
        ScaleConfig(verifier="/a", strategies="beam", lookahead=-1)
    two = ScaleConfig(verifier="orm=/a,pav=/b", strategies="majority,best_of_n@orm,beam@pav")
    assert two.strategy_specs == [
        ("majority", "majority", None),
        ("best_of_n@orm", "best_of_n", "orm"),
        ("beam@pav", "beam", "pav"),
    ]
    assert ScaleConfig(verifier="/a", strategies="beam").strategy_specs == [("beam", "beam", "default")]
    with pytest.raises(ValueError, match="kinds"):
        VerifiersConfig(kinds="orm,prn")


def test_load_verifier_errors(tmp_path):
    with pytest.raises(ReasonloopError, match="no reasonloop_verifier.json"):
        load_verifier(tmp_path)
    (tmp_path / "reasonloop_verifier.json").write_text("{not json")
    with pytest.raises(ReasonloopError, match="not valid JSON"):
        load_verifier(tmp_path)
    (tmp_path / "reasonloop_verifier.json").write_text('{"kind": "pav"}')
    with pytest.raises(ReasonloopError, match="missing key 'value'"):
        load_verifier(tmp_path)
    (tmp_path / "reasonloop_verifier.json").write_text('{"kind": "oracle"}')
    with pytest.raises(ReasonloopError, match="unknown verifier kind"):
        load_verifier(tmp_path)
    with pytest.raises(ValueError, match="unknown verifier kind"):
        write_manifest(tmp_path, kind="oracle")


def test_genrm_learns_to_say_yes_to_right_and_no_to_wrong(tmp_path, solver_tiny_dir):
    from reasonloop.core import Sample
    from reasonloop.tasks import ArithTask
    from reasonloop.verifiers import GenRMConfig, GenRMVerifier, train_genrm, verification_pairs

    task = ArithTask()
    problems = task.problems("train", 12, seed=100)
    samples = []
    for p in problems:
        steps = task.steps(p.meta["solution"])
        lhs, value = steps[-2].split("=")  # a slip in the last operation: a wrong final answer
        bad = "\n".join(steps[:-2] + [f"{lhs}={int(value) + 1}", f"A: {int(value) + 1}"])
        samples += [Sample(p.id, p.meta["solution"], reward=1.0), Sample(p.id, bad, reward=0.0)]
    texts = verification_pairs(problems, samples, lambda p: p.meta["solution"])
    assert texts[0][1].endswith("Correct? Yes") and texts[1][1].endswith("Correct? No")
    out = train_genrm(solver_tiny_dir, texts, tmp_path / "g", GenRMConfig(epochs=60, batch_size=8, lr=1e-2))
    genrm = GenRMVerifier.from_dir(out, votes=2, max_new_tokens=40)
    good = genrm.score_many([p.prompt for p in problems], [task.steps(p.meta["solution"]) for p in problems])
    bad = genrm.score_many([p.prompt for p in problems], [task.steps(s.text) for s in samples[1::2]])
    assert all(0.0 <= x <= 1.0 for x in good + bad)
    assert sum(g > b for g, b in zip(good, bad)) >= 9  # of 12
    assert genrm.tokens_scored > 0
    per_step = genrm.score_steps(problems[0], task.steps(problems[0].meta["solution"]))
    assert len(per_step) == len(task.steps(problems[0].meta["solution"]))
