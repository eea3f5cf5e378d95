"""Layer 2: verifiable rewards. A grader is a plain function `(problem, completion) -> Grade`, score in [0, 1].

Built in: `exact`, `string_check`, `numeric`, `gsm8k`, `math` (math-verify),
`json_fields`, `text_similarity`, `python` (sandboxed), `model` (a generator as
judge) and `multi` (a formula over named graders). Build one from a dict or YAML
file with `grader_from_config` / `load_grader`; grade many in worker processes
with `grade_batch`; run `reasonloop grade` on a JSONL file.
"""

from reasonloop.graders.base import Grade, Grader, extract_json
from reasonloop.graders.batch import BatchResult, grade_batch, iter_grades, safe_grade
from reasonloop.graders.registry import GRADERS, TYPES, grader_from_config, load_grader, multi
from reasonloop.graders.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_sandboxed

__all__ = [
    "GRADERS",
    "TYPES",
    "BatchResult",
    "Grade",
    "Grader",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "extract_json",
    "grade_batch",
    "grader_from_config",
    "iter_grades",
    "load_grader",
    "multi",
    "run_sandboxed",
    "safe_grade",
]
