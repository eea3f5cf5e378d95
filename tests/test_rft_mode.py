"""Reinforcement fine-tuning as an RL preset: example files, a grader file, many passes, KL per pass; and the
`extract` world it is measured on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonloop.cli import main
from reasonloop.core import ConfigError, DataError, Problem, load_config
from reasonloop.recipes.nano import NanoConfig, _Docs
from reasonloop.recipes.rl import RLConfig, per_pass, run_rl
from reasonloop.tasks import ExtractTask, get_task
from reasonloop.tasks.jsonl import to_example

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "examples" / "rft" / "extract.yaml"


# --- the extract world -----------------------------------------------------------------


def test_extract_problems_are_deterministic_disjoint_and_solved_by_their_answer():
    t = ExtractTask()
    train, test = t.problems("train", 300, seed=0), t.problems("test", 100, seed=0)
    assert [p.id for p in train] == [p.id for p in t.problems("train", 300, seed=0)]
    assert len({p.id for p in train}) == 300 and not {p.prompt for p in train} & {p.prompt for p in test}
    assert {p.meta["kind"] for p in train} == {"order", "person"}
    for p in train[:50]:
        fields = json.loads(p.answer)
        assert t.grade(p, p.answer).score == 1.0 and t.is_correct(p, "Here: " + p.answer)
        assert fields["name"] in p.prompt and fields["city"] in p.prompt and str(fields["year"]) in p.prompt
        assert t.extract_answer(p.meta["solution"]) == p.answer


def test_extract_grade_is_field_f1_worked_by_hand():
    p = Problem("x", "Q: ...", '{"name":"Ada Moss","city":"Lyon","year":2019,"items":["lamp","rug"],"priority":"high"}')
    t = ExtractTask()
    # reference items: name, city, year, lamp, rug, priority = 6. Prediction: right name, wrong city, right year,
    # items [lamp, fan], no priority: 5 items predicted, 3 match (name, year, lamp). P 3/5, R 3/6, F1 = 6/11.
    got = t.grade(p, '{"name":"Ada Moss","city":"Oslo","year":2019,"items":["lamp","fan"]}')
    assert got.score == pytest.approx(6 / 11) and not t.is_correct(p, '{"name":"Ada Moss"}')
    assert t.grade(p, "no object here").score == 0.0 and t.extract_answer("no object here") is None


def test_extract_options_and_typos_are_config_errors():
    assert {p.meta["kind"] for p in get_task("extract:kinds=person").problems("train", 20)} == {"person"}
    assert len(get_task("extract:kinds=order+person").problems("train", 5)) == 5
    with pytest.raises(ConfigError, match="kinds: expected order, person or order"):
        get_task("extract:kinds=invoice")


def test_nano_base_accepts_extract_and_fits_a_whole_solution_in_a_row(char_tokenizer):
    cfg = NanoConfig(task="extract", n_seed_solutions=50, seq_len=64)
    docs = _Docs(get_task("extract"), cfg, char_tokenizer)
    longest = max(len(d) for d in docs.solutions + docs.hinted)
    assert docs.row_len == longest - 1 > 64  # raised from seq_len to hold the longest worked solution
    assert docs.batch().shape == (cfg.batch_size, longest)
    with pytest.raises(ValueError, match="built-in world"):
        NanoConfig(task="jsonl")


# --- example files ---------------------------------------------------------------------


def test_problems_command_writes_examples_that_read_back_the_same(tmp_path, capsys):
    out = tmp_path / "ex.jsonl"
    assert main(["problems", "--task", "extract", "--split", "train", "--num-problems", "5", "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    original = ExtractTask().problems("train", 5, seed=0)
    assert [r["id"] for r in lines] == [p.id for p in original]
    assert isinstance(lines[0]["answer"], dict) and "hint_prompt" not in lines[0]  # the object, not its text
    back = get_task("jsonl", data=str(out)).problems("train")
    assert [(p.prompt, p.answer, p.meta["kind"]) for p in back] == [
        (p.prompt, p.answer, p.meta["kind"]) for p in original
    ]
    assert to_example(back[0]) == lines[0]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "Q: a", "answer": "b"', "invalid JSON"),
        ('{"prompt": "Q: a"}', "missing field 'answer'"),
        ('{"prompt": 3, "answer": "b"}', "field 'prompt' must be a string"),
    ],
)
def test_a_malformed_example_file_is_one_line_naming_file_and_line(line, message, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    good = json.dumps({"prompt": "Q: x\n", "answer": {"a": 1}})
    data.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    val = tmp_path / "val.jsonl"
    val.write_text(good + "\n")
    code = main(["rl", "--run-dir", str(tmp_path / "r"), "--set", "task=jsonl", "--set", f"data={data}",
                 "--set", f"eval_data={val}", "--set", "model=nano"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{data}:3" in err and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


@pytest.mark.parametrize(
    "sets, message",
    [
        (["data=x.jsonl"], "data: task 'arith' is a built-in world"),
        (["task=jsonl"], "data: task 'jsonl' reads example files; set both data and eval_data"),
        (["task=jsonl", "data=x.jsonl"], "set both data and eval_data"),
    ],
)
def test_example_file_settings_are_checked(sets, message):
    with pytest.raises(Exception, match=message):
        load_config(RLConfig, None, sets)


# --- the preset end to end ---------------------------------------------------------------


def test_per_pass_rows_by_hand():
    cfg = RLConfig(prompts_per_step=4, kl_coef=0.1)
    records = [
        {"step": 0, "held_out_accuracy": 0.1},
        {"step": 1, "reward_mean": 0.2, "kl_k3": 0.0},
        {"step": 2, "reward_mean": 0.4, "kl_k3": 0.02, "held_out_accuracy": 0.3},
        {"step": 3, "reward_mean": 0.9, "kl_k3": 0.05},
    ]
    rows = per_pass(cfg, records, n_train=8)  # 8 problems, 4 per step: steps 1-2 are pass 1, step 3 starts pass 2
    assert [(r["pass"], r["first_step"], r["last_step"]) for r in rows] == [(1, 1, 2), (2, 3, 3)]
    assert rows[0]["reward"] == pytest.approx(0.3) and rows[0]["kl_k3"] == pytest.approx(0.01)
    assert rows[0]["held_out"] == 0.3 and rows[1]["held_out"] is None and rows[1]["kl_k3"] == pytest.approx(0.05)


def test_the_rft_preset_runs_end_to_end_on_a_tiny_model(tmp_path, solver_tiny_dir):
    """The shipped preset, shrunk: 8 examples, 2 per step, 3 passes; rewards from the grader file, KL measured,
    the validation file graded every pass, and a report with one row per pass."""
    examples, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    assert (
        main(["problems", "--task", "extract", "--split", "train", "--num-problems", "8", "--output", str(examples)])
        == 0
    )
    assert main(["problems", "--task", "extract", "--split", "test", "--num-problems", "3", "--output", str(val)]) == 0
    sets = [f"model={solver_tiny_dir}", f"data={examples}", f"eval_data={val}", "prompts_per_step=4", "group_size=2",
            "steps=6", "eval_every=2", "max_new_tokens=24", "n_eval=3"]  # fmt: skip
    cfg = load_config(RLConfig, PRESET, sets)
    assert cfg.grader and cfg.kl_coef > 0 and cfg.task == "jsonl"
    res = run_rl(cfg, tmp_path / "run", log=lambda *_: None)
    records = res["records"]
    assert [r["step"] for r in records] == list(range(7))
    assert [r["step"] for r in records if "held_out_accuracy" in r] == [0, 2, 4, 6]
    assert all("kl_k3" in r and r["kl_k3"] >= -1e-6 for r in records[1:])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "examples `" in report and "held-out greedy mean grade" in report
    assert "| pass | steps | train reward | KL to start | held-out mean grade |" in report
    assert "| 3 | 5-6 |" in report  # 8 examples at 4 per step: steps 5-6 make the third pass
    assert (tmp_path / "run" / "plots" / "kl.png").exists()


def test_the_shipped_example_files_are_the_extract_world(tmp_path):
    """examples/rft/*.jsonl are what `reasonloop problems` writes for extract (README says how to remake them)."""
    for name, split, n in (("extract_train.jsonl", "train", 32), ("extract_val.jsonl", "test", 200)):
        shipped = [json.loads(line) for line in (ROOT / "examples" / "rft" / name).read_text().splitlines()]
        assert shipped == [to_example(p) for p in ExtractTask().problems(split, n, seed=0)]
    with pytest.raises(DataError):
        get_task("jsonl", data=str(tmp_path / "missing.jsonl")).problems("train")


def test_evaluate_reports_the_mean_grade_where_grades_are_partial():
    """Two problems: one greedy answer right (1.0), one with a wrong city (F1 5/6 or 3/4 by kind): accuracy 1/2,
    mean grade the average of the two F1s."""
    from reasonloop.core import Sample
    from reasonloop.core.generator import TokenCounts
    from reasonloop.eval import EvalConfig, evaluate
    from reasonloop.eval.evaluate import summary_rows

    t = ExtractTask()
    problems = t.problems("test", 2, seed=0)
    wrong = json.loads(problems[1].answer) | {"city": "Nowhere"}
    n_items = sum(len(v) if isinstance(v, list) else 1 for v in wrong.values())
    expected_f1 = (n_items - 1) / n_items  # precision = recall = (n-1)/n

    class Fixed:
        counts = TokenCounts()

        def generate(self, prompts, n, **_):
            texts = [problems[0].answer, json.dumps(wrong)]
            return [[Sample(p.id, texts[i], token_ids=[1])] for i, p in enumerate(problems)]

    res = evaluate(Fixed(), t, problems, EvalConfig(n=0))
    assert res["greedy_accuracy"] == 0.5 and res["greedy_mean_grade"] == pytest.approx((1 + expected_f1) / 2)
    assert ("greedy mean grade", res["greedy_mean_grade"]) in summary_rows(res)
