"""RFT, rejection-sampling fine-tuning (Yuan et al. 2023, "Scaling relationship on learning mathematical reasoning"), resumable.

    reasonloop rft CONFIG.yaml --run-dir runs/rft        # or: run_rft(RftConfig(...), "runs/rft")

1. sample `k` solutions per training problem from the model;
2. keep the correct ones;
3. deduplicate reasoning paths: among a problem's correct solutions, keep up to
   `max_paths` that differ most, by edit distance between their step sequences
   (farthest-point selection: the next kept path is the one whose nearest kept
   path is farthest); without `dedup`, keep the first `max_paths` correct samples,
   repeats included;
4. fine-tune the model on the kept paths and measure held-out greedy accuracy.

Departure from the paper: the paper deduplicates by the list of equations in a
path and augments the original SFT data; here paths are compared step by step
(a step is a token of the edit distance) and only the sampled paths are used,
since the nano model's seed set is already in its pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from reasonloop.core import ReasonloopError, atomic_write_text, bounded
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy
from reasonloop.recipes.common import BarFactory, finetune_and_save, no_bar, start_and_samples, start_run


@dataclass(frozen=True)
class RftConfig:
    """One RFT run."""

    model: str = "nano"  # model to sample from and fine-tune, or "nano"
    task: str = "arith"  # a world, with options: arith, countdown:n_numbers=3
    n_train: int = bounded(1000, ge=1)  # training problems (train split)
    n_eval: int = bounded(200, ge=1)  # held-out problems (test split)
    k: int = bounded(16, ge=1)  # samples per problem
    temperature: float = bounded(1.0, ge=0)  # sampling temperature
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per solution
    dedup: bool = True  # keep the most distinct correct paths (else the first ones, repeats included)
    max_paths: int = bounded(4, ge=1)  # correct paths kept per problem
    epochs: float = bounded(3.0, gt=0)  # passes over the kept paths
    # if above 0, exactly this many optimiser steps instead of `epochs` (equal-compute comparisons)
    steps: int = bounded(0, ge=0)
    batch_size: int = bounded(32, ge=1)  # sequences per optimiser step
    lr: float = bounded(2e-3, gt=0)  # peak learning rate
    max_batch: int = bounded(256, ge=1)  # engine rows in flight
    seed: int = bounded(0, ge=0)  # problems, sampling and training derive from this
    metrics_sinks: tuple[str, ...] = ()  # also send metrics.jsonl records to: "tensorboard", "wandb" (core.sinks)

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_paths < 1 or self.steps < 0:
            raise ValueError("k and max_paths must be at least 1, steps at least 0")


def most_distinct(paths: list[list[str]], limit: int) -> list[int]:
    """Indices of up to `limit` distinct paths, chosen farthest-first by step-level edit distance.

    Identical paths are never both kept. The first path is always kept.

    >>> most_distinct([["a", "b"], ["a", "b"], ["a", "c"], ["x", "y", "z"]], 3)
    [0, 3, 2]
    >>> most_distinct([["a"], ["a"]], 5)
    [0]
    """
    if not paths:
        return []
    kept = [0]
    nearest = [Levenshtein.distance(p, paths[0]) for p in paths]  # distance to the nearest kept path
    while len(kept) < limit:
        best = max(range(len(paths)), key=lambda i: (nearest[i], -i))
        if nearest[best] == 0:
            break  # everything left repeats a kept path
        kept.append(best)
        nearest = [min(d, Levenshtein.distance(p, paths[best])) for d, p in zip(nearest, paths)]
    return kept


def run_rft(cfg: RftConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    run, task, train_problems, test_problems, by_id, source = start_run(cfg, run_dir)
    state, samples = start_and_samples(run, cfg, source, task, train_problems, test_problems, bar)
    if samples is not None:
        correct: dict[str, list] = {}
        for s in samples:
            if s.reward == 1.0:
                correct.setdefault(s.problem_id, []).append(s)
        pairs: list[tuple[str, str]] = []
        distinct = 0
        # a right answer reached through a wrong step, where the world can tell (its exact step check)
        first_error = getattr(task, "first_error", None)
        flawed = 0
        for pid, ss in correct.items():
            chosen = (
                most_distinct([s.steps for s in ss], cfg.max_paths) if cfg.dedup else range(min(cfg.max_paths, len(ss)))
            )
            pairs += [(by_id[pid].prompt, ss[i].text) for i in chosen]
            distinct += len({tuple(s.steps) for s in ss})
            if first_error is not None:
                flawed += sum(first_error(by_id[pid], ss[i].steps) is not None for i in chosen)
        if not pairs:
            raise ReasonloopError(
                f"no correct solution among {cfg.k} samples of {len(train_problems)} problems: nothing to train on "
                "(raise k, n_train or temperature, or start from a stronger model)"
            )
        ckpt = run.checkpoint("final")
        finetune_and_save(
            source, pairs, ckpt, run.checkpoint("train"),
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, bar=bar, steps=cfg.steps,
        )  # fmt: skip
        engine = HFEngine.from_pretrained(ckpt, max_batch=cfg.max_batch)
        state = run.update_state(
            accuracy=greedy_accuracy(engine, task.grade, test_problems, cfg.max_new_tokens),
            problems_solved=len(correct),
            correct_samples=sum(len(v) for v in correct.values()),
            distinct_correct_paths=distinct,
            training_paths=len(pairs),
            training_paths_with_wrong_step=flawed if first_error is not None else None,
        )
        run.log_metrics(**state)
    log(
        f"RFT (k={cfg.k}, dedup={'on' if cfg.dedup else 'off'}): {100 * state['base_accuracy']:.1f}% -> {100 * state['accuracy']:.1f}%"
    )
    atomic_write_text(
        run.path / "report.md",
        "\n".join(
            [
                f"# RFT on `{cfg.task}`",
                "",
                f"Model `{cfg.model}`, k = {cfg.k} samples per problem at temperature {cfg.temperature}, "
                f"deduplication {'on' if cfg.dedup else 'off'}, at most {cfg.max_paths} paths per problem.",
                "",
                "| measure | value |",
                "|---|---|",
                f"| held-out greedy accuracy before | {100 * state['base_accuracy']:.1f}% |",
                f"| held-out greedy accuracy after | {100 * state['accuracy']:.1f}% |",
                f"| training problems solved | {state['problems_solved']} of {cfg.n_train} |",
                f"| correct samples / distinct correct paths | {state['correct_samples']} / {state['distinct_correct_paths']} |",
                f"| paths trained on | {state['training_paths']} |",
                f"| of them with a wrong step (the world's exact step check) | {_share(state)} |",
                "",
            ]
        ),
    )
    return state


def _share(state: dict[str, Any]) -> str:
    flawed = state.get("training_paths_with_wrong_step")
    if flawed is None:
        return "n/a"
    return f"{flawed} ({100 * flawed / state['training_paths']:.1f}%)"
