"""`reasonloop grade`: grade a JSONL file of completions with a grader from YAML.

Each input line holds the problem fields (`answer` required; `question`,
`prompt` or `problem` for the prompt; `id` optional; any other fields become
`item.<field>` for templates) and a `completion`. Each output line is the input
plus `score`, `parsed` and `reason` (and `details` when the grader gives any).
Output is appended a line at a time, so rerunning the same command resumes
after the last line written: output line k belongs to input line k.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonloop.core import DataError, JsonlWriter, Problem, ReasonloopError, ranged, repair_jsonl
from reasonloop.core.jsonl import read_jsonl_numbered
from reasonloop.core.lock import output_lock

PROMPT_FIELDS = ("prompt", "question", "problem")
OUTPUT_FIELDS = ("score", "parsed", "reason", "details")


def read_items(path: Path) -> list[tuple[dict[str, Any], Problem, str]]:
    """Every input record with its Problem and completion; a malformed line fails naming file:line."""
    out = []
    for lineno, rec in read_jsonl_numbered(path, hand_written=True):
        where = f"{path}:{lineno}"
        for key in ("answer", "completion"):
            if key not in rec:
                raise DataError(f"{where}: missing field '{key}'")
        if not isinstance(rec["completion"], str):
            raise DataError(f"{where}: field 'completion' must be a string")
        answer = rec["answer"] if isinstance(rec["answer"], str) else json.dumps(rec["answer"], ensure_ascii=False)
        prompt = next((str(rec[k]) for k in PROMPT_FIELDS if k in rec), "")
        meta = {k: v for k, v in rec.items() if k not in ("id", "answer", "completion", *PROMPT_FIELDS)}
        problem = Problem(str(rec.get("id", f"{path.stem}-{lineno}")), prompt, answer, meta)
        out.append((rec, problem, rec["completion"]))
    return out


def check_output(out: Path, inp: Path, items: list[tuple[dict[str, Any], Problem, str]]) -> int:
    """How many items `out` already grades; an output of another input or of another kind is an error."""
    if not out.exists():
        return 0
    repair_jsonl(out)
    done = 0
    for lineno, rec in read_jsonl_numbered(out):
        if done >= len(items):
            raise DataError(f"{out} has more lines than {inp} ({len(items)}): not an output of this input")
        if "score" not in rec or rec.get("completion") != items[done][0]["completion"]:
            raise DataError(f"{out}:{lineno}: not the grade of {inp} line {done + 1}: use a new --output file")
        done += 1
    return done


def cmd_grade(args: argparse.Namespace) -> int:
    inp, out = Path(args.input), Path(args.output)
    items = read_items(inp)  # every input and output check before a judge model is loaded
    if out.is_dir():
        raise DataError(f"{out}: --output is a directory; give a JSONL file path")
    with output_lock(out):  # one writer per output file
        return _grade_into(args, inp, out, items)


def _grade_into(args: argparse.Namespace, inp: Path, out: Path, items: list) -> int:
    from reasonloop.graders import iter_grades, load_grader

    done = check_output(out, inp, items)
    generator = None
    if args.judge_model:
        if args.make_generator is None:
            raise ReasonloopError("--judge-model needs a model loader; this entry point has none")
        generator = args.make_generator(args.judge_model)
    grader = load_grader(args.grader, generator=generator)
    todo = items[done:]
    workers = 0 if generator is not None else args.workers
    progress = args.progress_bar or (lambda total, desc: contextlib.nullcontext(lambda k=1: None))
    scores: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    with progress(len(todo), f"grading {inp.name}") as advance, JsonlWriter(out) as writer:
        chunks = iter_grades(grader, [(p, c) for _, p, c in todo], workers=workers, chunk_size=args.chunk_size)
        i = 0
        for chunk in chunks:
            for grade in chunk:
                rec = dict(todo[i][0])
                rec.update(score=grade.score, parsed=grade.parsed, reason=grade.reason)
                if grade.details:
                    rec["details"] = grade.details
                writer.write(rec)
                scores.append(grade.score)
                errors += bool(grade.details.get("error"))
                i += 1
            advance(len(chunk))
    seconds = time.perf_counter() - t0
    n = len(scores)
    mean = sum(scores) / n if n else 0.0
    full = sum(1 for s in scores if s >= 1.0)
    zero = sum(1 for s in scores if s <= 0.0)
    rate = n / seconds if seconds > 0 else 0.0
    resumed = f", {done} already graded" if done else ""
    print(
        f"graded {n} samples{resumed}: mean score {mean:.4f}, {full} scored 1, {zero} scored 0, "
        f"{n - full - zero} partial, {errors} errors; {rate:.1f} samples/s ({workers} workers); wrote {out}"
    )
    return 0


def add_grade_parser(
    subparsers: Any,
    progress_bar: Callable[[int, str], Any] | None = None,
    make_generator: Callable[[str], Any] | None = None,
) -> None:
    """Add `grade` to a CLI. `progress_bar(total, description)` yields `advance(k)`; `make_generator(path)` loads a judge."""
    p = subparsers.add_parser("grade", help="grade a JSONL file of completions with a grader from YAML (resumable)")
    p.add_argument("--grader", required=True, help="YAML file with one grader config (see examples/graders/)")
    p.add_argument("--input", required=True, help="JSONL: problem fields ('answer', ...) and 'completion' per line")
    p.add_argument("--output", required=True, help="JSONL to write: the input plus score, parsed, reason")
    p.add_argument(
        "--workers", type=ranged(int, ge=0), default=2, help="grading processes; 0 grades in this process (default: 2)"
    )
    p.add_argument(
        "--chunk-size", type=ranged(int, ge=1), default=8, help="items sent to a worker at a time (default: 8)"
    )
    p.add_argument("--judge-model", help="model directory (or 'nano') for 'model' graders; grades in this process")
    p.set_defaults(func=cmd_grade, progress_bar=progress_bar, make_generator=make_generator)
