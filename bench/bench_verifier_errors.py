"""Which mistakes does a self-play round's verifier miss? (issue 13)

    python bench/bench_verifier_errors.py runs/demo --rounds 2 3 4
    python bench/bench_verifier_errors.py runs/demo --rounds 1 2 3 --by illegal

For a countdown self-play run (`reasonloop demo` or `reasonloop selfplay` with a
value verifier), each round's held-out samples (`samples/roundR-heldout.jsonl`,
N per problem from that round's generator) are sorted by the kind of their
first mistake with countdown's checker, and the round's verifier ranks them:
for each kind, the within-problem AUROC of right samples against wrong samples
of that kind (the chance that a right sample of a problem scores above a wrong
one of that kind; ties count half). Kinds: a step using a number it does not
have, wrong arithmetic, a legal step after which the target is unreachable, a
wrong answer line, text that is neither a step nor an answer, no answer.
With `--by illegal` the kind is that of the first *illegal* step instead (what a
checker sees without solving the problem): a number spent by an earlier step, a
number never in play, wrong arithmetic whose claimed result is the target, other
wrong arithmetic, an answer line that is not the target reached, other text.
`--verifier-round V` scores every round with round V's verifier instead of its own.
Prints a table and writes `bench/results/verifier_errors[_illegal].json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from reasonloop.core import Sample, load_config, read_jsonl
from reasonloop.recipes.common import draw_problems
from reasonloop.recipes.selfplay import SelfPlayConfig
from reasonloop.tasks.countdown import OPS, STEP_RE, CountdownTask, reachable
from reasonloop.verifiers.registry import load_verifier

KINDS = (
    "uses a number it does not have",
    "wrong arithmetic",
    "legal step, target unreachable",
    "answer line wrong",
    "neither a step nor an answer",
    "no answer",
)
ILLEGAL_KINDS = (
    "reuses a spent number",
    "a number never in play",
    "wrong arithmetic landing on the target",
    "other wrong arithmetic",
    "answer line not the target reached",
    "neither a step nor an answer",
    "no answer",
)
# an illegal step's kind (ILLEGAL_KINDS) as the first-mistake table names it (KINDS)
COARSE = {
    "reuses a spent number": "uses a number it does not have",
    "a number never in play": "uses a number it does not have",
    "wrong arithmetic landing on the target": "wrong arithmetic",
    "other wrong arithmetic": "wrong arithmetic",
    "answer line not the target reached": "answer line wrong",
    "neither a step nor an answer": "neither a step nor an answer",
}


def walk(task: CountdownTask, problem, steps: list[str]) -> Iterator[tuple[str | None, Counter, int]]:
    """Countdown's checker over a solution: for each legal operation `(None, numbers left, its result)`; at the
    first illegal step or the first line that is not an operation, `(its kind, ...)` and no more."""
    given = set(problem.meta["numbers"])
    pool, made, target = Counter(problem.meta["numbers"]), set(), int(problem.answer)
    for step in steps:
        m = STEP_RE.match(step)
        if not m:
            if task.extract_answer(step) is None:
                yield "neither a step nor an answer", pool, 0
            else:
                yield "answer line not the target reached", pool, 0
            return
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        missing = Counter([a, b]) - pool
        if missing:
            yield ("reuses a spent number" if set(missing) & (given | made) else "a number never in play"), pool, c
            return
        if c < 0 or (op == "/" and (b == 0 or a % b)) or OPS[op](a, b) != c:
            yield ("wrong arithmetic landing on the target" if c == target else "other wrong arithmetic"), pool, c
            return
        pool -= Counter([a, b])
        pool[c] += 1
        made.add(c)
        yield None, pool, c


def mistake(task: CountdownTask, problem, steps: list[str]) -> str:
    """The kind of the first mistake of a solution (KINDS; a dead end counts), or "right"."""
    if task.is_correct(problem, "\n".join(steps)):
        return "right"
    last, target = None, int(problem.answer)
    for kind, pool, c in walk(task, problem, steps):
        if kind is not None:
            return COARSE[kind]
        last = c
        if not reachable(tuple(sorted(pool.elements())), target):
            return "legal step, target unreachable"
    return "no answer" if last != target else "answer line wrong"


def illegal_step(task: CountdownTask, problem, steps: list[str]) -> str:
    """The kind of the first illegal step of a solution (ILLEGAL_KINDS; dead ends are legal), or "right"."""
    if task.is_correct(problem, "\n".join(steps)):
        return "right"
    return next((kind for kind, _, _ in walk(task, problem, steps) if kind is not None), "no answer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a countdown self-play run directory")
    ap.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--by", choices=("first", "illegal"), default="first", help="the first mistake or illegal step")
    ap.add_argument("--verifier-round", type=int, default=None, help="score every round with this round's verifier")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    classify, kinds = (mistake, KINDS) if args.by == "first" else (illegal_step, ILLEGAL_KINDS)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    task, _, test = draw_problems(load_config(SelfPlayConfig, run / "config.yaml"))
    if not isinstance(task, CountdownTask):
        raise SystemExit(f"{run}: not a countdown run")
    by_id = {p.id: p for p in test}
    out = {}
    print("| round | kind | share of wrong | within-problem AUROC (right vs this kind) |")
    for r in args.rounds:
        samples = [Sample(**x) for x in read_jsonl(run / "samples" / f"round{r}-heldout.jsonl")]
        verifier = load_verifier(run / f"round{args.verifier_round or r}" / "verifier")
        scores = verifier.score_many([by_id[s.problem_id].prompt for s in samples], [s.steps or [""] for s in samples])
        groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for s, score in zip(samples, scores):
            groups[s.problem_id].append((classify(task, by_id[s.problem_id], list(s.steps)), score))
        counts = Counter(k for g in groups.values() for k, _ in g)
        wrong = sum(v for k, v in counts.items() if k != "right")
        out[r] = {}
        for kind in kinds:
            wins = pairs = 0.0
            for g in groups.values():
                right = [v for k, v in g if k == "right"]
                bad = [v for k, v in g if k == kind]
                pairs += len(right) * len(bad)
                wins += sum((a > b) + 0.5 * (a == b) for a in right for b in bad)
            auroc = wins / pairs if pairs else None
            out[r][kind] = {"n": counts[kind], "share": counts[kind] / max(1, wrong), "auroc": auroc, "pairs": pairs}
            if counts[kind]:
                shown = f"{auroc:.3f} ({int(pairs)} pairs)" if auroc is not None else "-"
                print(f"| {r} | {kind} | {100 * counts[kind] / max(1, wrong):.0f}% | {shown} |")
    path = Path(__file__).parent / "results" / f"verifier_errors{'' if args.by == 'first' else '_illegal'}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
