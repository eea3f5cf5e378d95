"""The gsm8k and math graders on the real GSM8K test set and MATH-500: each reference solution against its own answer."""

from __future__ import annotations

import json
import re

from reasonloop.core import Problem
from reasonloop.graders import grade_batch, grader_from_config
from reasonloop.tasks import JsonlTask


def test_gsm8k_grader_on_every_reference_solution(shared_data):
    problems = JsonlTask(shared_data / "gsm8k" / "test.jsonl", "gsm8k").problems()
    assert len(problems) == 1319
    g = grader_from_config({"type": "gsm8k"})
    accepted = [g(p, p.meta["solution"]).score for p in problems]
    assert accepted.count(1.0) == len(problems), [p.id for p, s in zip(problems, accepted) if s != 1.0][:10]

    def change_final_number(solution: str) -> str:
        head, _, final = solution.rpartition("####")
        wrong = float(final.replace(",", "")) + 1
        return f"{head}#### {wrong:g}"

    rejected = [g(p, change_final_number(p.meta["solution"])).score for p in problems]
    assert rejected.count(0.0) == len(problems)


def test_math_grader_on_math500_reference_solutions(shared_data, capsys):
    rows = [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 500
    problems = [Problem(r["unique_id"], r["problem"], r["answer"]) for r in rows]
    g = grader_from_config({"type": "math"})
    # Each solution against its own answer, and against the next problem's answer (mostly a different value).
    shifted = [Problem(p.id, p.prompt, problems[(i + 1) % 500].answer) for i, p in enumerate(problems)]
    res = grade_batch(g, problems + shifted, [r["solution"] for r in rows] * 2, workers=2, chunk_size=25)
    own, other = res.grades[:500], res.grades[500:]
    disagreements = [
        {"id": p.id, "answer": p.answer, "boxed": _last_boxed(r["solution"]), "parsed": gr.parsed, "reason": gr.reason}
        for p, r, gr in zip(problems, rows, own)
        if gr.score != 1.0
    ]
    with capsys.disabled():  # shown in the test output, never hidden
        print(
            f"\nmath500: {500 - len(disagreements)}/500 reference solutions accepted ({res.samples_per_s:.0f} samples/s)"
        )
        for row in disagreements:
            print("  disagreement:", json.dumps(row, ensure_ascii=False))
    assert len(disagreements) <= 5, disagreements
    assert res.errors == 0
    # Against another problem's answer: rejected unless the two answers are the same text.
    differ = [
        gr for p, s, gr in zip(problems, shifted, other) if p.answer.replace(" ", "") != s.answer.replace(" ", "")
    ]
    wrongly_accepted = sum(gr.score for gr in differ)
    assert wrongly_accepted <= 0.01 * len(differ), wrongly_accepted


def _last_boxed(solution: str) -> str | None:
    at = solution.rfind("\\boxed")
    return solution[at : at + 80] if at >= 0 else None


def test_math_grader_rejects_wrong_boxed_answers_in_real_solutions(shared_data):
    rows = [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()][:40]
    g = grader_from_config({"type": "math"})
    changed = 0
    for r in rows:
        m = re.fullmatch(r"-?\d+", r["answer"].strip())
        if not m:
            continue
        wrong = r["solution"].replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{int(r['answer']) + 1}}}")
        if wrong != r["solution"]:
            changed += 1
            assert g(Problem(r["unique_id"], r["problem"], r["answer"]), wrong).score == 0.0, r["unique_id"]
    assert changed >= 10
