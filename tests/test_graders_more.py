"""Graders, edge by edge: templates and number parsing, each grader's reasons and options, the registry's errors,
batch grading and `reasonloop grade`'s input checks. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import contextlib
import json
import math
import re
from types import SimpleNamespace

import pytest

from reasonloop.core import ConfigError, DataError, Problem, ReasonloopError
from reasonloop.graders import grade_batch, grader_from_config, iter_grades, load_grader
from reasonloop.graders.base import (
    Grade,
    SampleFieldError,
    as_text,
    check_template,
    extract_json,
    grades_missing_fields_zero,
    item_fields,
    last_number,
    numbers_match,
    parse_number,
    render,
    resolve,
)
from reasonloop.graders.batch import BatchResult, safe_grade
from reasonloop.graders.cli import cmd_grade, read_items
from reasonloop.graders.json_fields import prf
from reasonloop.graders.judge import ModelConfig, read_label, read_score
from reasonloop.graders.multi import evaluate_formula, formula_names, parse_formula
from reasonloop.graders.python_grader import PythonConfig, _last_error_line, extract_program
from reasonloop.graders.similarity import bleu, fuzzy_ratio, gleu, meteor, rouge, tokens_13a

P = Problem("p1", "What is 6 * 7?", "42", {"unit": "none", "id": "meta-id", "tags": ["a", "b"]})


def grade(config: dict, completion: str, problem: Problem = P, **kw) -> Grade:
    return grader_from_config(config, **kw)(problem, completion)


# --- base: grades, templates, numbers --------------------------------------------------------------------------


def test_grade_scores_stay_in_the_unit_interval():
    assert Grade(0.0, None, "").score == 0.0 and Grade(1.0, None, "").score == 1.0
    with pytest.raises(ValueError, match=r"^score 1.5 is outside \[0, 1\]$"):
        Grade(1.5, None, "")
    with pytest.raises(ValueError, match=r"score -0.1 is outside"):
        Grade(-0.1, None, "")
    assert Grade(1.0, "x", "a", {"k": 1}) == Grade(1.0, "x", "a", {"k": 2})  # details do not take part in ==


def test_missing_sample_fields_score_zero_but_missing_item_fields_raise():
    @grades_missing_fields_zero
    def f(problem, completion):
        return Grade(1.0, None, str(resolve("sample.output_json.x", problem, completion)))

    assert f(P, '{"x": 3}').reason == "3"
    g = f(P, '{"y": 3}')
    assert (g.score, g.parsed, g.reason) == (0.0, None, "template field 'sample.output_json.x' not found")
    assert f.__name__ == "f"  # wraps keeps the name
    with pytest.raises(
        DataError, match=r"^template field 'item.nope' not found \(item fields: answer, id, prompt, tags, unit\)$"
    ) as e:
        resolve("item.nope", P, "")
    assert not isinstance(e.value, SampleFieldError)


def test_extract_json_order_and_reasons():
    assert extract_json(' {"a": 1} ') == ({"a": 1}, "")  # the whole text
    two = 'x ```json\n{"a": 1}\n``` y ```\n{"a": 2}\n``` z'
    assert extract_json(two) == ({"a": 2}, "")  # the last json (or bare) fence
    assert extract_json('```python\n{"a": 1}\n```') == ({"a": 1}, "")  # not a json fence: the first {...} that parses
    assert extract_json("[1, 2]") == (None, "no JSON object found (expected a JSON object, got list)")
    assert extract_json('so {"a": 1 and {"b": 2}') == ({"b": 2}, "")  # skips a brace that does not parse
    assert extract_json("no braces") == (None, "no JSON object found (invalid JSON: Expecting value at 1:1)")
    assert extract_json("") == (None, "no JSON object found (invalid JSON: Expecting value at 1:1)")


def test_templates_resolve_fields_of_the_item_and_the_sample():
    assert item_fields(P) == {"unit": "none", "id": "p1", "tags": ["a", "b"], "prompt": P.prompt, "answer": "42"}
    assert resolve("item.tags.1", P, "") == "b"
    with pytest.raises(DataError, match="template field 'item.tags.2' not found"):
        resolve("item.tags.2", P, "")
    with pytest.raises(DataError, match="template field 'item.tags.x' not found"):
        resolve("item.tags.x", P, "")
    q = Problem("q", "?", '{"city": {"name": "Paris"}, "list": "[1, 2]"}')
    assert resolve("item.answer.city.name", q, "") == "Paris"
    assert resolve("item.answer.list.0", q, "") == 1  # JSON text inside JSON text is decoded too
    bad = Problem("q", "?", "{not json")
    with pytest.raises(DataError, match="'item.answer.x' not found"):
        resolve("item.answer.x", bad, "")
    assert resolve("sample.output_text", P, "done") == "done"
    with pytest.raises(
        SampleFieldError,
        match=r"^template field 'sample.output_json.a': no JSON object found \(invalid JSON: Expecting value at 1:1\)$",
    ):
        resolve("sample.output_json.a", P, "plain")
    assert resolve("sample.output_json", P, '{"a": [1]}') == {"a": [1]}
    for path in ("sample.output_text.x", "sample.other", "answer"):
        with pytest.raises(DataError, match=r"use item.<field>, sample.output_text or sample.output_json.<field>"):
            resolve(path, P, "")
    assert resolve("item", P, "") == item_fields(P)


def test_render_and_check_template():
    assert render("  {{ item.tags }}  ", P, "") == ["a", "b"]  # one placeholder: the raw value
    assert render("tags={{item.tags}} ü={{sample.output_json.u}}", P, '{"u": "ü"}') == 'tags=["a", "b"] ü=ü'
    assert render("no placeholders", P, "x") == "no placeholders"
    check_template("{{item.x}} {{sample.output_text}} {{sample.output_json.a.b}}", "here")
    for bad in ("{{answer}}", "{{sample.text}}", "{{sample}}"):
        with pytest.raises(ConfigError, match=r"^here: template field '.*' is not valid \(use item.<field>"):
            check_template(bad, "here")
    assert as_text("x") == "x" and as_text({"é": 1}) == '{"é": 1}' and as_text(3) == "3"


@pytest.mark.parametrize(
    "text,value",
    [
        ("1,234.5", 1234.5), ("-$3", -3.0), ("+7", 7.0), ("50%", 50.0), (".5", 0.5), ("-.5", -0.5),
        ("12/4", 3.0), ("1/0", None), ("a/2", None), ("2/b", None), ("1 000", 1000.0), ("7.", 7.0),
        ("1,2", None), ("12,34,567", None), ("1,234,567", 1234567.0), ("abc", None), ("", None), ("3.", 3.0),
        ("$1,200.50", 1200.5), ("1.5.2", None),
    ],
)  # fmt: skip
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_last_number_and_tolerances():
    assert last_number("1.5 then -2,000 and 3/4 of $5.") == "$5"
    assert last_number("version 12") == "12" and last_number("a-3 b") == "-3"
    assert last_number("") is None
    # |got - want| <= max(abs_tol, rel_tol * |want|), boundaries included
    assert numbers_match(10.5, 10, 0.5, 0) and not numbers_match(10.51, 10, 0.5, 0)
    assert numbers_match(-103, -100, 0, 0.03) and not numbers_match(-103.1, -100, 0, 0.03)
    assert numbers_match(100.0, 100, 0, 0)


# --- numeric and gsm8k ------------------------------------------------------------------------------------------


def test_numeric_and_gsm8k_reasons():
    assert grade({"type": "numeric"}, "it is 42").reason == "final number 42 matches 42"
    assert grade({"type": "numeric"}, "it is 41").reason == "final number 41 != 42"
    assert grade({"type": "numeric", "reference": "no digits"}, "42").reason == "reference has no number"
    assert grade({"type": "numeric", "reference": "#### 1,000"}, "1000").score == 1.0  # a worked solution's answer
    assert grade({"type": "numeric", "reference": "about 42 apples"}, "42").score == 1.0  # the reference's last number
    assert grade({"type": "numeric", "abs_tol": 0.5}, "42.5").score == 1.0
    assert grade({"type": "numeric", "abs_tol": 0.4}, "42.5").score == 0.0
    assert grade({"type": "numeric", "rel_tol": 0.1}, "46").score == 1.0  # 4 <= 4.2
    with pytest.raises(ConfigError, match=r"(abs_tol and rel_tol must be >= 0|key 'rel_tol' must be >= 0, got -1.0)$"):
        grader_from_config({"type": "numeric", "rel_tol": -1})
    g = grade({"type": "gsm8k"}, "#### forty-two 42 or 41")
    assert (g.score, g.parsed, g.reason) == (0.0, "41", "#### 41 != 42")  # the marked line's last number
    g = grade({"type": "gsm8k"}, "#### $42.")
    assert (g.score, g.parsed) == (1.0, "$42.")
    assert grade({"type": "gsm8k"}, "#### none").reason == "#### 'none' is not a number"
    assert grade({"type": "gsm8k"}, "#### 40\n#### 42").score == 1.0  # the last marker
    assert grade({"type": "gsm8k", "abs_tol": 1}, "#### 43").score == 1.0
    assert grade({"type": "gsm8k"}, "no number at all").reason == "no number in the completion"
    assert grade({"type": "gsm8k", "fallback_last_number": False}, "42").reason == "no #### line"


# --- string graders and similarity -----------------------------------------------------------------------------


def test_exact_options_and_reasons():
    g = grade({"type": "exact"}, " 41 ")
    assert (g.score, g.parsed, g.reason) == (0.0, "41", "expected '42'")
    assert grade({"type": "exact", "strip": False}, " 42").score == 0.0
    assert grade({"type": "exact", "strip": False}, "42").score == 1.0
    q = Problem("q", "?", "Paris")
    assert grade({"type": "exact", "case_sensitive": False}, " PARIS ", q).score == 1.0
    assert grade({"type": "exact", "input": "{{sample.output_json.city}}"}, '{"city": "Paris"}', q).score == 1.0
    assert grade({"type": "exact", "input": "{{sample.output_json.city}}"}, "Paris", q).score == 0.0  # no JSON


def test_string_check_operations_and_reasons():
    sc = {"type": "string_check", "reference": "Cat"}
    assert grade({**sc, "operation": "eq"}, "Cat").reason == "eq 'Cat': true"
    assert grade({**sc, "operation": "ne"}, "Cat").reason == "ne 'Cat': false"
    assert grade({**sc, "operation": "like"}, "a cat").score == 0.0  # case matters
    assert grade({**sc, "operation": "ilike"}, "a cAT!").score == 1.0
    g = grade({**sc, "operation": "like"}, "Catalog")
    assert (g.score, g.parsed) == (1.0, "Catalog")
    with pytest.raises(ConfigError, match=r"key 'operation': 'has' is not one of eq, ne, like, ilike$"):
        grader_from_config({"type": "string_check", "operation": "has"})


def test_similarity_measures_by_hand():
    # the libraries must reproduce values worked out from the metrics' definitions
    assert tokens_13a("It's 3.5!") == ["It's", "3.5", "!"]
    assert fuzzy_ratio("abc", "abc") == 1.0 and fuzzy_ratio("ab", "cd") == 0.0
    # BLEU, hyp "a b c" vs ref "a b c d": 3 tokens, so orders 1..3 only (sacrebleu's effective order);
    # p1 = p2 = p3 = 1; brevity exp(1 - 4/3)
    assert bleu("a b c", "a b c d") == pytest.approx(math.exp(1 - 4 / 3), abs=1e-12)
    # hyp longer than ref: BP = 1; "a b c d" vs "a b c": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 -> 1 / (2 * 1)
    assert bleu("a b c d", "a b c") == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25, abs=1e-12)
    # GLEU "a b" vs "b a": 2 unigrams + 1 bigram a side, 2 unigrams shared -> 2/3
    assert gleu("a b", "b a") == pytest.approx(2 / 3, abs=1e-12) and gleu("x", "x") == 1.0
    # ROUGE-L: "a b c d" vs "a c": LCS 2, P = 2/4, R = 2/2, F = 2 * 0.5 * 1 / 1.5 = 2/3; ROUGE-2 shares no bigram
    r = rouge("a b c d", "a c")
    assert r["rouge_l"] == pytest.approx(2 / 3, abs=1e-12) and r["rouge_2"] == 0.0 and rouge("x", "y")["rouge_1"] == 0.0
    # METEOR "b a" vs "a b": 2 matches in 2 chunks: Fmean = 1, penalty 0.5 * (2/2) ** 3 -> 0.5
    assert meteor("b a", "a b") == pytest.approx(0.5, abs=1e-12)


def test_text_similarity_threshold_passes_or_fails_and_leaves_the_score_alone():
    q = Problem("q", "?", "a b c d")
    g = grade({"type": "text_similarity", "metric": "rouge_l"}, "a c", q)
    assert g.score == pytest.approx(2 / 3) and g.reason == "rouge_l 0.667" and g.details == {"rouge_l": g.score}
    g = grade({"type": "text_similarity", "evaluation_metric": "rouge_l", "pass_threshold": 2 / 3}, "a c", q)
    assert g.score == pytest.approx(2 / 3) and g.reason == "rouge_l 0.667 pass (threshold 0.666667)"  # at it passes
    assert g.details["passed"] is True
    g = grade({"type": "text_similarity", "metric": "rouge_l", "pass_threshold": 0.7}, "a c", q)
    assert g.score == pytest.approx(2 / 3) and g.reason == "rouge_l 0.667 fail (threshold 0.7)" and g.parsed == "a c"
    assert g.details["passed"] is False
    assert grade({"type": "text_similarity"}, "a b c d", q).score == 1.0  # fuzzy_match by default
    for bad, msg in [
        ({"metric": "cosin"}, r"key 'evaluation_metric': 'cosin' is not one of .* \(did you mean 'cosine'\?\)$"),
        ({"pass_threshold": 1.5}, "outside|must be in"),
        ({"metric": "bleu", "evaluation_metric": "bleu"}, "give one of 'evaluation_metric' and 'metric'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            grader_from_config({"type": "text_similarity", **bad})
    grader_from_config({"type": "text_similarity", "pass_threshold": 0.0})
    grader_from_config({"type": "text_similarity", "pass_threshold": 1.0})


# --- json_fields ------------------------------------------------------------------------------------------------


def test_json_fields_by_hand():
    assert prf(set(), set()) == (1.0, 1.0, 1.0)
    assert prf(set(), {1}) == (0.0, 0.0, 0.0) and prf({1}, set()) == (0.0, 0.0, 0.0)
    assert prf({1, 2}, {3}) == (0.0, 0.0, 0.0)
    ref = Problem("r", "?", '{"name": "Ada  Lovelace", "year": 1843, "ok": true, "none": null, "obj": {"a": 1}}')
    # prediction: name matches after whitespace and case folding, year within abs_tol, ok differs, obj equal
    pred = '{"name": "ada lovelace", "year": 1843.0000001, "ok": false, "obj": {"a": 1}, "extra": 5}'
    g = grade({"type": "json_fields"}, pred, ref)
    # reference items: name, year, ok, obj (none is null: skipped) = 4; predicted items on those fields: 4; hits 3
    assert g.details == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75}) and g.score == 0.75
    assert g.reason == "precision 0.75 recall 0.75 f1 0.75" and json.loads(g.parsed)["extra"] == 5
    assert grade({"type": "json_fields", "case_sensitive": True}, pred, ref).score == 0.5  # name no longer matches
    assert grade({"type": "json_fields", "abs_tol": 1e-9}, pred, ref).score == 0.5  # year no longer matches
    assert grade({"type": "json_fields", "abs_tol": 0}, '{"year": 1843}', ref).details["precision"] == 1.0
    assert grade({"type": "json_fields", "fields": ["name"]}, pred, ref).score == 1.0
    assert grade({"type": "json_fields", "fields": ["ok"], "score": "recall"}, pred, ref).score == 0.0
    assert grade({"type": "json_fields", "score": "precision"}, '{"name": "x"}', ref).score == 0.0
    assert (
        grade({"type": "json_fields"}, "nothing", ref).reason
        == "no JSON object found (invalid JSON: Expecting value at 1:1)"
    )
    g = grade({"type": "json_fields"}, '{"a": 1}', Problem("r", "?", "plain text"))
    assert (g.score, g.parsed, g.reason) == (
        0.0,
        '{"a": 1}',
        "reference: no JSON object found (invalid JSON: Expecting value at 1:1)",
    )
    g = grade(
        {"type": "json_fields", "reference": "{{item.meta}}"},
        '{"k": [1, 2]}',
        Problem("r", "?", "", {"meta": {"k": [2, 3]}}),
    )
    assert g.details == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})  # lists compare as sets
    with pytest.raises(ConfigError, match="score 'accuracy' is not one of f1, precision, recall"):
        grader_from_config({"type": "json_fields", "score": "accuracy"})


# --- judge ------------------------------------------------------------------------------------------------------


class Judge:
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def generate(self, prompts, n, **kw):
        self.calls.append((prompts, n, kw))
        return [[SimpleNamespace(text=self.replies[i % len(self.replies)]) for i in range(n)] for _ in prompts]


def test_judge_reads_scores_and_labels():
    assert read_score("Score: 7 / 10.", [0, 10]) == (0.7, "")
    assert read_score("3", [1, 5]) == (0.5, "")
    assert read_score("5", [1, 5]) == (1.0, "") and read_score("1", [1, 5]) == (0.0, "")
    assert read_score("nothing", [0, 10]) == (None, "no score in the judge's reply")
    assert read_score("-1", [0, 10]) == (None, "judge score -1 outside [0, 10]")
    assert read_score("2.5 out of 3", [0, 3]) == (1.0, "")
    assert read_label("correctly", ["correct"]) is None  # whole words only
    assert read_label("CORRECT", ["correct", "incorrect"]) == "correct" and read_label("", ["a"]) is None
    cfg = {"type": "model", "prompt": "{{sample.output_text}}", "score_range": [0, 10], "n": 2,
           "temperature": 0.5, "max_new_tokens": 9, "seed": 3}  # fmt: skip
    j = Judge(["8", "?"])
    g = grade(cfg, "x", generator=j)
    assert (
        g.score == pytest.approx(0.4)
        and g.parsed is None
        and g.reason == "judge: 0.80, ? (no score in the judge's reply)"
    )
    assert g.details == {"judge_replies": ["8", "?"]}
    assert j.calls == [(["x"], 2, {"temperature": 0.5, "max_new_tokens": 9, "stop": None, "seed": 3})]
    one = grade({**cfg, "n": 1}, "x", generator=Judge(["6"]))
    assert (one.parsed, one.reason) == ("0.60", "judge: 0.60")
    lab = {"type": "model", "prompt": "p", "labels": ["yes", "no"], "passing_labels": ["yes"]}
    g = grade(lab, "x", generator=Judge(["well..."]))
    assert (g.score, g.parsed, g.reason) == (0.0, "?", "judge: ? (no label in the judge's reply)")
    g = grade(lab, "x", generator=Judge(["no"]))
    assert (g.score, g.parsed, g.reason) == (0.0, "no", "judge: no")


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({}, "give exactly one of 'score_range'"),
        ({"score_range": [0, 1], "labels": ["a"], "passing_labels": ["a"]}, "give exactly one"),
        ({"score_range": [1, 1]}, r"score_range must be \[low, high\] with low < high, got \[1, 1\]"),
        ({"score_range": [0, 1, 2]}, "score_range must be"),
        ({"labels": ["a"]}, r"passing_labels must be a non-empty subset of labels \(unknown: \[\]\)"),
        ({"labels": ["a"], "passing_labels": ["b"]}, r"\(unknown: \['b'\]\)"),
        ({"score_range": [0, 1], "n": 0}, "n must be >= 1"),
    ],
)
def test_judge_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig(prompt="p", **kw)


# --- multi and the registry -------------------------------------------------------------------------------------


def test_formulas_by_hand():
    assert evaluate_formula("a / b - -c + +d", {"a": 1.0, "b": 4.0, "c": 0.5, "d": 0.25}) == 1.0
    assert evaluate_formula("max(a, 0.5) * 2", {"a": 0.1}) == 1.0 and evaluate_formula("3", {}) == 3.0
    assert formula_names("min(a, b) + abs(c)") == {"a", "b", "c"}
    for bad, msg in [
        ("a +", "not valid syntax"),
        ("os.system(1)", "function 'os.system' is not allowed"),
        ("min()", r"min\(\) takes positional arguments only"),
        ("max(a, key=b)", r"max\(\) takes positional arguments only"),
        ("'x'", "only numbers are allowed as constants, not 'x'"),
        ("True", "only numbers are allowed as constants, not True"),
        ("a ** 2", "write a power as a \\^ b"),
        ("a if b else c", "IfExp is not allowed"),
    ]:
        with pytest.raises(ConfigError, match=rf"^formula '{re.escape(bad)}': {msg}"):
            parse_formula(bad)


def test_multi_grades_and_clips():
    cfg = {
        "type": "multi",
        "graders": {"e": {"type": "exact"}, "n": {"type": "numeric", "abs_tol": 5}},
        "formula": "e + n",
    }
    g = grade(cfg, "40")
    assert g.score == 1.0 and g.reason == "e=0 n=1 -> 1" and g.parsed is None
    g = grade(cfg, "42")
    assert g.score == 1.0 and g.reason == "e=1 n=1 -> 1 (clipped from 2)"
    assert g.details["e"] == {"score": 1.0, "parsed": "42", "reason": "equals the reference"}
    g = grade({**cfg, "formula": "e - n"}, "40")
    assert g.score == 0.0 and g.reason == "e=0 n=1 -> 0 (clipped from -1)"
    g = grade({**cfg, "formula": "n / e"}, "40")
    assert (g.score, g.parsed, g.reason) == (0.0, None, "e=0 n=1 -> division by zero") and "e" in g.details


def test_registry_errors_name_the_culprit(tmp_path):
    cases = [
        ([], r"^grader: expected a mapping with a 'type' key, got list$"),
        ({"name": "x"}, r"^grader: missing key 'type' \(one of exact, string_check, numeric, gsm8k, math"),
        ({"type": "zzzzzz"}, r"^grader: unknown type 'zzzzzz' \(valid: exact, "),
        ({"type": "multi", "graders": {"a": {"type": "exact"}}, "formula": "a", "extra": 1}, r"^grader 'multi': unknown key 'extra' \(valid: graders, calculate_output\)$"),
        ({"type": "multi", "graders": {}, "formula": "a"}, r"^grader 'multi': key 'graders' must map names to grader configs$"),
        ({"type": "multi", "graders": [1], "formula": "a"}, "key 'graders' must map"),
        ({"type": "multi", "graders": {"a": {"type": "exact"}}, "formula": " "}, r"^grader 'multi': key 'calculate_output' \(or 'formula'\) must be an arithmetic formula"),
        ({"type": "multi", "graders": {"a": {"type": "exact"}}}, "key 'calculate_output' \\(or 'formula'\\) must be"),
        ({"type": "multi", "graders": {"a b": {"type": "exact"}}, "formula": "1"}, r"^grader 'multi': grader name 'a b' must be an identifier"),
        ({"type": "multi", "graders": {"a": {"type": "exact"}}, "formula": "a + b"}, r"unknown grader name\(s\) 'b' \(graders: a\)"),
        ({"type": "multi", "graders": {"a": {"type": "numerc"}}, "formula": "a"}, r"^grader 'multi': grader 'a': unknown type 'numerc' \(did you mean 'numeric'\?\)$"),
        ({"type": "exact", "input": "{{sample.text}}"}, r"^grader 'exact': key 'input': template field 'sample.text' is not valid"),
        ({"type": "model", "prompt": "p", "score_range": [0, 1]}, r"^grader 'model': a model grader needs a judge generator \(on the command line: --judge-model\)$"),
    ]  # fmt: skip
    for config, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            grader_from_config(config)
    f = tmp_path / "g.yaml"
    f.write_text("type: exact\nname: ignored\n")
    assert load_grader(f)(P, "42").score == 1.0
    f.write_text("type: numerc\n")
    with pytest.raises(ConfigError, match=rf"^{f}: unknown type 'numerc'"):
        load_grader(f)
    f.write_text("type: multi\ngraders:\n  a:\n    type: exact\n    stript: true\nformula: a\n")
    with pytest.raises(ConfigError, match=rf"^{f} \(multi\): grader 'a' \(exact\): unknown key 'stript'"):
        load_grader(f)
    from reasonloop.graders import multi

    with pytest.raises(ConfigError, match="unknown grader name"):
        multi({"a": grader_from_config({"type": "exact"})}, "a + z")
    assert multi({"a": grader_from_config({"type": "exact"})}, "a / 2")(P, "42").score == 0.5


# --- python grader pieces (the sandboxed run itself: tests/test_sandbox.py and test_graders.py) -------------------


def test_python_grader_config_and_helpers():
    with pytest.raises(
        ValueError, match=r"give exactly one of 'source' \(a grade\(sample, item\) function\) or 'tests'"
    ):
        PythonConfig()
    with pytest.raises(ValueError, match="give exactly one"):
        PythonConfig(source="x", tests="y")
    lim = PythonConfig(tests="t", timeout_s=2.5, cpu_s=3, memory_mb=99, max_processes=4, max_output_bytes=77).limits
    assert (lim.wall_s, lim.cpu_s, lim.memory_mb, lim.max_processes, lim.max_output_bytes) == (2.5, 3, 99, 4, 77)
    two = "```python\nA = 1\n```\ntext\n```py\nB = 2\n```\n```\nC = 3\n```"
    assert extract_program(two) == "C = 3\n"  # the last fence, tagged or not
    assert extract_program("```python3\nD = 4\n```") == "D = 4\n" and extract_program("E = 5") == "E = 5"
    assert _last_error_line(b"Traceback\n  File x\nValueError: bad\n\n") == "ValueError: bad"
    assert _last_error_line(b"") == "" and _last_error_line(b"x" * 300) == "x" * 200
    assert _last_error_line(b"\xff oops") == "\ufffd oops"


# --- batch grading ----------------------------------------------------------------------------------------------


def test_batch_in_process_keeps_order_counts_errors_and_reports_progress():
    def flaky(problem, completion):
        if completion == "boom":
            raise KeyError("k")
        return Grade(0.5 if completion == "half" else 1.0, completion, "ok")

    assert safe_grade(flaky, P, "boom") == Grade(0.0, None, "error: KeyError: 'k'")
    assert safe_grade(flaky, P, "boom").details == {"error": True}
    long = safe_grade(lambda p, c: (_ for _ in ()).throw(ValueError("x" * 400)), P, "")
    assert len(long.reason) == 300
    seen = []
    res = grade_batch(flaky, [P] * 5, ["a", "boom", "half", "b", "c"], chunk_size=2, progress=seen.append)
    assert [g.score for g in res.grades] == [1.0, 0.0, 0.5, 1.0, 1.0] and res.errors == 1
    assert res.mean_score == pytest.approx(3.5 / 5) and seen == [2, 2, 1] and res.seconds >= 0
    assert [len(c) for c in iter_grades(flaky, [(P, "a")] * 3, chunk_size=2)] == [2, 1]
    assert list(iter_grades(flaky, [], workers=2)) == []
    with pytest.raises(ValueError, match="^2 problems but 1 completions$"):
        grade_batch(flaky, [P, P], ["a"])
    empty = BatchResult([], 0.0)
    assert (empty.mean_score, empty.errors, empty.samples_per_s) == (0.0, 0, float("inf"))
    assert BatchResult([Grade(1.0, None, "")] * 4, 2.0).samples_per_s == 2.0
    with pytest.raises(ConfigError, match=r"this grader cannot be sent to worker processes \(.*\); use workers=0"):
        list(iter_grades(lambda p, c: Grade(1.0, None, ""), [(P, "a")], workers=1))


# --- reasonloop grade's input -----------------------------------------------------------------------------------


def test_read_items_checks_every_line(tmp_path):
    f = tmp_path / "in.jsonl"
    with pytest.raises(DataError, match=r"in.jsonl: no such file$"):
        read_items(f)
    f.write_text(
        '{"id": 7, "question": "Q?", "prompt": "P?", "answer": 42, "completion": "42", "x": 1}\n\n'
        '{"problem": "R?", "answer": {"a": 1}, "completion": "c"}\n'
        '{"answer": "1", "completion": ""}\n'
    )
    (r1, p1, c1), (r2, p2, c2), (_, p3, _) = read_items(f)
    assert (p1.id, p1.prompt, p1.answer, p1.meta, c1) == ("7", "P?", "42", {"x": 1}, "42")  # prompt first
    assert (p2.id, p2.prompt, p2.answer, p2.meta, c2) == ("in-3", "R?", '{"a": 1}', {}, "c")
    assert (p3.id, p3.prompt, p3.answer) == ("in-4", "", "1") and r1["x"] == 1
    f.write_text('{"answer": {"é": [1]}, "completion": ""}\n')
    assert read_items(f)[0][1].answer == '{"é": [1]}'  # a non-text answer becomes its JSON, non-ASCII kept
    for line, msg in [
        ("{bad", r"in.jsonl:2: invalid JSON: Expecting property name enclosed in double quotes$"),
        ("[1]", r"in.jsonl:2: expected a JSON object, got list$"),
        ('{"completion": "x"}', r"in.jsonl:2: missing field 'answer'$"),
        ('{"answer": "x"}', r"in.jsonl:2: missing field 'completion'$"),
        ('{"answer": "x", "completion": 5}', r"in.jsonl:2: field 'completion' must be a string$"),
    ]:
        f.write_text('{"answer": "1", "completion": "1"}\n' + line + "\n")
        with pytest.raises(DataError, match=msg):
            read_items(f)


def test_grade_command_resumes_refuses_a_foreign_output_and_needs_a_judge_loader(tmp_path, capsys):
    grader = tmp_path / "g.yaml"
    grader.write_text("type: numeric\n")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"answer": "2", "completion": c}) + "\n" for c in ["2", "3", "2.5"]))
    args = SimpleNamespace(grader=str(grader), input=str(inp), output=str(out), workers=0, chunk_size=2,
                           judge_model=None, make_generator=None, progress_bar=None)  # fmt: skip
    out.write_text(json.dumps({"answer": "2", "completion": "2", "score": 1.0}) + "\n")  # one line already graded
    assert cmd_grade(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.0] and rows[1]["reason"] == "final number 3 != 2"
    assert rows[2]["parsed"] == "2.5" and "details" not in rows[2]
    printed = capsys.readouterr().out
    assert printed.startswith(
        "graded 2 samples, 1 already graded: mean score 0.0000, 0 scored 1, 2 scored 0, 0 partial, 0 errors;"
    )
    assert printed.rstrip().endswith(f"(0 workers); wrote {out}")
    out.write_text("".join(json.dumps({"score": 1}) + "\n" for _ in range(4)))
    foreign = (rf"^({out} has 4 lines but {inp} only 3: not an output of this input"
               rf"|{out}:1: not the grade of {inp} line 1: use a new --output file)$")  # fmt: skip
    with pytest.raises(DataError, match=foreign):
        cmd_grade(args)
    out.unlink()
    args.judge_model = "judge-dir"
    with pytest.raises(ReasonloopError, match="^--judge-model needs a model loader; this entry point has none$"):
        cmd_grade(args)
    loaded = []
    args.make_generator = lambda path: loaded.append(path) or Judge(["7"])
    grader.write_text("type: model\nprompt: '{{sample.output_text}}'\nscore_range: [0, 10]\n")
    args.workers = 2  # a judge holds a live model: graded in this process whatever --workers says
    assert cmd_grade(args) == 0 and loaded == ["judge-dir"]
    assert [json.loads(x)["score"] for x in out.read_text().splitlines()] == pytest.approx([0.7] * 3)
    assert "(0 workers)" in capsys.readouterr().out


def test_templates_and_numbers_edge_cases():
    # a json fence wins over an earlier bare object; a reference written with leading spaces is still decoded
    assert extract_json('first {"a": 1} then ```json\n{"b": 2}\n```') == ({"b": 2}, "")
    assert resolve("item.answer.x", Problem("q", "?", '  {"x": 5}'), "") == 5
    # values that are not text are written as JSON, non-ASCII kept as it is
    q = Problem("q", "?", "", {"names": ["é", "ü"]})
    assert render("names: {{item.names}}", q, "") == 'names: ["é", "ü"]'
    assert parse_number("12X") is None and parse_number("12.") == 12.0


def test_worker_pool_is_spawned_with_one_process_per_chunk_at_most(monkeypatch):
    import reasonloop.graders.batch as batch

    made = []
    real = batch.ProcessPoolExecutor

    def spy(n=None, **kw):
        made.append((n, kw["mp_context"].get_start_method()))
        return real(n, **kw)

    monkeypatch.setattr(batch, "ProcessPoolExecutor", spy)
    g = grader_from_config({"type": "exact"})
    res = grade_batch(g, [P] * 3, ["42", "41", "42"], workers=4, chunk_size=2)
    assert made == [(2, "spawn")] and [x.score for x in res.grades] == [1.0, 0.0, 1.0]  # 2 chunks: 2 processes
    made.clear()
    grade_batch(g, [P], ["42"], workers=4)
    assert made == [(1, "spawn")]  # one chunk: one process
    assert 0 <= res.seconds < 120
    made.clear()
    assert [x.score for x in grade_batch(g, [P], ["42"], workers=0).grades] == [1.0] and made == []  # in-process
    # 8 items a chunk by default
    seen = []
    grade_batch(g, [P] * 17, ["42"] * 17, progress=seen.append)
    assert seen == [8, 8, 1] and [len(c) for c in iter_grades(g, [(P, "42")] * 9)] == [8, 1]


def test_grade_command_summary_progress_and_details(tmp_path, monkeypatch, capsys):
    import argparse

    import reasonloop.graders.cli as grade_cli

    grader = tmp_path / "g.yaml"
    grader.write_text("type: json_fields\nreference: '{{item.ref}}'\n")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [
        {"ref": {"a": 1, "b": 2}, "completion": '{"a": 1, "b": 2}'},  # 1
        {"ref": {"a": 1}, "completion": '{"a": 2}'},  # 0
        {"ref": {"a": 1, "b": 2}, "completion": '{"a": 1, "b": 3}'},  # P = R = F1 = 1/2
        {"completion": '{"a": 1}'},  # no item.ref: a data error, graded 0 and counted
        {"ref": {"a": 1}, "completion": "nothing"},  # no JSON: 0
    ]
    inp.write_text("".join(json.dumps({"answer": "x", **r}) + "\n" for r in rows))
    ticks = iter([10.0, 10.5, 20.0, 20.5])  # each run grades in half a second
    import reasonloop.graders.batch as batch

    pools = []
    real_pool = batch.ProcessPoolExecutor
    monkeypatch.setattr(batch, "ProcessPoolExecutor", lambda n, **kw: pools.append(n) or real_pool(n, **kw))
    monkeypatch.setattr(grade_cli, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    bars = []

    def bar(total, desc):
        bars.append((total, desc, []))
        return contextlib.nullcontext(bars[-1][2].append)

    parser = argparse.ArgumentParser()
    grade_cli.add_grade_parser(parser.add_subparsers(), progress_bar=bar)
    args = parser.parse_args(["grade", "--grader", str(grader), "--input", str(inp), "--output", str(out),
                              "--workers", "1", "--chunk-size", "2"])  # fmt: skip
    assert args.func(args) == 0
    assert bars == [(5, "grading in.jsonl", [2, 2, 1])] and pools == [1]  # --workers 1: one worker process
    graded = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["score"] for g in graded] == pytest.approx([1.0, 0.0, 0.5, 0.0, 0.0])
    assert graded[2]["details"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert graded[3]["details"] == {"error": True} and "template field 'item.ref' not found" in graded[3]["reason"]
    assert "details" not in graded[4]  # a grade without details adds none
    assert capsys.readouterr().out == (
        "graded 5 samples: mean score 0.3000, 1 scored 1, 3 scored 0, 1 partial, 1 errors; "
        f"10.0 samples/s (1 workers); wrote {out}\n"
    )
    assert args.func(args) == 0  # everything already graded: nothing to do, and the summary says so
    assert capsys.readouterr().out == (
        "graded 0 samples, 5 already graded: mean score 0.0000, 0 scored 1, 0 scored 0, 0 partial, 0 errors; "
        f"0.0 samples/s (1 workers); wrote {out}\n"
    )


def test_grade_parser_options_and_help():
    import argparse

    parser = argparse.ArgumentParser()
    grade_cli_sub = parser.add_subparsers()
    from reasonloop.graders.cli import add_grade_parser

    add_grade_parser(grade_cli_sub)
    args = parser.parse_args(["grade", "--grader", "g", "--input", "i", "--output", "o"])
    assert (args.workers, args.chunk_size, args.judge_model, args.progress_bar, args.make_generator) == (
        2,
        8,
        None,
        None,
        None,
    )
    assert args.func is cmd_grade
    for missing in ("--grader", "--input", "--output"):
        argv = ["grade", "--grader", "g", "--input", "i", "--output", "o"]
        i = argv.index(missing)
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv[:i] + argv[i + 2 :])
        assert e.value.code == 2
    helps = {a.dest: a.help for a in grade_cli_sub.choices["grade"]._actions if a.dest != "help"}
    assert helps == {
        "grader": "YAML file with one grader config (see examples/graders/)",
        "input": "JSONL: problem fields ('answer', ...) and 'completion' per line",
        "output": "JSONL to write: the input plus score, parsed, reason",
        "workers": "grading processes; 0 grades in this process (default: 2)",
        "chunk_size": "items sent to a worker at a time (default: 8)",
        "judge_model": "model directory (or 'nano') for 'model' graders; grades in this process",
    }
    (command,) = grade_cli_sub._choices_actions
    assert command.help == "grade a JSONL file of completions with a grader from YAML (resumable)"


def test_json_fields_compares_booleans_and_nested_objects_exactly():
    ref = Problem("r", "?", '{"ok": true, "obj": {"a": 1, "b": 2}}')
    assert grade({"type": "json_fields", "fields": ["ok"]}, '{"ok": 1}', ref).score == 0.0  # true is not the number 1
    assert grade({"type": "json_fields", "fields": ["ok"]}, '{"ok": true}', ref).score == 1.0
    # a nested object matches as a whole, whatever its key order, and only when equal
    assert grade({"type": "json_fields", "fields": ["obj"]}, '{"obj": {"b": 2, "a": 1}}', ref).score == 1.0
    assert grade({"type": "json_fields", "fields": ["obj"]}, '{"obj": {"a": 1, "b": 3}}', ref).score == 0.0


def test_judge_config_messages_are_exact():
    with pytest.raises(
        ValueError, match=r"^give exactly one of 'score_range' \(score mode\) or 'labels' \(label mode\)$"
    ):
        ModelConfig(prompt="p")
    with pytest.raises(ValueError, match=r"^n must be >= 1$"):
        ModelConfig(prompt="p", score_range=[0, 1], n=0)


def test_grade_parser_passes_the_judge_loader_on():
    import argparse

    from reasonloop.graders.cli import add_grade_parser

    parser = argparse.ArgumentParser()
    loader = lambda path: None  # noqa: E731
    add_grade_parser(parser.add_subparsers(), make_generator=loader)
    assert parser.parse_args(["grade", "--grader", "g", "--input", "i", "--output", "o"]).make_generator is loader


def test_math_grader_passes_its_settings_to_math_verify_and_reports_what_it_parsed(monkeypatch):
    import math_verify

    from reasonloop.graders.math_equiv import MathConfig, _verify

    calls = []
    real_parse, real_verify = math_verify.parse, math_verify.verify

    def parse(text, **kw):
        calls.append(("parse", text, kw["parsing_timeout"], [type(c).__name__ for c in kw["extraction_config"]]))
        return real_parse(text, **kw)

    def verify(gold, pred, **kw):
        calls.append(("verify", kw))
        return real_verify(gold, pred, **kw)

    monkeypatch.setattr(math_verify, "parse", parse)
    monkeypatch.setattr(math_verify, "verify", verify)
    configs = ["LatexExtractionConfig", "ExprExtractionConfig"]
    g = _verify("\\frac{1}{2}", "So it is $\\boxed{0.5}$.", 3, 4)
    assert calls == [
        ("parse", "$\\frac{1}{2}$", 3, configs),  # a bare reference is LaTeX math without delimiters
        ("parse", "So it is $\\boxed{0.5}$.", 3, configs),
        ("verify", {"float_rounding": 4, "timeout_seconds": 3}),
    ]
    pred = real_parse("So it is $\\boxed{0.5}$.")
    gold = real_parse("$\\frac{1}{2}$")
    assert (g.score, g.parsed, g.reason) == (1.0, str(pred[-1]), f"{pred[-1]} equals {gold[-1]}")
    for delimited in ("$x$", "\\boxed{3}", "\\(2\\)", "\\[2\\]"):
        calls.clear()
        _verify(delimited, "2", 3, 4)
        assert calls[0][1] == delimited  # already delimited: parsed as written
    calls.clear()
    _verify("\\$5", "5", 3, 4)  # an escaped dollar is a dollar sign, not math: wrapped
    assert calls[0][1] == "$\\$5$"
    calls.clear()
    g = _verify(" ", "2", 3, 4)  # nothing to parse, wrapped or not
    assert (g.score, g.parsed, g.reason) == (0.0, None, "could not parse the reference ''")
    assert [c[1] for c in calls] == ["$$", ""]
    g = _verify("2", "no math here", 3, 4)
    assert (g.score, g.parsed, g.reason) == (0.0, None, "no answer found in the completion")
    # floats are compared after rounding to float_rounding places
    assert _verify("1/3", "0.333", 3, 2).score == 1.0 and _verify("1/3", "0.333", 3, 6).score == 0.0
    MathConfig(timeout_s=1)
    with pytest.raises(ValueError, match=r"^timeout_s must be >= 1 \(math-verify's timeouts are whole seconds\)$"):
        MathConfig(timeout_s=0)


def test_numeric_reference_forms_and_failed_grades():
    # the reference's #### line wins over its other numbers; a fraction is a number; otherwise its last number
    assert grade({"type": "numeric", "reference": "#### 5\nthen 7"}, "5").score == 1.0
    assert grade({"type": "numeric", "reference": "3/4"}, "0.75").score == 1.0
    assert grade({"type": "numeric", "reference": "costs 2 then 9"}, "9").score == 1.0
    g = grade({"type": "numeric", "reference": "no digits"}, "42")
    assert (g.score, g.parsed, g.reason) == (0.0, "42", "reference has no number")
    g = grade({"type": "gsm8k"}, "#### none")
    assert (g.score, g.parsed, g.reason) == (0.0, "none", "#### 'none' is not a number")
    grader_from_config({"type": "numeric", "abs_tol": 0, "rel_tol": 0})  # zero tolerance is allowed
    with pytest.raises(ConfigError, match=r"(abs_tol and rel_tol must be >= 0|key 'abs_tol' must be >= 0, got -1.0)$"):
        grader_from_config({"type": "numeric", "abs_tol": -1})


def test_formula_names_in_errors_and_python_config_message():
    from reasonloop.graders.multi import check_formula

    with pytest.raises(ConfigError, match=r"^formula 'a \+ z': unknown grader name\(s\) 'z' \(graders: a, b\)$"):
        check_formula("a + z", ["b", "a"])
    with pytest.raises(ConfigError, match=r"unknown grader name\(s\) 'x', 'y' \(graders: none\)$"):
        check_formula("y + x", [])
    with pytest.raises(
        ValueError, match=r"^give exactly one of 'source' \(a grade\(sample, item\) function\) or 'tests'$"
    ):
        PythonConfig()


def test_multi_hands_the_judge_to_its_model_graders_and_missing_files_are_named(tmp_path):
    cfg = {
        "type": "multi",
        "graders": {"j": {"type": "model", "prompt": "{{sample.output_text}}", "score_range": [0, 10]}},
        "formula": "j",
    }
    assert grade(cfg, "x", generator=Judge(["7"])).score == pytest.approx(0.7)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'none.yaml'}: grader file does not exist$"):
        load_grader(tmp_path / "none.yaml")


def test_text_similarity_metric_message_lists_the_metrics():
    every = "fuzzy_match, bleu, gleu, meteor, rouge_1, rouge_2, rouge_3, rouge_4, rouge_5, rouge_l, cosine"
    with pytest.raises(ConfigError, match=rf"metric': 'jaccard' is not one of {every}$"):
        grader_from_config({"type": "text_similarity", "metric": "jaccard"})
