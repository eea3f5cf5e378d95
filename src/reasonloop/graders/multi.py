"""The `multi` grader: named graders combined by an arithmetic formula (the schema's `calculate_output`).

The formula is the OpenAI schema's: numbers, grader names, `+ - * /`, `^`
(power, binding tighter than unary minus and grouping to the right, as in
mathematics: `-a^2 = -(a^2)`, `2^3^2 = 2^9`),
parentheses and the functions `min`, `max`, `abs`, `floor`, `ceil`, `exp`,
`sqrt`, `log` (natural). It is parsed with `ast` (`^` read as `**`) and only an
allow-list of nodes is accepted; nothing is ever passed to `eval`.

A name stands for its grader's value: the score in [0, 1], except where the
schema gives a raw number: a score model's value in its `range` and the float a
python grader's `grade()` returned (both kept in `details["value"]`). The result
is clipped to [0, 1]; a division by zero or a math domain error (`log(0)`)
scores 0 with that reason.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Mapping

from reasonloop.core import ConfigError, Problem
from reasonloop.graders.base import Grade, Grader

BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp}
FUNCTIONS |= {"sqrt": math.sqrt, "log": math.log}
UNARY_FUNCTIONS = ("abs", "floor", "ceil", "exp", "sqrt", "log")  # exactly one argument
ALLOWED = ", ".join(FUNCTIONS)


@functools.lru_cache(maxsize=64)
def parse_formula(formula: str) -> ast.Expression:
    """Parse and check `formula`; ConfigError for anything outside the allow-list.

    >>> parse_formula("__import__('os')")
    Traceback (most recent call last):
    ...
    reasonloop.core.types.ConfigError: formula '__import__('os')': function '__import__' is not allowed (use min, max, abs, floor, ceil, exp, sqrt, log)
    """
    if "**" in formula:  # the schema writes a power ^; ** would be read the same, but one spelling is enough
        raise ConfigError(f"formula '{formula}': write a power as a ^ b")
    try:
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"formula '{formula}': not valid syntax ({e.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ConfigError(f"formula '{formula}': function '{name}' is not allowed (use {ALLOWED})")
            if node.keywords or not node.args:
                raise ConfigError(f"formula '{formula}': {node.func.id}() takes positional arguments only")
            if node.func.id in UNARY_FUNCTIONS and len(node.args) != 1:
                raise ConfigError(f"formula '{formula}': {node.func.id}() takes one argument")
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                raise ConfigError(f"formula '{formula}': only numbers are allowed as constants, not {node.value!r}")
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, *BINARY, *UNARY)):
            raise ConfigError(f"formula '{formula}': {type(node).__name__} is not allowed")
    return tree


def formula_names(formula: str) -> set[str]:
    """Grader names a formula reads.

    >>> sorted(formula_names("0.7 * f1 + 0.3 * max(label, 0)"))
    ['f1', 'label']
    """
    tree = parse_formula(formula)
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def check_formula(formula: str, names: set[str] | list[str]) -> None:
    """ConfigError naming every unknown grader name in `formula`."""
    unknown = sorted(formula_names(formula) - set(names))
    if unknown:
        raise ConfigError(
            f"formula '{formula}': unknown grader name(s) {', '.join(repr(u) for u in unknown)} "
            f"(graders: {', '.join(sorted(names)) or 'none'})"
        )


def evaluate_formula(formula: str, scores: Mapping[str, float]) -> float:
    """Evaluate a checked formula over grader scores.

    >>> evaluate_formula("0.7 * f1 + 0.3 * exact", {"f1": 0.5, "exact": 1.0})
    0.6499999999999999
    >>> evaluate_formula("min(a, b) - abs(-0.25) / (1 + 1)", {"a": 0.5, "b": 1.0})
    0.375
    >>> evaluate_formula("-a^2 + 2 * b ^ 0.5", {"a": 3, "b": 4}), evaluate_formula("2^3^2", {})  # ^ groups right
    (-5.0, 512.0)
    >>> evaluate_formula("floor(sqrt(a)) + log(exp(2)) + ceil(0.1)", {"a": 8})
    5.0
    """

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return scores[node.id]
        if isinstance(node, ast.BinOp):
            return BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(ev(a) for a in node.args))  # type: ignore[attr-defined]
        raise ConfigError(f"formula '{formula}': {type(node).__name__} is not allowed")

    return ev(parse_formula(formula))


def multi_grade(graders: Mapping[str, Grader], formula: str, problem: Problem, completion: str) -> Grade:
    """Run every named grader, then the formula over their values (see the module docstring).

    >>> from reasonloop.graders.text import ExactConfig, StringCheckConfig, exact, string_check
    >>> gs = {"exact": functools.partial(exact, ExactConfig()),
    ...       "has_4": functools.partial(string_check, StringCheckConfig("like", reference="4"))}
    >>> g = multi_grade(gs, "0.5 * exact + 0.5 * has_4", Problem("1", "2+2?", "4"), "It is 4")
    >>> g.score, g.reason
    (0.5, 'exact=0 has_4=1 -> 0.5')
    """
    subs = {name: g(problem, completion) for name, g in graders.items()}
    scores = {name: s.details.get("value", s.score) for name, s in subs.items()}
    details = {name: {"score": s.score, "parsed": s.parsed, "reason": s.reason} for name, s in subs.items()}
    shown = " ".join(f"{k}={v:g}" for k, v in scores.items())
    try:
        value = evaluate_formula(formula, scores)
    except ZeroDivisionError:
        return Grade(0.0, None, f"{shown} -> division by zero", details)
    except (ValueError, OverflowError) as e:  # log(0), sqrt(-1), exp(1000)
        return Grade(0.0, None, f"{shown} -> math error ({e})", details)
    if isinstance(value, complex):  # a negative number to a fractional power
        return Grade(0.0, None, f"{shown} -> not a real number", details)
    score = min(1.0, max(0.0, value))
    clipped = "" if score == value else f" (clipped from {value:g})"
    return Grade(score, None, f"{shown} -> {score:g}{clipped}", details)
