"""Test-time search on held-out problems: one strategy (`reasonloop search`), or several across budgets with
compute-matched curves (`reasonloop scale`). Resumable.

    reasonloop search --run-dir runs/search --set strategy=beam --set budget=8 --set verifier=runs/verifiers/pav
    reasonloop scale  --run-dir runs/scale  --set strategies=majority,best_of_n,beam,mcts --set budgets=1,2,4,8,16
    reasonloop scale  --run-dir runs/scale  --set verifier=orm=runs/v/orm,pav=runs/v/pav \
                      --set strategies=majority,best_of_n@orm,weighted_vote@orm,beam@pav,mcts@pav

Every answered problem is one line of `samples/<strategy>-b<budget>-s<seed>.jsonl`
(answer, correctness, generator and verifier tokens, what the search kept), so a
killed run continues where it stopped. `scale` then plots held-out accuracy
against the generator tokens spent per problem, one curve per strategy, the
mean over seeds with the spread (min to max) shaded, and writes the table to
`report.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import (
    JsonlWriter,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    bounded,
    defaults_of,
    read_jsonl,
    to_dict,
)
from reasonloop.core.jsonl import repair_jsonl
from reasonloop.engine import open_generator
from reasonloop.recipes.common import BarFactory, no_bar
from reasonloop.search.solve import NEEDS_VERIFIER, SAMPLING, STRATEGIES, solve, solve_sampling
from reasonloop.tasks import get_task

SAMPLING_CHUNK = 25  # problems per generator call for the sampling strategies (also the resume granularity)


@dataclass(frozen=True)
class ScaleConfig:
    """Strategies, budgets and seeds to run on the same held-out problems."""

    model: str = "nano"  # the generator
    verifier: str = ""  # a directory from `reasonloop verifiers` (RUN/<kind>), or named ones: orm=DIR,pav=DIR
    task: str = "arith"  # a world, with options: arith, countdown:n_numbers=3
    n_eval: int = bounded(100, ge=1)  # held-out problems (test split)
    strategies: str = "majority,best_of_n,weighted_vote,beam,mcts"  # comma-separated; strategy@name picks a verifier
    budgets: str = "1,2,4,8,16"  # comma-separated budgets N
    seeds: str = "0,1"  # comma-separated sampling seeds; curves show their mean and spread
    temperature: float = bounded(1.0, ge=0)  # sampling temperature
    max_new_tokens: int = bounded(96, ge=1)  # per sample (whole solutions) or per step (tree searches)
    max_depth: int = bounded(12, ge=1)  # most steps in a tree search
    # beam search: rank each candidate by the verifier's value this many sampled steps ahead
    lookahead: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        if self.lookahead < 0:
            raise ValueError("lookahead must be at least 0")
        specs = self.strategy_specs
        bad = [label for label, strategy, _ in specs if strategy not in STRATEGIES]
        if bad or not specs:
            raise ValueError(f"strategies: unknown {bad}; expected a comma-separated subset of {', '.join(STRATEGIES)}")
        needs = [label for label, strategy, name in specs if strategy in NEEDS_VERIFIER and name is None]
        if needs:
            raise ValueError(f"strategies {needs} need a verifier: set verifier=DIR (from `reasonloop verifiers`)")
        missing = [label for label, _, name in specs if name is not None and name not in self.verifier_map]
        if missing:
            raise ValueError(f"strategies {missing} name a verifier that `verifier` does not define")
        if any(b < 1 for b in self.budget_list) or not self.budget_list:
            raise ValueError(f"budgets must be positive integers, got {self.budgets!r}")
        self.seed_list  # noqa: B018 (parses, so a typo fails here)

    @property
    def verifier_map(self) -> dict[str, str]:
        """Named verifier directories: `orm=DIR,pav=DIR`, or one unnamed directory (named `default`)."""
        v = str(self.verifier).strip()
        if not v:
            return {}
        if "=" not in v:
            return {"default": v}
        return {k.strip(): d.strip() for k, _, d in (item.partition("=") for item in v.split(",") if item.strip())}

    @property
    def strategy_specs(self) -> list[tuple[str, str, str | None]]:
        """(label, strategy, verifier name or None) for each entry of `strategies`."""
        out = []
        for item in str(self.strategies).split(","):
            if item.strip():
                strategy, _, name = item.strip().partition("@")
                if not name and strategy != "majority" and len(self.verifier_map) == 1:
                    name = next(iter(self.verifier_map))
                out.append((item.strip(), strategy, (name or None) if strategy != "majority" else None))
        return out

    @property
    def budget_list(self) -> list[int]:
        return [int(b) for b in str(self.budgets).split(",") if b.strip()]

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in str(self.seeds).split(",") if s.strip()]


@dataclass(frozen=True)
class SearchConfig:
    """One strategy at one budget."""

    model: str = "nano"  # the generator
    verifier: str = ""  # a directory written by `reasonloop verifiers`; needed by all but majority
    task: str = "arith"  # a world, with options: arith, countdown:n_numbers=3
    n_eval: int = bounded(100, ge=1)  # held-out problems (test split)
    strategy: str = "best_of_n"  # one of reasonloop.search.solve.STRATEGIES
    budget: int = bounded(8, ge=1)  # see reasonloop.search.solve
    seed: int = bounded(0, ge=0)  # sampling seed
    temperature: float = bounded(1.0, ge=0)
    max_new_tokens: int = bounded(96, ge=1)
    max_depth: int = bounded(12, ge=1)
    # beam search: rank each candidate by the verifier's value this many sampled steps ahead
    lookahead: int = bounded(0, ge=0)

    def as_scale(self) -> ScaleConfig:
        return ScaleConfig(
            model=self.model, verifier=self.verifier, task=self.task, n_eval=self.n_eval, strategies=self.strategy,
            budgets=str(self.budget), seeds=str(self.seed), temperature=self.temperature,
            max_new_tokens=self.max_new_tokens, max_depth=self.max_depth, lookahead=self.lookahead,
        )  # fmt: skip


def _cell(run: RunDir, cfg: ScaleConfig, spec: tuple, budget: int, seed: int, problems, task, engine, verifier, bar):
    """Answer every problem with one (strategy, budget, seed), resuming the cell's JSONL; its summary."""
    label, strategy, _ = spec
    path = run.samples_path(f"{label.replace('@', '_')}-b{budget}-s{seed}")
    done: dict[str, dict] = {}
    if path.exists():
        repair_jsonl(path)
        done = {r["problem_id"]: r for r in read_jsonl(path)}
    step = SAMPLING_CHUNK if strategy in SAMPLING else 1
    # fixed chunks of `problems`, not of what is left, and a partly written chunk is redone whole (only its missing
    # lines written): a resumed cell makes the very calls, with the very seeds, of an uninterrupted one
    chunks = [problems[c : c + step] for c in range(0, len(problems), step)]
    chunks = [(c * step, chunk) for c, chunk in enumerate(chunks) if any(p.id not in done for p in chunk)]
    if chunks:
        todo = sum(p.id not in done for _, chunk in chunks for p in chunk)
        with bar(todo, f"{label} N={budget} seed {seed}") as advance, JsonlWriter(path) as w:
            kw = dict(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
            for first, chunk in chunks:
                run_seed = seed * 100_003 + budget * 1_009 + first
                if strategy in SAMPLING:  # batched across problems: one generator call per chunk
                    outcomes = solve_sampling(chunk, task, engine, verifier, strategy, budget, seed=run_seed, **kw)
                else:
                    tree_kw = dict(max_depth=cfg.max_depth, lookahead=cfg.lookahead, seed=run_seed)
                    outcomes = [solve(p, task, engine, verifier, strategy, budget, **tree_kw, **kw) for p in chunk]
                for p, o in zip(chunk, outcomes):
                    if p.id in done:
                        continue
                    rec = {
                        "problem_id": p.id,
                        "answer": o.answer,
                        "correct": task.grade(p, o.text).score == 1.0,
                        "text": o.text,
                        "generator_tokens": o.generator_tokens,
                        "verifier_tokens": o.verifier_tokens,
                        "finished": o.finished,
                        "kept": o.kept,
                    }
                    w.write(rec)
                    done[p.id] = rec
                    advance()
    rows = [done[p.id] for p in problems]
    return {
        "strategy": label,
        "budget": budget,
        "seed": seed,
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "generator_tokens": sum(r["generator_tokens"] for r in rows) / len(rows),
        "verifier_tokens": sum(r["verifier_tokens"] for r in rows) / len(rows),
    }


def run_scale(cfg: ScaleConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Every (strategy, budget, seed) on the same held-out problems; `results.json`, `report.md`, the plot."""
    from reasonloop.verifiers.registry import load_verifier

    run = RunDir(run_dir)
    run.save_config(to_dict(cfg), defaults_of(type(cfg)))
    task = get_task(cfg.task)
    problems = task.problems("test", cfg.n_eval, seed=0)
    engine = open_generator(cfg.model)  # any model spec: local weights or an OpenAI-compatible server
    verifiers = {name: load_verifier(d) for name, d in cfg.verifier_map.items()}
    cells = []
    for spec in cfg.strategy_specs:
        for budget in cfg.budget_list:
            for seed in cfg.seed_list:
                verifier = verifiers[spec[2]] if spec[2] else None
                c = _cell(run, cfg, spec, budget, seed, problems, task, engine, verifier, bar)
                log(
                    f"{spec[0]} N={budget} seed {seed}: accuracy {100 * c['accuracy']:.1f}%, "
                    f"{c['generator_tokens']:.0f} generator + {c['verifier_tokens']:.0f} verifier tokens per problem"
                )
                cells.append(c)
    res = {"cells": cells, "curves": _curves(cells)}
    atomic_write_json(run.path / "results.json", res)
    _report(run, cfg, res)
    return res


def _curves(cells: list[dict]) -> dict[str, list[dict]]:
    """Per strategy and budget: mean, min and max accuracy over seeds, and mean tokens."""
    out: dict[str, list[dict]] = {}
    for c in cells:
        out.setdefault(c["strategy"], [])
    for strategy in out:
        for budget in sorted({c["budget"] for c in cells if c["strategy"] == strategy}):
            cs = [c for c in cells if c["strategy"] == strategy and c["budget"] == budget]
            accs = [c["accuracy"] for c in cs]
            out[strategy].append(
                {
                    "budget": budget,
                    "accuracy": sum(accs) / len(accs),
                    "accuracy_min": min(accs),
                    "accuracy_max": max(accs),
                    "generator_tokens": sum(c["generator_tokens"] for c in cs) / len(cs),
                    "verifier_tokens": sum(c["verifier_tokens"] for c in cs) / len(cs),
                    "seeds": len(cs),
                }
            )
    return out


def _report(run: RunDir, cfg: ScaleConfig, res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, points in res["curves"].items():
        xs = [p["generator_tokens"] for p in points]
        ax.plot(xs, [100 * p["accuracy"] for p in points], marker="o", label=strategy)
        ax.fill_between(
            xs, [100 * p["accuracy_min"] for p in points], [100 * p["accuracy_max"] for p in points], alpha=0.15
        )
    ax.set_xscale("log")
    ax.set_xlabel("generator tokens per problem (log scale)")
    ax.set_ylabel("held-out accuracy (%)")
    title = f"{cfg.task}\naccuracy vs compute (mean over {len(cfg.seed_list)} seeds, min-max shaded)"
    ax.set_title(title, fontsize=10)  # a world with options makes a long first line
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    (run.path / "plots").mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(run.path / "plots" / "accuracy_vs_tokens.png", dpi=120)
    plt.close(fig)
    lines = [
        f"# Search strategies on `{cfg.task}`",
        "",
        f"Generator `{cfg.model}`, verifier `{cfg.verifier or '-'}`, {cfg.n_eval} held-out problems, seeds {cfg.seeds}.",
        "",
        "| strategy | budget N | accuracy (mean, min-max over seeds) | generator tokens / problem | verifier tokens / problem |",
        "|---|---|---|---|---|",
    ]
    for strategy, points in res["curves"].items():
        for p in points:
            lines.append(
                f"| {strategy} | {p['budget']} | {100 * p['accuracy']:.1f}% ({100 * p['accuracy_min']:.1f}-"
                f"{100 * p['accuracy_max']:.1f}) | {p['generator_tokens']:.0f} | {p['verifier_tokens']:.0f} |"
            )
    lines += ["", "![accuracy vs tokens](plots/accuracy_vs_tokens.png)", ""]
    atomic_write_text(run.path / "report.md", "\n".join(lines))
