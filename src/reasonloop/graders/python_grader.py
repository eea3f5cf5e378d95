"""The `python` grader: user Python run in the sandbox, in one of two modes.

- `source`: grader code defining `grade(sample, item) -> float` (the OpenAI
  python-grader convention). `sample` is `{"output_text", "output_json"}`,
  `item` the problem's fields (`id`, `prompt`, `answer`, meta keys). The float is
  clipped to [0, 1] for the score; a `multi` formula sees it unclipped, as in the
  schema (`details["value"]`). The schema's `image_tag` is accepted and ignored.
- `tests`: test code (asserts) run after the program in the completion (the last
  ```python fence, or the whole text). Score 1 when everything runs to the end.

Either way the result travels back on a private pipe together with a random
nonce the child reads from stdin, so a program that calls `os._exit(0)` or
prints a fake verdict does not pass. (Code that digs the nonce out of the
interpreter's frames could still forge it: the sandbox protects the machine,
not the reward from a determined adversary.)
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from dataclasses import dataclass

from reasonloop.core import Problem, bounded
from reasonloop.graders.base import Grade, as_text, extract_json, grades_missing_fields_zero, item_fields, render_key
from reasonloop.graders.sandbox import ISOLATION, SandboxLimits, run_sandboxed

# Runs inside the sandbox. Reads {"nonce", "mode", ...} from stdin, writes "<nonce> <json>" to the result fd.
BOOT = r"""
import json, os, sys
_spec = json.loads(sys.stdin.read())
_nonce, _fd = _spec.pop("nonce"), int(os.environ.pop("REASONLOOP_RESULT_FD"))
def _send(value):
    os.write(_fd, (_nonce + " " + json.dumps(value)).encode())
if _spec["mode"] == "source":
    _ns = {"__name__": "grader"}
    exec(compile(open("grader.py").read(), "grader.py", "exec"), _ns)
    _send(float(_ns["grade"](_spec["sample"], _spec["item"])))
else:
    _code = open("solution.py").read() + "\n\n" + open("tests.py").read()
    exec(compile(_code, "solution.py", "exec"), {"__name__": "__main__"})
    _send(1.0)
"""

CODE_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class PythonConfig:
    """User grader source, or tests for the program in the completion, run in the sandbox."""

    source: str | None = None  # code defining grade(sample, item) -> float
    tests: str | None = None  # test code (template allowed, e.g. "{{item.tests}}") run after the completion's program
    timeout_s: float = bounded(5.0, gt=0)  # wall-clock limit
    cpu_s: int = bounded(5, ge=1)  # CPU-time limit
    memory_mb: int = bounded(1024, ge=16)  # address-space limit
    max_processes: int = bounded(32, ge=1)  # process and thread limit
    max_output_bytes: int = bounded(65536, ge=0)  # stdout/stderr kept for the reason
    isolation: str = "auto"  # auto (bwrap, else our namespaces; $REASONLOOP_SANDBOX), bwrap, namespaces or weak
    image_tag: str | None = None  # the schema's runtime image: accepted and ignored (the sandbox runs this Python)

    def __post_init__(self) -> None:
        if (self.source is None) == (self.tests is None):
            raise ValueError("give exactly one of 'source' (a grade(sample, item) function) or 'tests'")
        if self.isolation not in ISOLATION:
            raise ValueError(f"key 'isolation' must be one of {', '.join(ISOLATION)}, got {self.isolation!r}")

    @property
    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            wall_s=self.timeout_s,
            cpu_s=self.cpu_s,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
            max_output_bytes=self.max_output_bytes,
            isolation=self.isolation,
        )


def extract_program(completion: str) -> str:
    """The last ```python fence, else the whole completion.

    >>> extract_program("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    """
    fences = CODE_FENCE_RE.findall(completion)
    return fences[-1] if fences else completion


def _last_error_line(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


@grades_missing_fields_zero
def python_grade(cfg: PythonConfig, problem: Problem, completion: str) -> Grade:
    """>>> p = Problem("1", "Write add(a, b).", "")
    >>> cfg = PythonConfig(tests="assert add(2, 3) == 5")
    >>> python_grade(cfg, p, "```python\\ndef add(a, b):\\n    return a + b\\n```").score
    1.0
    >>> python_grade(cfg, p, "def add(a, b):\\n    return a - b").reason
    'tests failed: AssertionError'
    >>> src = "def grade(sample, item):\\n    return len(sample['output_text']) / 10"
    >>> python_grade(PythonConfig(source=src), p, "abcd").score
    0.4
    """
    nonce = secrets.token_hex(16)
    if cfg.source is not None:
        obj, _ = extract_json(completion)
        spec = {
            "mode": "source",
            "sample": {"output_text": completion, "output_json": obj},
            "item": item_fields(problem),
        }
        files = {"grader.py": cfg.source}
        parsed = None
    else:
        program = extract_program(completion)
        spec = {"mode": "tests"}
        files = {"solution.py": program, "tests.py": as_text(render_key(cfg.tests or "", "tests", problem, completion))}
        parsed = program
    spec["nonce"] = nonce
    res = run_sandboxed(
        [sys.executable, "-I", "-c", BOOT], files=files, stdin=json.dumps(spec).encode(), limits=cfg.limits
    )
    verdict = res.channel.decode("utf-8", "replace")
    if res.ok and verdict.startswith(nonce + " "):
        value = json.loads(verdict[len(nonce) + 1 :])
        if cfg.source is None:
            return Grade(1.0, parsed, "tests passed")
        if value != value:  # NaN
            return Grade(0.0, parsed, "grade() returned NaN")
        score = min(1.0, max(0.0, value))
        reason = f"grade() returned {value:g}" + (" (clipped)" if score != value else "")
        return Grade(score, parsed, reason, {"value": value})  # a multi formula sees the value itself
    what = "tests failed" if cfg.source is None else "grader failed"
    if res.error:
        return Grade(0.0, parsed, f"{what}: {res.error}")
    err = _last_error_line(res.stderr)
    if res.returncode == 0:
        err = "exited before finishing"
    elif not err:
        err = f"exit status {res.returncode}"
    return Grade(0.0, parsed, f"{what}: {err}")
