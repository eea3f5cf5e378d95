"""Unit tests of every grader, the registry, the formula parser, batch grading and `reasonloop grade`.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import pytest

from reasonloop.cli import main
from reasonloop.core import ConfigError, Problem, Sample
from reasonloop.graders import grade_batch, grader_from_config, load_grader, multi
from reasonloop.graders.multi import evaluate_formula, parse_formula

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "graders"
P = Problem("p1", "What is 6 * 7?", "42")


def grade(config: dict, completion: str, problem: Problem = P, **kw):
    return grader_from_config(config, **kw)(problem, completion)


# --- string graders ------------------------------------------------------------------


def test_exact_and_string_check_with_templates():
    assert grade({"type": "exact"}, " 42\n").score == 1.0
    assert grade({"type": "exact"}, "42.0").score == 0.0
    # "The answer is 42": eq false, ne true, like "42" true, ilike "ANSWER" true
    ops = {"eq": "42", "ne": "42", "like": "42", "ilike": "ANSWER"}
    scores = {
        op: grade({"type": "string_check", "operation": op, "reference": ref}, "The answer is 42").score
        for op, ref in ops.items()
    }
    assert scores == {"eq": 0.0, "ne": 1.0, "like": 1.0, "ilike": 1.0}
    cfg = {"type": "string_check", "input": "{{sample.output_json.label}}", "reference": "{{item.label}}"}
    labelled = Problem("p2", "Classify.", "", meta={"label": "spam"})
    assert grade(cfg, '{"label": "spam"}', labelled).score == 1.0
    missing = grade(cfg, "no json here", labelled)  # a completion without the field scores 0, with the reason
    assert missing.score == 0.0 and "no JSON object found" in missing.reason


def test_text_similarity_metrics_and_threshold():
    p = Problem("s", "Summarise.", "the cat is on the mat")
    # ROUGE-L: LCS "the cat on the mat" = 5 tokens of 6 on both sides -> P = R = F = 5/6
    assert grade({"type": "text_similarity", "metric": "rouge_l"}, "the cat sat on the mat", p).score == pytest.approx(
        5 / 6
    )
    # BLEU (sacrebleu, exp smoothing) worked out in similarity.bleu's docstring: (1/48) ** 0.25
    assert grade({"type": "text_similarity", "metric": "bleu"}, "the cat sat on the mat", p).score == pytest.approx(
        (1 / 48) ** 0.25
    )
    # fuzzy: "abcd" vs "abce": 2 edits (delete d, insert e) over 8 chars -> 0.75; the threshold sets pass/fail only
    q = Problem("f", "?", "abce")
    assert grade({"type": "text_similarity", "metric": "fuzzy_match"}, "abcd", q).score == pytest.approx(0.75)
    assert grade({"type": "text_similarity", "pass_threshold": 0.7}, "abcd", q).details["passed"] is True
    g = grade({"type": "text_similarity", "pass_threshold": 0.8}, "abcd", q)
    assert g.details["passed"] is False and g.score == pytest.approx(0.75)


# --- number graders --------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, answer, score",
    [
        ("so the total is $1,234.50.", "1234.5", 1.0),
        ("a loss of -7 dollars", "-7", 1.0),
        ("about 40%", "40", 1.0),
        ("3 apples and 4 pears, 12 in all", "7", 0.0),  # the final number (12) counts, not any number
        ("nothing", "7", 0.0),
    ],
)
def test_numeric_final_number(completion, answer, score):
    assert grade({"type": "numeric"}, completion, Problem("n", "?", answer)).score == score


def test_numeric_tolerances():
    p = Problem("n", "?", "200")
    assert grade({"type": "numeric", "abs_tol": 0.5}, "200.4", p).score == 1.0
    assert grade({"type": "numeric", "abs_tol": 0.5}, "200.6", p).score == 0.0
    assert grade({"type": "numeric", "rel_tol": 0.01}, "202", p).score == 1.0  # 2 <= 1% of 200
    assert grade({"type": "numeric", "rel_tol": 0.01}, "202.5", p).score == 0.0


def test_gsm8k_marker_and_fallback():
    p = Problem("g", "?", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72")  # a worked solution as reference
    assert grade({"type": "gsm8k"}, "48 + 24 = 72\n#### 72", p).score == 1.0
    assert grade({"type": "gsm8k"}, "#### 1,072", Problem("g", "?", "1072")).score == 1.0
    assert grade({"type": "gsm8k"}, "24 then 72", p).reason.startswith("last number")
    assert grade({"type": "gsm8k", "fallback_last_number": False}, "24 then 72", p).score == 0.0
    assert grade({"type": "gsm8k"}, "#### 71", p).score == 0.0


# --- math ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, answer, score",
    [
        (r"The answer is $\boxed{\frac{3}{4}}$.", r"0.75", 1.0),
        (r"$\boxed{\{1, 2, 3\}}$", r"\{3,2,1\}", 1.0),  # sets ignore order
        (r"$\boxed{[0, 5)}$", r"[0,5)", 1.0),
        (r"$\boxed{(0, 5)}$", r"[0,5)", 0.0),  # open vs half-open interval
        (r"$\boxed{2\sqrt{2}}$", r"\sqrt{8}", 1.0),
        (r"$\boxed{7}$", r"8", 0.0),
    ],
)
def test_math_equivalence(completion, answer, score):
    assert grade({"type": "math"}, completion, Problem("m", "?", answer)).score == score


def test_math_from_a_non_main_thread_runs_in_a_worker_process():
    g = grader_from_config({"type": "math"})
    out = {}
    t = threading.Thread(target=lambda: out.update(g=g(Problem("m", "?", r"\frac12"), r"$\boxed{0.5}$")))
    t.start()
    t.join(60)
    assert out["g"].score == 1.0


# --- json_fields ---------------------------------------------------------------------------


def test_json_fields_precision_recall_f1():
    ref = {"name": "Ada", "year": 1843, "tags": ["math", "poetry"]}
    p = Problem("j", "Extract.", json.dumps(ref))
    # predicted items: name=ada (hit), year=1842 (miss), tags math (hit), code (miss), poetry (hit) -> 3 of 5
    # reference items: 4 -> P = 3/5, R = 3/4, F1 = 2/3
    completion = 'Here you go:\n```json\n{"name": "ada", "year": 1842, "tags": ["poetry", "code", "math"]}\n```'
    g = grade({"type": "json_fields"}, completion, p)
    assert g.score == pytest.approx(2 / 3) and g.details == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "f1": 2 / 3}
    )
    assert grade({"type": "json_fields", "score": "recall"}, completion, p).score == pytest.approx(0.75)
    # only 'tags' scored: pred {math, code, poetry}, ref {math, poetry}: P = 2/3, R = 1, F1 = 0.8
    assert grade({"type": "json_fields", "fields": ["tags"]}, completion, p).score == pytest.approx(0.8)
    bad = grade({"type": "json_fields"}, '{"name": "Ada",', p)
    assert bad.score == 0.0 and "no JSON object" in bad.reason


# --- python (sandboxed) ----------------------------------------------------------------


def test_python_grader_source_and_tests():
    src = "def grade(sample, item):\n    return 1.0 if sample['output_text'].strip() == item['answer'] else 0.25\n"
    assert grade({"type": "python", "source": src}, "42", P).score == 1.0
    assert grade({"type": "python", "source": src}, "41", P).score == 0.25
    code_task = Problem("c", "Write square(x).", "", meta={"tests": "assert square(3) == 9\nassert square(-2) == 4"})
    cfg = {"type": "python", "tests": "{{item.tests}}", "timeout_s": 3}
    assert grade(cfg, "```python\ndef square(x):\n    return x * x\n```", code_task).score == 1.0
    assert grade(cfg, "def square(x):\n    return 2 * x", code_task).score == 0.0
    # a program that exits with status 0 before the tests run does not pass
    cheat = grade(cfg, "import os\nos._exit(0)", code_task)
    assert cheat.score == 0.0 and "exited before finishing" in cheat.reason
    slow = grade({**cfg, "timeout_s": 1}, "while True: pass", code_task)
    assert slow.score == 0.0 and "timed out" in slow.reason


# --- model (judge) -----------------------------------------------------------------------


class FakeJudge:
    """A Generator that replies with fixed texts and records its prompts."""

    def __init__(self, replies: list[str]):
        self.replies, self.prompts = replies, []

    def generate(self, prompts, n=1, *, temperature=1.0, max_new_tokens=256, stop=None, seed=0, top_p=1.0):
        self.prompts += prompts
        return [[Sample(problem_id="j", text=self.replies[i % len(self.replies)]) for i in range(n)] for _ in prompts]


def test_model_grader_score_and_label_modes():
    judge = FakeJudge(["Looks right. Score: 8"])
    cfg = {
        "type": "model",
        "prompt": "Q: {{item.prompt}} A: {{sample.output_text}} Ref: {{item.answer}}",
        "score_range": [0, 10],
    }
    g = grade(cfg, "42", generator=judge)
    assert g.score == pytest.approx(0.8) and judge.prompts == ["Q: What is 6 * 7? A: 42 Ref: 42"]
    # n = 3 replies 8, 2, garbage -> (0.8 + 0.2 + 0) / 3
    judge = FakeJudge(["8", "2", "no idea"])
    assert grade({**cfg, "n": 3}, "x", generator=judge).score == pytest.approx(1 / 3)
    label = {
        "type": "model",
        "prompt": "{{sample.output_text}}",
        "labels": ["correct", "incorrect"],
        "passing_labels": ["correct"],
    }
    assert grade(label, "x", generator=FakeJudge(["It is correct."])).score == 1.0
    assert grade(label, "x", generator=FakeJudge(["Not correct: incorrect."])).score == 0.0
    with pytest.raises(ConfigError, match="judge generator"):
        grader_from_config(cfg)


# --- multi and the registry -------------------------------------------------------------


def test_formula_allow_list():
    assert evaluate_formula("max(a, b) * 2 - -1 / 4", {"a": 0.25, "b": 0.125}) == pytest.approx(0.75)
    for bad, why in [
        ("a ** 2", "write a power as a \\^ b"),
        ("a.real", "Attribute"),
        ("open('x')", "function 'open'"),
        ("(lambda: 1)()", "is not allowed"),
        ("a if b else 0", "IfExp"),
        ("'s'", "only numbers"),
        ("a +", "not valid syntax"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_formula(bad)


def test_multi_unknown_names_are_named():
    cfg = {"type": "multi", "graders": {"a": {"type": "exact"}}, "formula": "0.5 * a + 0.5 * bb + cc"}
    with pytest.raises(ConfigError, match="unknown grader name\\(s\\) 'bb', 'cc'"):
        grader_from_config(cfg)


def test_multi_from_python_and_division_by_zero():
    g = multi({"a": grader_from_config({"type": "exact"}), "n": grader_from_config({"type": "numeric"})}, "a / (n - n)")
    r = g(P, "42")
    assert r.score == 0.0 and "division by zero" in r.reason
    g = multi({"a": grader_from_config({"type": "exact"})}, "a * 3")
    assert g(P, "42").score == 1.0 and "clipped from 3" in g(P, "42").reason


def test_rft_multi_example_yaml():
    g = load_grader(EXAMPLES / "rft_multi.yaml")
    ref = {"customer": "Ada Lovelace", "priority": "high", "products": ["engine", "loom"]}
    p = Problem("t1", "Extract the ticket fields.", json.dumps(ref))
    assert g(p, json.dumps(ref)).score == pytest.approx(1.0)
    # fields: pred items customer (hit), priority=low (miss), loom, engine (hits), punch cards (miss):
    # P = 3/5, R = 3/4, F1 = 2/3; priority check 0 -> 0.7 * 2/3 + 0.3 * 0
    partial = (
        '```json\n{"customer": "ada lovelace", "priority": "low", "products": ["loom", "engine", "punch cards"]}\n```'
    )
    r = g(p, partial)
    assert r.score == pytest.approx(0.7 * 2 / 3)
    assert r.details["fields"]["score"] == pytest.approx(2 / 3) and r.details["priority"]["score"] == 0.0
    broken = g(p, '{"customer": "Ada"')
    assert broken.score == 0.0 and "no JSON object" in broken.details["priority"]["reason"]
    assert pickle.loads(pickle.dumps(g))(p, json.dumps(ref)).score == pytest.approx(1.0)


def test_config_errors_are_one_line_and_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown type 'jsonfields' \\(did you mean 'json_fields'\\?\\)"):
        grader_from_config({"type": "jsonfields"})
    with pytest.raises(ConfigError, match="unknown key 'operaton' \\(did you mean 'operation'\\?\\)"):
        grader_from_config({"type": "string_check", "operaton": "eq"})
    with pytest.raises(ConfigError, match="^grader 'string_check': key 'operation': 'contains' is not one of"):
        grader_from_config({"type": "string_check", "operation": "contains"})
    with pytest.raises(ConfigError, match="grader 'x' \\(numeric\\): unknown key 'tol'"):
        grader_from_config({"type": "multi", "graders": {"x": {"type": "numeric", "tol": 1}}, "formula": "x"})
    with pytest.raises(ConfigError, match="unknown key 'formla'"):
        grader_from_config({"type": "multi", "graders": {"x": {"type": "exact"}}, "formla": "x"})
    with pytest.raises(ConfigError, match="template field 'sample.text' is not valid"):
        grader_from_config({"type": "exact", "input": "{{sample.text}}"})
    bad = tmp_path / "g.yaml"
    bad.write_text("type: gsm8k\nfallback_last_numbr: true\n")
    with pytest.raises(
        ConfigError,
        match="g.yaml \\(gsm8k\\): unknown key 'fallback_last_numbr' \\(did you mean 'fallback_last_number'",
    ):
        load_grader(bad)


# --- batch and CLI ------------------------------------------------------------------------


def test_grade_batch_in_workers_matches_in_process():
    g = grader_from_config({"type": "gsm8k"})
    problems = [Problem(str(i), "?", str(i)) for i in range(40)]
    completions = [f"#### {i if i % 3 else i + 1}" for i in range(40)]  # every third one is wrong
    ticks = []
    seq = grade_batch(g, problems, completions)
    par = grade_batch(g, problems, completions, workers=2, chunk_size=5, progress=ticks.append)
    assert [x.score for x in par.grades] == [x.score for x in seq.grades]
    assert sum(x.score for x in par.grades) == 40 - 14 and sum(ticks) == 40 and par.samples_per_s > 0


def test_grade_batch_turns_a_crash_into_an_error_grade():
    def boom(problem, completion):
        raise RuntimeError("kaput")

    res = grade_batch(boom, [P], ["x"])
    assert res.errors == 1 and res.grades[0].score == 0.0 and "kaput" in res.grades[0].reason


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_cli_grade_writes_scores_and_resumes(tmp_path, capsys):
    rows = [
        {"id": f"q{i}", "question": "?", "answer": str(i), "completion": f"so #### {i if i < 3 else 0}"}
        for i in range(5)
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(inp, rows)
    args = ["grade", "--grader", str(EXAMPLES / "gsm8k.yaml"), "--input", str(inp), "--output", str(out)]
    # a previous run wrote two lines, the second torn mid-write
    out.write_text(
        json.dumps({**rows[0], "score": 1.0, "parsed": "0", "reason": "done before"}) + '\n{"id": "q1", "sco'
    )
    with pytest.warns(UserWarning, match="torn last line"):
        assert main([*args, "--workers", "0"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["q0", "q1", "q2", "q3", "q4"] and got[0]["reason"] == "done before"
    assert [r["score"] for r in got] == [1.0, 1.0, 1.0, 0.0, 0.0] and got[3]["parsed"] == "0"
    assert "graded 4 samples, 1 already graded" in capsys.readouterr().out
    assert main([*args, "--workers", "2"]) == 0  # nothing left to do
    assert "graded 0 samples, 5 already graded" in capsys.readouterr().out


def test_cli_grade_malformed_line_is_one_line_error(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    _write_jsonl(inp, [{"answer": "1", "completion": "1"}, '{"answer": "2", completion: 2}'])
    rc = main(["grade", "--grader", str(EXAMPLES / "gsm8k.yaml"), "--input", str(inp), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"error: {inp}:2: invalid JSON") and "\n" not in err
    _write_jsonl(inp, [{"answer": "1"}])
    assert (
        main(["grade", "--grader", str(EXAMPLES / "gsm8k.yaml"), "--input", str(inp), "--output", str(tmp_path / "o")])
        == 2
    )
    assert f"{inp}:1: missing field 'completion'" in capsys.readouterr().err


def test_cli_grade_with_the_rft_example(tmp_path, capsys):
    ref = {"customer": "Ada", "priority": "high", "products": ["loom"]}
    rows = [
        {"prompt": "ticket 1", "answer": ref, "completion": json.dumps(ref)},
        {"prompt": "ticket 2", "answer": ref, "completion": "not json"},
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_jsonl(inp, rows)
    assert (
        main(
            [
                "grade",
                "--grader",
                str(EXAMPLES / "rft_multi.yaml"),
                "--input",
                str(inp),
                "--output",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in got] == [1.0, 0.0] and got[0]["answer"] == ref
    assert "mean score 0.5000" in capsys.readouterr().out
