"""`arith`: a built-in world of multi-step arithmetic chains, evaluated left to right.

A problem is a chain such as ``Q: 12+7*3-5`` meaning ((12+7)*3)-5. Its canonical
solution writes one operation per step and ends with the answer::

    12+7=19
    19*3=57
    57-5=52
    A: 52

Every step is exactly checkable (`step_labels`), which gives exact step labels
for evaluating process verifiers. The hint variant of the prompt states the
answer, for STaR rationalisation. Problems are assigned to train or test by a
hash of the expression, so the splits never overlap whatever the seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from reasonloop.core import Problem, bounded, join_steps
from reasonloop.tasks.base import WorldTask

STEP_RE = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@dataclass(frozen=True)
class ArithConfig:
    """Knobs of the arithmetic world."""

    min_ops: int = bounded(2, ge=1)  # fewest operations in a chain
    max_ops: int = bounded(4, ge=1)  # most operations in a chain
    start_max: int = bounded(10, ge=1)  # first number is drawn from [1, start_max]
    operand_max: int = bounded(9, ge=1)  # operands of + and - are drawn from [1, operand_max]
    mul_max: int = bounded(3, ge=2)  # operands of * and / are drawn from [2, mul_max]
    value_max: int = bounded(50, ge=1)  # every intermediate value stays in [0, value_max]
    operators: str = "+-*"  # which of + - * / may appear
    test_fraction: float = bounded(0.2, gt=0, lt=1)  # share of the expression space that is test-only

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        bad = set(self.operators) - set(OPS)
        if bad or not self.operators:
            raise ValueError(f"operators must be a non-empty subset of '+-*/', got '{self.operators}'")


@dataclass(frozen=True)
class Chain:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def expression(self) -> str:
        return str(self.start) + "".join(f"{op}{b}" for op, b in self.ops)

    def values(self) -> list[int]:
        """Running values after each operation."""
        out, v = [], self.start
        for op, b in self.ops:
            v = OPS[op](v, b)
            out.append(v)
        return out

    def steps(self) -> list[str]:
        steps, v = [], self.start
        for (op, b), nv in zip(self.ops, self.values()):
            steps.append(f"{v}{op}{b}={nv}")
            v = nv
        return steps + [f"A: {v}"]


def parse_expression(expr: str) -> Chain:
    """Inverse of `Chain.expression`.

    >>> parse_expression("12+7*3-5").values()
    [19, 57, 52]
    """
    tokens = re.findall(r"\d+|[-+*/]", expr)
    ops = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens) - 1, 2))
    return Chain(int(tokens[0]), ops)


def random_chain(rng: random.Random, cfg: ArithConfig, n_ops: int) -> Chain:
    v = rng.randint(1, cfg.start_max)
    start, ops = v, []
    while len(ops) < n_ops:
        op = rng.choice(cfg.operators)
        b = rng.randint(2, cfg.mul_max) if op in "*/" else rng.randint(1, cfg.operand_max)
        if op == "/" and v % b:
            continue
        nv = OPS[op](v, b)
        if 0 <= nv <= cfg.value_max:
            ops.append((op, b))
            v = nv
    return Chain(start, tuple(ops))


def step_arithmetic_is_right(step: str) -> bool | None:
    """Whether an `a op b = c` step computes correctly; None if the step is not an operation.

    >>> step_arithmetic_is_right("19*3=57"), step_arithmetic_is_right("19*3=56"), step_arithmetic_is_right("A: 5")
    (True, False, None)
    """
    m = STEP_RE.match(step)
    if not m:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    if op == "/" and (b == 0 or a % b):
        return False
    return OPS[op](a, b) == c


class ArithTask(WorldTask):
    name = "arith"

    def __init__(self, config: ArithConfig | None = None):
        self.config = config or ArithConfig()

    def problem_from_chain(self, chain: Chain) -> Problem:
        answer = str(chain.values()[-1])
        expr = chain.expression
        return Problem(
            id=f"arith-{expr}",
            prompt=f"Q: {expr}\n",
            answer=answer,
            meta={
                "n_ops": len(chain.ops),
                "hint_prompt": f"Q: {expr} (answer {answer})\n",
                "solution": join_steps(chain.steps(), self.step_delimiter),
                "source": "arith",
            },
        )

    def problems(self, split: str = "test", n: int = 100, seed: int = 0) -> list[Problem]:
        """`n` distinct problems of `split`, drawn deterministically from `seed`."""

        def draw(rng: random.Random):
            chain = random_chain(rng, self.config, rng.randint(self.config.min_ops, self.config.max_ops))
            return chain.expression, lambda: self.problem_from_chain(chain)

        return self.distinct_problems(split, n, seed, draw)

    def facts(self, n: int, seed: int = 0) -> list[str]:
        """`n` single operations `a op b=c` drawn from the chains of the world (a "pretraining" corpus)."""
        rng = random.Random(f"arith/facts/{seed}")
        out: list[str] = []
        while len(out) < n:
            chain = random_chain(rng, self.config, self.config.max_ops)
            out.extend(chain.steps()[:-1])
        return out[:n]

    def is_correct(self, problem: Problem, completion: str) -> bool:
        return self.extract_answer(completion) == problem.answer

    def step_labels(self, problem: Problem, steps: list[str]) -> list[bool]:
        """Exact correctness of each step in context.

        An operation step is correct when its arithmetic is right, its left operand
        is the value the previous step produced, and its operator and right operand
        are the next ones in the problem. The answer step is correct when it states
        the last value after all operations. Steps after an error are judged given
        the (possibly wrong) values written before them, so the first False is the
        first error, as in ProcessBench.
        """
        chain = parse_expression(problem.prompt.removeprefix("Q:").strip().split()[0])
        labels: list[bool] = []
        value, k = chain.start, 0
        for step in steps:
            m = STEP_RE.match(step)
            if m:
                a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                ok = (
                    k < len(chain.ops)
                    and a == value
                    and (op, b) == chain.ops[k]
                    and bool(step_arithmetic_is_right(step))
                )
                labels.append(ok)
                value, k = c, k + 1
            else:
                ans = self.extract_answer(step)
                labels.append(ans is not None and k == len(chain.ops) and ans == str(value))
        return labels

    def verification_checks(self, problem: Problem, steps: list[str]) -> list[tuple[str, bool]]:
        """A checker's note on each step and whether it passes, up to the first that fails (GenRM-CoT rationales).

        An operation step is checked for its left operand (the value so far), the
        operator and operand it takes from the question (the next ones), and its
        arithmetic; the answer line for stating the last value once every operation
        is done. The notes stop at the first failing step, the one `first_error`
        names; steps that all pass but never state an answer get a closing failed
        note. The verdict (all pass) is process correctness: a right answer reached
        through a wrong step fails here although `is_correct` accepts it.

        >>> t = ArithTask()
        >>> p = t.problem_from_chain(parse_expression("12+7*3-5"))
        >>> t.verification_checks(p, ["12+7=19", "19*3=56", "56-5=51", "A: 51"])
        [('value 12, next +7; 12+7=19', True), ('value 19, next *3; 19*3=57 not 56', False)]
        >>> t.verification_checks(p, ["12+7=19", "19-5=14"])[1:]
        [('value 19, next *3 not -5', False)]
        """
        chain = parse_expression(problem.prompt.removeprefix("Q:").strip().split()[0])
        value, k = chain.start, 0
        notes: list[tuple[str, bool]] = []
        for step in steps:
            m = STEP_RE.match(step)
            if m:
                a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                if k >= len(chain.ops):
                    note, ok = f"value {value}, no operation left", False
                elif a != value:
                    note, ok = f"value {value} not {a}", False
                elif (op, b) != chain.ops[k]:
                    note, ok = f"value {value}, next {''.join(map(str, chain.ops[k]))} not {op}{b}", False
                elif not step_arithmetic_is_right(step):
                    right = "not whole" if op == "/" and (b == 0 or a % b) else f"{a}{op}{b}={OPS[op](a, b)}"
                    note, ok = f"value {value}, next {op}{b}; {right} not {c}", False
                else:
                    note, ok = f"value {value}, next {op}{b}; {a}{op}{b}={c}", True
                value, k = c, k + 1
            else:
                ans = self.extract_answer(step)
                if ans is None:
                    note, ok = "not a step", False
                elif k < len(chain.ops):
                    note, ok = f"answer {ans} with {len(chain.ops) - k} operations left", False
                elif ans != str(value):
                    note, ok = f"answer {ans} not {value}", False
                else:
                    note, ok = f"answer {ans} is the value", True
            notes.append((note, ok))
            if not ok:
                return notes
        if not steps or self.extract_answer(steps[-1]) is None:
            notes.append(("no answer", False))
        return notes

    def first_error(self, problem: Problem, steps: list[str]) -> int | None:
        """Index of the first wrong step, or None if every step is right."""
        for i, ok in enumerate(self.step_labels(problem, steps)):
            if not ok:
                return i
        return None
