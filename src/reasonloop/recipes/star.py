"""STaR, the Self-Taught Reasoner (Zelikman et al. 2022), resumable.

    reasonloop star CONFIG.yaml --run-dir runs/star        # or: run_star(StarConfig(...), "runs/star")

Each round, with the latest model:
1. sample `samples` rationales for every training problem and keep those the
   grader accepts;
2. rationalise the failures: prompt with the answer as a hint (the task's
   `hint_prompt`), keep hinted rationales that reach the right answer, and store
   them with the hint removed (under the plain prompt);
3. fine-tune on the kept rationales, from the original base each round as in
   the paper (or from the last round with `continue_training`);
4. measure held-out greedy accuracy; stop when it has not improved for
   `patience` rounds.

Departures from the paper: several samples per problem at temperature
`temperature` instead of one greedy decode (more of the training set is solved
per round on a small model), and at most `keep_per_problem` distinct rationales
kept per problem so easy problems do not dominate the data.

Sampling through vLLM in process (`sampler: vllm`, a GPU machine): made once,
given each round's starting weights from disk. Through a server (`sampler:
openai:URL#model`): each round's
rationales are sampled by that server, which is first told to load the
round's starting weights (`POST /update_weights_from_disk`: `reasonloop serve
--allow-reload`, or SGLang), so it samples from the model being trained;
fine-tuning and the held-out greedy measurement stay in this process. Against
`reasonloop serve` on the same files the run is the in-process run, sample for
sample (tested).

Resuming: every phase writes its result before the next starts (samples to
append-only JSONL with (problem_id, sample_index), training checkpoints through
`train_loop`, round results to `state.json`), so a killed run continues from the
last finished piece when the same command is run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import ConfigError, RunDir, atomic_write_text, bounded
from reasonloop.core.paths import parse_model_spec
from reasonloop.engine import HFEngine
from reasonloop.engine.fanout import EXECUTORS, RayConfig, open_executor
from reasonloop.eval import greedy_accuracy, save_line_plot
from reasonloop.models import load_model, save_model
from reasonloop.recipes.common import BarFactory, finetune_and_save, no_bar, open_sampler, sample_to_file, start_run


@dataclass(frozen=True)
class StarConfig:
    """One STaR run."""

    model: str = "nano"  # base model directory, or "nano" for the built-in model
    task: str = "arith"  # a built-in world (its problems carry a hint prompt)
    n_train: int = bounded(1000, ge=1)  # training problems (train split)
    n_eval: int = bounded(200, ge=1)  # held-out problems (test split) for greedy accuracy
    rounds: int = bounded(3, ge=1)  # most rounds
    patience: int = bounded(1, ge=1)  # stop after this many rounds without a better held-out accuracy
    samples: int = bounded(4, ge=1)  # rationales sampled per problem per round
    temperature: float = bounded(1.0, ge=0)  # sampling temperature
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per rationale
    rationalize: bool = True  # rationalise failures with the answer as a hint
    keep_per_problem: int = bounded(1, ge=1)  # distinct correct rationales kept per problem
    continue_training: bool = False  # fine-tune the last round's model instead of the base
    epochs: float = bounded(3.0, gt=0)  # passes over the round's rationales
    batch_size: int = bounded(32, ge=1)  # sequences per optimiser step
    lr: float = bounded(1e-3, gt=0)  # peak learning rate
    max_batch: int = bounded(256, ge=1)  # engine rows in flight
    seed: int = bounded(0, ge=0)  # problems, sampling and training derive from this
    sampler: str = ""  # openai:URL#model: sample there (it loads each round's weights first); "vllm"; "": in process
    metrics_sinks: tuple[str, ...] = ()  # also send metrics.jsonl records to: "tensorboard", "wandb" (core.sinks)
    executor: str = "local"  # where a round's sampling and grading run: "local" or "ray" (the same samples)
    ray: RayConfig = RayConfig()  # the Ray cluster when executor is "ray"

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.samples < 1 or self.keep_per_problem < 1:
            raise ValueError("rounds, samples and keep_per_problem must be at least 1")
        if self.sampler not in ("", "vllm") and parse_model_spec(self.sampler).backend != "openai":
            raise ValueError(
                f"sampler must be an openai:URL#model spec, 'vllm', or empty (sample in process), got '{self.sampler}'"
            )
        if self.executor not in EXECUTORS:
            raise ConfigError(f"config key 'executor': expected one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.sampler and self.executor != "local":
            raise ValueError("sampler (a server that samples) and executor 'ray' exclude each other: choose one")


def select_rationales(samples, limit: int) -> dict[str, list[str]]:
    """Up to `limit` distinct correct rationales per problem, in sampling order."""
    kept: dict[str, list[str]] = {}
    for s in samples:
        texts = kept.setdefault(s.problem_id, [])
        if s.reward == 1.0 and s.text not in texts and len(texts) < limit:
            texts.append(s.text)
    return {k: v for k, v in kept.items() if v}


def run_star(cfg: StarConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    if cfg.sampler == "vllm":  # not installed: one line before anything runs
        from reasonloop.engine.vllm_engine import import_vllm

        import_vllm()
    run, task, train_problems, test_problems, by_id, base = start_run(cfg, run_dir)

    state = run.state
    if "base_accuracy" not in state:
        engine = HFEngine.from_pretrained(base, max_batch=cfg.max_batch)
        state = run.update_state(
            base_accuracy=greedy_accuracy(engine, task.grade, test_problems, cfg.max_new_tokens), rounds=[]
        )
        run.log_metrics(round=0, held_out_accuracy=state["base_accuracy"])
    log(f"base held-out greedy accuracy: {100 * state['base_accuracy']:.1f}%")
    rounds: list[dict] = state["rounds"]
    best = max([state["base_accuracy"]] + [r["held_out_accuracy"] for r in rounds])

    while len(rounds) < cfg.rounds and not _patience_exhausted(state["base_accuracy"], rounds, cfg.patience):
        r = len(rounds) + 1
        current = base if r == 1 else run.checkpoint(f"round{r - 1}")
        with open_executor(cfg.executor, cfg.ray) as executor:  # its actors end with the round's sampling
            if cfg.sampler:
                engine = open_sampler(cfg.sampler, current, max_batch=cfg.max_batch)
            else:
                engine = executor.open_generator(str(current), max_batch=cfg.max_batch)
            kw = dict(
                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + r, bar=bar,
                executor=executor,
            )  # fmt: skip
            plain = sample_to_file(
                run, f"round{r}-plain", engine, task, train_problems, lambda p: p.prompt, cfg.samples, **kw
            )
            kept = select_rationales(plain, cfg.keep_per_problem)
            hinted_kept: dict[str, list[str]] = {}
            if cfg.rationalize:
                failed = [p for p in train_problems if p.id not in kept]
                hinted = sample_to_file(
                    run, f"round{r}-hint", engine, task, failed, lambda p: p.meta["hint_prompt"], cfg.samples, **kw
                )
                hinted_kept = select_rationales(hinted, cfg.keep_per_problem)
        # rationalised solutions are stored under the plain prompt: the hint is removed
        pairs = [(by_id[pid].prompt, t) for pid, ts in {**kept, **hinted_kept}.items() for t in ts]
        ckpt = run.checkpoint(f"round{r}")
        if not (ckpt / "config.json").exists() and not pairs:
            log(f"round {r}: no correct rationale was found; the model is carried over unchanged")
            save_model(*load_model(current), ckpt)
        finetune_and_save(
            current if cfg.continue_training else base, pairs, ckpt, run.checkpoint(f"round{r}-train"),
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed + r, bar=bar,
        )  # fmt: skip
        acc = greedy_accuracy(
            HFEngine.from_pretrained(ckpt, max_batch=cfg.max_batch), task.grade, test_problems, cfg.max_new_tokens
        )
        record = {
            "round": r,
            "held_out_accuracy": acc,
            "train_solved_plain": len(kept),
            "train_solved_rationalized": len(hinted_kept),
            "rationales_plain": sum(len(v) for v in kept.values()),
            "rationales_rationalized": sum(len(v) for v in hinted_kept.values()),
            "train_problems": len(train_problems),
        }
        rounds.append(record)
        run.update_state(rounds=rounds)
        run.log_metrics(**record)
        best = max(best, acc)
        log(
            f"round {r}: held-out greedy accuracy {100 * acc:.1f}% "
            f"(rationales: {record['rationales_plain']} sampled, {record['rationales_rationalized']} rationalised)"
        )
    state = run.state
    write_report(run, cfg, state)
    final = state["rounds"][-1]["held_out_accuracy"] if state["rounds"] else state["base_accuracy"]
    return {
        "base_accuracy": state["base_accuracy"],
        "final_accuracy": final,
        "best_accuracy": best,
        "rounds": state["rounds"],
    }


def _patience_exhausted(base_acc: float, rounds: list[dict], patience: int) -> bool:
    accs = [base_acc] + [r["held_out_accuracy"] for r in rounds]
    best_at = max(range(len(accs)), key=lambda i: (accs[i], -i))
    return len(accs) - 1 - best_at >= patience


def write_report(run: RunDir, cfg: StarConfig, state: dict) -> None:
    """report.md with the per-round table, and plots/accuracy_per_round.png."""
    rounds = state["rounds"]
    accs = [state["base_accuracy"]] + [r["held_out_accuracy"] for r in rounds]
    save_line_plot(
        run.path / "plots" / "accuracy_per_round.png", list(range(len(accs))), {"held-out": [100 * a for a in accs]},
        xlabel="round (0 = base)", ylabel="held-out greedy accuracy (%)", title=f"STaR on {cfg.task}",
    )  # fmt: skip
    lines = [
        f"# STaR on `{cfg.task}`",
        "",
        f"Base model `{cfg.model}`; {cfg.n_train} training problems, {cfg.n_eval} held-out problems; "
        f"{cfg.samples} samples per problem at temperature {cfg.temperature}; rationalisation "
        f"{'on' if cfg.rationalize else 'off'}; fine-tuning from {'the last round' if cfg.continue_training else 'the base'}.",
        "",
        "| round | held-out greedy accuracy | problems solved by sampling | solved by rationalisation | rationales used |",
        "|---|---|---|---|---|",
        f"| 0 (base) | {100 * state['base_accuracy']:.1f}% | | | |",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {100 * r['held_out_accuracy']:.1f}% | {r['train_solved_plain']} | "
            f"{r['train_solved_rationalized']} | {r['rationales_plain'] + r['rationales_rationalized']} |"
        )
    lines += ["", "![accuracy per round](plots/accuracy_per_round.png)", ""]
    atomic_write_text(run.path / "report.md", "\n".join(lines))
