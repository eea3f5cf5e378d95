"""Problems from JSONL files: GSM8K format, MATH format, plain `prompt`/`answer` files, or any field mapping.

- GSM8K: `question`, `answer` (worked solution whose last line is ``#### N``).
- MATH: `problem`, `solution` (LaTeX, answer in ``\\boxed{}``), `answer`.
- jsonl: `prompt` (shown to the model as it is) and `answer` (a string, or any JSON value: an object answer
  is kept as its JSON text, so grader templates reach its fields as ``{{item.answer.field}}``); every other
  field of the line is the problem's `meta`, reachable as ``{{item.field}}`` (what reinforcement fine-tuning
  example files look like).

Instruct models (`chat`): with a chat renderer (`models.chat_renderer(tokenizer)`, the model's own
`apply_chat_template`), a problem's prompt is the model's chat text for a system message (the line's `system`
field, else the task's `system_prompt`, else none) and a user message holding the question as the file has it,
ending where the assistant's answer begins. Without one, a system prompt is put before the formatted question,
followed by a blank line. The prompt is text either way, so sampling, training pairs and serving use it unchanged.

A malformed line raises `DataError` naming ``file:line`` and the reason, as does
a question longer than `JsonlFormat.max_prompt_chars` (a line longer than
`core.jsonl.MAX_LINE_BYTES` is refused before it is read whole).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import DataError, Grade, Problem, split_steps
from reasonloop.core.jsonl import read_jsonl_numbered
from reasonloop.tasks.base import check_grade, check_split

NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class JsonlFormat:
    """How to read problems from a JSONL file."""

    prompt_field: str  # field holding the question text
    answer_field: str  # field holding the reference answer (or worked solution)
    answer_style: str = "plain"  # "gsm8k": answer after '#### '; "plain": the field as is
    solution_field: str | None = None  # field holding a worked solution, kept in meta
    id_field: str | None = None  # field holding a stable id (else file name + line)
    prompt_template: str = "Question: {prompt}\nAnswer:"  # how the question is shown to the model
    step_delimiter: str = "\n"
    max_prompt_chars: int = 100_000  # a longer question is an error naming file:line (models see far fewer tokens)


FORMATS = {
    "gsm8k": JsonlFormat("question", "answer", answer_style="gsm8k", solution_field="answer"),
    "math": JsonlFormat("problem", "answer", solution_field="solution", id_field="unique_id"),
    "jsonl": JsonlFormat("prompt", "answer", prompt_template="{prompt}", id_field="id"),
}


def gsm8k_final_answer(text: str) -> str | None:
    """The number after ``####`` with commas removed.

    >>> gsm8k_final_answer("so 3 + 4 = 7\\n#### 1,007")
    '1007'
    """
    m = re.search(r"####\s*(.+?)\s*$", text.strip())
    if not m:
        return None
    return m.group(1).replace(",", "").replace("$", "").strip()


def last_number(text: str) -> str | None:
    """The last number in `text`, without commas or dollar signs.

    >>> last_number("She pays $1,200.50 in total.")
    '1200.50'
    """
    found = NUMBER_RE.findall(text)
    return found[-1].replace(",", "").replace("$", "") if found else None


def to_example(problem: Problem) -> dict[str, Any]:
    """A problem as a line of a `jsonl` example file (what `reasonloop problems` writes; reading it back with
    the `jsonl` format gives the same prompt, answer and meta). An answer that is JSON object or list text is
    written as the object, so the file reads naturally; a world's hint prompt, and a worked solution that is
    only the answer again, are left out.

    >>> to_example(Problem("e1", "Q: Ada, 1843.", '{"name":"Ada","year":1843}', {"kind": "person"}))
    {'id': 'e1', 'prompt': 'Q: Ada, 1843.', 'answer': {'name': 'Ada', 'year': 1843}, 'kind': 'person'}
    """
    answer: Any = problem.answer
    if answer.lstrip().startswith(("{", "[")):
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError:
            pass
    drop = {"source", "source_line", "id", "prompt", "answer", "hint_prompt"}
    if problem.meta.get("solution") == problem.answer:
        drop.add("solution")
    meta = {k: v for k, v in problem.meta.items() if k not in drop}
    return {"id": problem.id, "prompt": problem.prompt, "answer": answer, **meta}


ChatRenderer = Callable[[list[dict[str, str]]], str]  # chat messages -> the prompt text, up to the assistant's turn


class JsonlTask:
    """Problems read from a file. A file has one split: `problems(split=...)` returns it for either name.

    `system_prompt` and `chat` (a `ChatRenderer`) shape the prompts for instruct models (module docstring)."""

    def __init__(
        self,
        path: str | Path,
        fmt: JsonlFormat | str = "gsm8k",
        name: str | None = None,
        *,
        system_prompt: str = "",
        chat: ChatRenderer | None = None,
    ):
        self.path = Path(path)
        self.format = FORMATS[fmt] if isinstance(fmt, str) else fmt
        self.name = name or (fmt if isinstance(fmt, str) else "jsonl")
        self.step_delimiter = self.format.step_delimiter
        self.system_prompt = system_prompt
        self.chat = chat
        self._problems: list[Problem] | None = None

    def _prompt(self, question: str, system: str) -> str:
        if self.chat is None:
            formatted = self.format.prompt_template.format(prompt=question)
            return f"{system}\n\n{formatted}" if system else formatted
        messages = [{"role": "system", "content": system}] if system else []
        return self.chat([*messages, {"role": "user", "content": question}])

    def load(self) -> list[Problem]:
        if self._problems is not None:
            return self._problems
        f = self.format
        out: list[Problem] = []
        for lineno, rec in read_jsonl_numbered(self.path, drop_torn_tail=False):
            where = f"{self.path}:{lineno}"
            for key in (f.prompt_field, f.answer_field):
                if key not in rec:
                    raise DataError(f"{where}: missing field '{key}'")
            if not isinstance(rec[f.prompt_field], str):
                raise DataError(
                    f"{where}: field '{f.prompt_field}' must be a string, not {type(rec[f.prompt_field]).__name__}"
                )
            question = rec[f.prompt_field]
            if len(question) > f.max_prompt_chars:
                raise DataError(
                    f"{where}: field '{f.prompt_field}' is {len(question):,} characters, "
                    f"more than the limit of {f.max_prompt_chars:,}"
                )
            value = rec[f.answer_field]
            raw_answer = (
                value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            )
            if f.answer_style == "gsm8k":
                answer = gsm8k_final_answer(raw_answer)
                if answer is None:
                    raise DataError(f"{where}: field '{f.answer_field}' has no '#### <answer>' line")
            else:
                answer = raw_answer.strip()
            pid = str(rec[f.id_field]) if f.id_field and f.id_field in rec else f"{self.path.stem}-{lineno}"
            system = rec.get("system", self.system_prompt)
            if not isinstance(system, str):
                raise DataError(f"{where}: field 'system' must be a string, not {type(system).__name__}")
            meta = {k: v for k, v in rec.items() if k not in (f.prompt_field, f.answer_field, f.solution_field)}
            if f.solution_field and f.solution_field in rec:
                meta["solution"] = rec[f.solution_field]
            meta["source"] = str(self.path)
            meta["source_line"] = lineno
            prompt = self._prompt(question, system)
            out.append(Problem(id=pid, prompt=prompt, answer=answer, meta=meta))
        self._problems = out
        return out

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        check_split(split)
        probs = self.load()
        return probs if n is None else probs[:n]

    def steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)

    def extract_answer(self, completion: str) -> str | None:
        return gsm8k_final_answer(completion) or last_number(completion)

    def grade(self, problem: Problem, completion: str) -> Grade:
        """`is_correct` as a grader; a grader file (`reasonloop.graders`, e.g. `math`) gives fuller checks."""
        return check_grade(self, problem, completion)

    def is_correct(self, problem: Problem, completion: str) -> bool:
        """Numeric comparison when both sides are numbers, else exact string match.

        The graders layer provides fuller checks (math equivalence via math-verify).
        """
        got = self.extract_answer(completion)
        if got is None:
            return False
        try:
            return abs(float(got) - float(problem.answer)) < 1e-6
        except ValueError:
            return got.strip() == problem.answer.strip()
