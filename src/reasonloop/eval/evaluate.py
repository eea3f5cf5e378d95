"""Evaluate a generator on a task: greedy accuracy, pass@k, maj@k, with per-problem records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reasonloop.core import Generator, Grader, Problem, Sample, bounded
from reasonloop.eval.metrics import maj_at_k, pass_at_k
from reasonloop.tasks import Task

if TYPE_CHECKING:  # importing the engine pulls in torch; `import reasonloop.eval` stays light without it
    from reasonloop.engine.fanout import LocalExecutor, RayExecutor


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` measures."""

    n: int = bounded(16, ge=0)  # samples per problem for pass@k and maj@k (0: greedy only)
    temperature: float = bounded(1.0, ge=0)  # sampling temperature for the n samples
    top_p: float = bounded(1.0, gt=0, le=1)  # nucleus sampling mass
    max_new_tokens: int = bounded(128, ge=1)  # generation budget per completion
    seed: int = bounded(0, ge=0)  # sampling seed


def evaluate(
    generator: Generator,
    task: Task,
    problems: list[Problem],
    cfg: EvalConfig = EvalConfig(),
    progress: Callable[[int], None] | None = None,
    grader: Grader | None = None,
    executor: LocalExecutor | RayExecutor | None = None,
) -> dict[str, Any]:
    """Greedy accuracy, and with `cfg.n` samples: pass@k and maj@k for k = 1, 2, 4, .. n.

    Completions are graded by `grader` (the task's own check by default); a
    sample counts as correct when its grade is 1. `progress` is called with the
    number of completions finished, as they finish. Grading runs where `executor`
    says (this process by default; Ray tasks for a `RayExecutor`, whose generator
    then samples on its actors). Returns a summary dict with a `per_problem` list
    and the graded `samples`.
    """
    grader = grader or task.grade
    if executor is None:
        from reasonloop.engine.fanout import LocalExecutor

        executor = LocalExecutor()

    def grade(rows: list[list[Sample]]) -> list[list[Sample]]:
        """Every sample of `rows` (one list per problem) graded against its problem, in one batch."""
        pairs = [(p, s) for p, ss in zip(problems, rows) for s in ss]
        graded = iter(executor.grade(grader, pairs, task.step_delimiter))
        return [[next(graded) for _ in ss] for ss in rows]

    prompts = [p.prompt for p in problems]
    before = generator.counts.copy()
    kw = dict(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    greedy = grade(generator.generate(prompts, 1, temperature=0.0, progress=progress, **kw))  # type: ignore[call-arg]
    greedy_grades = [s[0].reward or 0.0 for s in greedy]
    greedy_ok = [float(g == 1.0) for g in greedy_grades]
    result: dict[str, Any] = {"num_problems": len(problems), "greedy_accuracy": sum(greedy_ok) / len(problems)}
    if greedy_ok != greedy_grades:  # a grader with partial credit (extract's field F1): its mean too
        result["greedy_mean_grade"] = sum(greedy_grades) / len(problems)
    per_problem: list[dict[str, Any]] = [
        {"id": p.id, "answer": p.answer, "greedy": s[0].answer, "greedy_correct": bool(ok)}
        for p, s, ok in zip(problems, greedy, greedy_ok)
    ]
    samples: list[Sample] = [s[0] for s in greedy]
    if cfg.n > 0:
        from reasonloop.eval.metrics import ks_up_to

        sampled = grade(
            generator.generate(
                prompts,
                cfg.n,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                progress=progress,
                **kw,  # type: ignore[call-arg]
            )
        )
        ks = ks_up_to(cfg.n)
        sums = {f"pass@{k}": 0.0 for k in ks} | {f"maj@{k}": 0.0 for k in ks}
        for rec, p, graded in zip(per_problem, problems, sampled):
            c = sum(s.reward == 1.0 for s in graded)
            answers = [s.answer for s in graded]
            rec["n_correct"] = c
            for k in ks:
                sums[f"pass@{k}"] += pass_at_k(cfg.n, c, k)
                sums[f"maj@{k}"] += maj_at_k(answers, p.answer, k, [s.reward for s in graded])
            samples.extend(graded)
        result.update({k: v / len(problems) for k, v in sums.items()})
    result["by_group"] = by_group(problems, per_problem, cfg.n)
    spent = generator.counts - before
    result["tokens"] = {"generated": spent.generated, "prefilled": spent.prefilled}
    result["per_problem"] = per_problem
    result["samples"] = samples
    return result


def by_group(problems: list[Problem], per_problem: list[dict[str, Any]], n: int, key: str = "n_ops") -> dict[str, dict]:
    """Greedy accuracy, pass@1 and pass@n per value of `problem.meta[key]` (chain length for the worlds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p, rec in zip(problems, per_problem):
        if key in p.meta:
            groups.setdefault(str(p.meta[key]), []).append(rec)
    out = {}
    for g, recs in sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0])):
        row = {"problems": len(recs), "greedy_accuracy": sum(r["greedy_correct"] for r in recs) / len(recs)}
        if n > 0:
            row["pass@1"] = sum(r["n_correct"] for r in recs) / (n * len(recs))
            row[f"pass@{n}"] = sum(r["n_correct"] > 0 for r in recs) / len(recs)
        out[g] = row
    return out


def summary_rows(result: dict[str, Any]) -> list[tuple[str, float]]:
    """(metric, value) rows for printing, in a stable order."""
    rows = [("greedy accuracy", result["greedy_accuracy"])]
    if "greedy_mean_grade" in result:
        rows.append(("greedy mean grade", result["greedy_mean_grade"]))
    rows += [(k, v) for k, v in result.items() if k.startswith("pass@")]
    rows += [(k, v) for k, v in result.items() if k.startswith("maj@")]
    return rows
