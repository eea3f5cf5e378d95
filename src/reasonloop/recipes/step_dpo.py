"""Per-step DPO from negatives (Setlur et al. 2024, "RL on incorrect synthetic data scales the efficiency of LLM
math reasoning by eight-fold", arXiv 2406.14532), resumable.

    reasonloop step-dpo CONFIG.yaml --run-dir runs/step-dpo     # or: run_step_dpo(StepDpoConfig(...), "runs/...")
    step_dpo_update(start_dir, problems, samples, task, out_dir, StepDpoUpdateConfig())   # inside another recipe

1. sample `k` solutions per training problem from the starting model (an RFT model, or any) and grade them;
2. **Monte-Carlo step values** of up to `update.solutions_per_problem` of them per problem (wrong ones first):
   `update.mc_k` rollouts from every step prefix with the same model (`mc_step_rollouts`: one prompt sampled
   `mc_k` times, so the engine encodes each prefix once); Q(prefix) = the fraction that reach a right answer;
3. **critical steps and pairs** (`reasonloop.train.step_pairs`): the first pit of a wrong solution, paired with a
   rollout that succeeds from the prefix before it; the decisive step of a right one (largest gain), paired with
   a rollout that fails from the prefix before it (`update.positives`);
4. **learn** with `update.loss`: `step_dpo` on those pairs, `dpo` on whole right against whole wrong solutions
   (the comparison), or `advantage_weighted` (every valued solution, each step weighted by exp(A / beta): the
   objective per-step DPO is equivalent to);
5. **measure** held-out greedy accuracy before and after, and how often the critical step of a wrong solution is
   its true first error (`task.first_error`) against the number of rollouts k (read off the same rollouts);
6. `report.md` with the table and two plots (agreement against k, the training curve).

Every stage resumes: samples and Monte-Carlo values are JSONL files written one solution at a time in fixed groups
(a killed group is regenerated whole, so a resumed file equals an uninterrupted one), training checkpoints through
`train_loop`, and `state.json` records what is finished.

Departures from the paper: its pairs come from a separate SFT model's rollouts and its study scales synthetic
problems; here the policy being trained values its own solutions. A pair's two continuations run to the end of
the solution (the paper's per-step DPO contrasts steps; the prefix cancels either way, see `step_dpo_loss`).
Reference log-probabilities are computed once before training, not every epoch.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasonloop.core import (
    JsonlWriter,
    Problem,
    ReasonloopError,
    Sample,
    atomic_write_json,
    atomic_write_text,
    bounded,
    derive_seed,
    read_jsonl,
    repair_jsonl,
)
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy, save_line_plot
from reasonloop.eval.critical_steps import critical_step_agreement
from reasonloop.models import load_model, save_model
from reasonloop.recipes.common import BarFactory, no_bar, start_and_samples, start_run
from reasonloop.tasks import Task
from reasonloop.train import TrainConfig, dpo_loss, shuffled_batch, train_loop
from reasonloop.train.losses import advantage_weighted_loss, step_dpo_loss
from reasonloop.train.step_pairs import (
    critical_step,
    pad_rows,
    pair_logprobs,
    solution_pairs,
    splits_at_steps,
    step_advantage_tokens,
    step_pair,
    token_steps,
)
from reasonloop.verifiers import mc_step_rollouts

LOSSES = ("step_dpo", "dpo", "advantage_weighted")


@dataclass(frozen=True)
class StepDpoUpdateConfig:
    """How the generator learns from its graded solutions (the `update.*` keys of `reasonloop step-dpo`)."""

    loss: str = "step_dpo"  # step_dpo (pairs at critical steps), dpo (whole solutions) or advantage_weighted
    mc_k: int = bounded(8, ge=1)  # rollouts per step prefix for the Monte-Carlo values
    # distinct solutions valued per problem, wrong and right by turns (dpo: whole-solution pairs per problem)
    solutions_per_problem: int = bounded(4, ge=1)
    pit: float = bounded(0.0, ge=0, lt=1)  # a step after which the value is at most this is a pit
    positives: bool = True  # step_dpo: also pair the decisive step of right solutions
    beta: float = bounded(0.1, gt=0)  # DPO temperature (step_dpo, dpo)
    awr_beta: float = bounded(0.5, gt=0)  # advantage_weighted: weights exp(A / awr_beta)
    max_weight: float = bounded(20.0, gt=0)  # advantage_weighted: weight clip
    epochs: float = bounded(4.0, gt=0)  # passes over the pairs (or valued solutions)
    batch_size: int = bounded(16, ge=1)  # pairs (or solutions) per optimiser step
    lr: float = bounded(1e-4, gt=0)  # peak learning rate (5e-4 halved the nano's held-out accuracy: docs/step-dpo.md)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")


@dataclass(frozen=True)
class StepDpoConfig:
    """One per-step DPO run."""

    model: str = "nano"  # the starting model (an RFT model, or any model directory), or "nano"
    task: str = "arith"  # a world, with options: arith, countdown:n_numbers=3
    n_train: int = bounded(200, ge=1)  # training problems (train split)
    n_eval: int = bounded(100, ge=1)  # held-out problems (test split)
    k: int = bounded(4, ge=1)  # solutions sampled per training problem
    temperature: float = bounded(1.0, ge=0)  # sampling and rollout temperature
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per solution and rollout
    max_batch: int = bounded(256, ge=1)  # engine rows in flight
    seed: int = bounded(0, ge=0)  # problems, sampling, rollouts and training derive from this
    update: StepDpoUpdateConfig = field(default_factory=StepDpoUpdateConfig)  # values, pairs, loss, training
    metrics_sinks: tuple[str, ...] = ()  # also send metrics.jsonl records to: "tensorboard", "wandb" (core.sinks)


def valued_solutions(samples: list[Sample], per_problem: int) -> list[Sample]:
    """The solutions Monte-Carlo values are computed for: per problem, up to `per_problem` distinct ones, wrong and
    right by turns (wrong first: negatives are what per-step DPO learns from), sampling order within each side.
    Samples without sampled token ids (a tree search's texts) are left out: pairs are built from ids.

    >>> ss = [Sample("a", t, steps=[t], token_ids=[1], reward=r) for t, r in [("r1", 1.0), ("w1", 0.0), ("w1", 0.0),
    ...       ("w2", 0.0), ("r2", 1.0), ("w3", 0.0)]]
    >>> [s.text for s in valued_solutions(ss, 4)]
    ['w1', 'r1', 'w2', 'r2']
    """
    sides: dict[str, tuple[list[Sample], list[Sample]]] = {}
    for s in samples:
        if not s.token_ids or not s.steps:
            continue
        wrong, right = sides.setdefault(s.problem_id, ([], []))
        side = right if s.reward == 1.0 else wrong
        if all(t.text != s.text for t in side):
            side.append(s)
    out = []
    for wrong, right in sides.values():
        mixed = [s for pair in zip(wrong, right) for s in pair]
        out += (mixed + wrong[len(right) :] + right[len(wrong) :])[:per_problem]
    return out


def _slim(s: Sample | None) -> dict[str, Any] | None:
    """What pairs need of a sample or rollout (no logprobs: the file stays small)."""
    if s is None:
        return None
    keep = ("problem_id", "text", "steps", "token_ids", "prompt_ids", "reward")
    return {k: getattr(s, k) for k in keep}


def monte_carlo_values(
    path: Path,
    engine: HFEngine,
    task: Task,
    by_id: dict[str, Problem],
    solutions: list[Sample],
    k: int,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    bar: BarFactory = no_bar,
) -> list[dict[str, Any]]:
    """Step values of every solution in JSONL `path`, one record per solution, resuming what a killed run left.

    A record holds the solution, its values, the grade of every rollout of every prefix (`wins`, for the
    agreement against k), and per prefix the first succeeding and the first failing rollout (`good`, `bad`), the
    continuations pairs take. Solutions are rolled out in fixed groups with seeds derived from the group, and a
    partly written group is regenerated whole, so a resumed file equals an uninterrupted one.
    """
    have: dict[int, dict[str, Any]] = {}
    if path.exists():
        repair_jsonl(path)
        have = {rec["i"]: rec for rec in read_jsonl(path)}
    per_call = max(1, engine.max_batch // (4 * k))  # about 4 prefixes per solution fill a batch of rows
    groups = [range(b, min(b + per_call, len(solutions))) for b in range(0, len(solutions), per_call)]
    todo = [(g, rows) for g, rows in enumerate(groups) if any(i not in have for i in rows)]
    if todo:
        with bar(sum(i not in have for _, rows in todo for i in rows), "Monte-Carlo step values") as advance:
            with JsonlWriter(path) as w:
                for g, rows in todo:
                    items = [(by_id[solutions[i].problem_id], solutions[i].steps) for i in rows]
                    out = mc_step_rollouts(
                        engine, task.grade, items, k, delimiter=task.step_delimiter, temperature=temperature,
                        max_new_tokens=max_new_tokens, seed=derive_seed(seed, "mc", g),
                    )  # fmt: skip
                    for i, r in zip(rows, out):
                        if i in have:
                            continue
                        rec = {
                            "i": i,
                            "sample": _slim(solutions[i]),
                            "values": r.values,
                            "wins": [[x.reward for x in rs] for rs in r.rollouts],
                            "good": [_slim(next((x for x in rs if x.reward == 1.0), None)) for rs in r.rollouts],
                            "bad": [_slim(next((x for x in rs if x.reward != 1.0), None)) for rs in r.rollouts],
                        }
                        w.write(rec)
                        have[i] = rec
                        advance(1)
    return [have[i] for i in range(len(solutions))]


def _sample(d: dict[str, Any] | None) -> Sample | None:
    return None if d is None else Sample(**d)


def step_pairs_of(records: list[dict[str, Any]], decode, delimiter: str, cfg: StepDpoUpdateConfig) -> list:
    """The per-step pairs of the valued solutions (wrong ones always, right ones with `cfg.positives`)."""
    pairs = []
    for rec in records:
        s = _sample(rec["sample"])
        c = critical_step(rec["values"], s.reward == 1.0, cfg.pit)
        if c is None or (s.reward == 1.0 and not cfg.positives):
            continue
        pair = step_pair(s, rec["values"], _sample(rec["good"][c]), _sample(rec["bad"][c]), decode, delimiter, cfg.pit)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _weighted_rows(records, decode, delimiter: str) -> list[tuple[list[int], list[int], list[float]]]:
    """(prompt ids, solution ids, per-token advantage) of every valued solution, for `advantage_weighted`."""
    rows = []
    for rec in records:
        s = _sample(rec["sample"])
        if not splits_at_steps(s.text, s.steps, delimiter):
            continue  # its tokens cannot be split into steps
        adv = step_advantage_tokens(rec["values"], token_steps(decode, s.token_ids, delimiter))
        rows.append((list(s.prompt_ids), list(s.token_ids), adv))
    return rows


def preference_loss(model, data: list, pad: int, cfg: StepDpoUpdateConfig) -> Callable[[Any, list[int]], Any]:
    """`loss_fn(model, indices)` of `cfg.loss` over `data` (pairs, or weighted rows for `advantage_weighted`), for
    `train_loop` / `Trainer.step`. For the DPO losses the reference is `model` as it is now, frozen: its
    log-probabilities of every pair are computed here, once, not every epoch."""

    if cfg.loss == "advantage_weighted":

        def weighted(m, idx):  # the model as the trainer placed it (accelerate may have moved it to a GPU)
            dev = next(m.parameters()).device
            rows = [data[j] for j in idx]
            b = pad_rows([(p, c) for p, c, _ in rows], pad)
            adv = torch.zeros(b.input_ids.shape)  # (B, T): each completion token's step advantage
            for r, (p, c, a) in enumerate(rows):
                adv[r, len(p) : len(p) + len(c)] = torch.tensor(a)
            ids = b.input_ids.to(dev)
            logits = m(input_ids=ids, attention_mask=b.attention_mask.to(dev)).logits
            return advantage_weighted_loss(
                logits, ids, b.completion_mask.to(dev), adv.to(dev), cfg.awr_beta, cfg.max_weight
            )

        return weighted
    with torch.no_grad():
        both = [pair_logprobs(model, data[b : b + 64], pad).view(2, -1) for b in range(0, len(data), 64)]
        ref = torch.cat(both, dim=1)  # (2, n): chosen, rejected
    loss_of = step_dpo_loss if cfg.loss == "step_dpo" else dpo_loss

    def pairwise(m, idx):
        logps = pair_logprobs(m, [data[j] for j in idx], pad)  # (2B,) chosen, rejected
        ref_c, ref_r = (r.to(logps.device) for r in ref[:, torch.tensor(idx)])
        return loss_of(logps[: len(idx)], logps[len(idx) :], ref_c, ref_r, beta=cfg.beta)

    return pairwise


def _train(start: Path, data: list, out: Path, cfg: StepDpoUpdateConfig, seed: int, bar: BarFactory) -> list[dict]:
    """Optimise the model in `start` on `data` (pairs, or weighted rows) with `cfg.loss`; save it to `out/model`.
    Checkpoints in `out/train` (a kill resumes from the last one). Returns the training history."""
    model, tokenizer = load_model(start)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # as `encode_pairs` pads
    n = len(data)
    steps = max(1, math.ceil(cfg.epochs * n / cfg.batch_size))
    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup=max(1, steps // 20), save_every=max(1, steps // 5), seed=seed)
    loss_fn = preference_loss(model, data, pad, cfg)
    with bar(steps, f"{cfg.loss} on {n} {'solutions' if cfg.loss == 'advantage_weighted' else 'pairs'}") as advance:
        res = train_loop(
            model, tokenizer, lambda i: shuffled_batch(i, n, cfg.batch_size, seed), loss_fn, tcfg,
            out_dir=out / "train", progress=lambda r: advance(status=f"loss {_loss_of(r):.3f}"),
        )  # fmt: skip
    save_model(model, tokenizer, out / "model")
    return res["history"]


def _loss_of(record: dict[str, float]) -> float:
    return next(record[k] for k in ("step_dpo_loss", "dpo_loss", "awr_loss") if k in record)


def step_dpo_update(
    start_dir: str | Path,
    problems: list[Problem],
    samples: list[Sample],
    task: Task,
    out_dir: str | Path,
    cfg: StepDpoUpdateConfig = StepDpoUpdateConfig(),
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    max_batch: int = 256,
    seed: int = 0,
    bar: BarFactory = no_bar,
    log=print,
) -> dict[str, Any]:
    """A generator update from graded samples: Monte-Carlo step values with the model in `start_dir`, pairs, then
    training with `cfg.loss`; the new model is `out_dir/model`. Resumable: rerun with the same arguments.

    `samples` are graded samples of `problems` (reward 1 = right) with the engine's `prompt_ids` and `token_ids`
    (as `sample_to_file` writes them); others are left out. `temperature` and `max_new_tokens` govern the rollouts,
    `seed` the rollouts and the shuffling. Returns {"model": Path, "pairs": ..., "history": [...], ...}; raises
    `ReasonloopError` when there is nothing to train on. `out_dir` holds `mc_values.jsonl`, `train/` (checkpoints),
    `model/` and `update.json` (the returned record, written last).
    """
    out = Path(out_dir)
    summary = out / "update.json"
    if summary.exists():
        return {**json.loads(summary.read_text()), "model": out / "model"}
    by_id = {p.id: p for p in problems}
    usable = [s for s in samples if s.problem_id in by_id]
    info: dict[str, Any] = {"loss": cfg.loss, "samples": len(usable)}
    records, decode = [], None
    if cfg.loss != "dpo":
        solutions = valued_solutions(usable, cfg.solutions_per_problem)
        engine = HFEngine.from_pretrained(start_dir, max_batch=max_batch)
        decode = functools.partial(engine.tokenizer.decode, skip_special_tokens=True)  # the text the steps come from
        log(f"Monte-Carlo step values: {len(solutions)} solutions x {cfg.mc_k} rollouts per prefix")
        records = monte_carlo_values(
            out / "mc_values.jsonl", engine, task, by_id, solutions, cfg.mc_k, temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed, bar=bar,
        )  # fmt: skip
        info.update(valued=len(records), valued_wrong=sum(r["sample"]["reward"] != 1.0 for r in records))
    if cfg.loss == "dpo":
        data: list = solution_pairs([s for s in usable if s.token_ids], cfg.solutions_per_problem)
    elif cfg.loss == "step_dpo":
        data = step_pairs_of(records, decode, task.step_delimiter, cfg)
        info.update(
            negative_pairs=sum(p.negative for p in data),
            positive_pairs=sum(not p.negative for p in data),
            unjoined_pairs=sum(not p.joined for p in data),
            mean_critical_step=sum(p.step for p in data) / max(1, len(data)),
        )
    else:
        data = _weighted_rows(records, decode, task.step_delimiter)
    info["examples"] = len(data)
    if not data:
        what = {"dpo": "problem with both a right and a wrong solution", "step_dpo": "critical step with a rollout "
                "to pair it with", "advantage_weighted": "valued solution"}[cfg.loss]  # fmt: skip
        raise ReasonloopError(
            f"{cfg.loss}: no {what} among {len(usable)} samples: nothing to train on (raise k, n_train or "
            "update.mc_k, or start from a model that solves some problems)"
        )
    log(f"training with {cfg.loss} on {len(data)} examples")
    info["history"] = _train(Path(start_dir), data, out, cfg, seed, bar)  # after a kill: from its last checkpoint
    atomic_write_json(summary, info)
    return {**info, "model": out / "model"}


def run_step_dpo(cfg: StepDpoConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Sample, value, pair, train, measure and report (see the module docstring); resumes a killed run."""
    run, task, train_problems, test_problems, _, source = start_run(cfg, run_dir)
    state, samples = start_and_samples(run, cfg, source, task, train_problems, test_problems, bar)
    if samples is not None:
        info = step_dpo_update(
            source, train_problems, samples, task, run.path / "update", cfg.update, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, max_batch=cfg.max_batch, seed=cfg.seed + 2, bar=bar, log=log,
        )  # fmt: skip
        engine = HFEngine.from_pretrained(info["model"], max_batch=cfg.max_batch)
        accuracy = greedy_accuracy(engine, task.grade, test_problems, cfg.max_new_tokens)
        info.pop("model")
        state = run.update_state(
            accuracy=accuracy,
            train_solved=len({s.problem_id for s in samples if s.reward == 1.0}),
            agreement=_agreement(run.path / "update" / "mc_values.jsonl", task, train_problems, cfg),
            **info,
        )
        run.log_metrics(**{k: v for k, v in state.items() if isinstance(v, (int, float))})
    log(f"{cfg.update.loss}: held-out greedy {100 * state['base_accuracy']:.1f}% -> {100 * state['accuracy']:.1f}%")
    write_report(run.path, cfg, state)
    return {**state, "model": run.path / "update" / "model"}


def _agreement(path: Path, task: Task, problems: list[Problem], cfg: StepDpoConfig) -> list[dict] | None:
    """Critical-step agreement with the world's true first error against k (powers of 2 up to `mc_k`)."""
    first_error = getattr(task, "first_error", None)
    if first_error is None or not path.exists():
        return None
    by_id = {p.id: p for p in problems}
    wrong = []
    for rec in read_jsonl(path):
        s = rec["sample"]
        if s["reward"] == 0.0 and (truth := first_error(by_id[s["problem_id"]], s["steps"])) is not None:
            wrong.append((rec["wins"], truth))
    ks = sorted({2**i for i in range(int(math.log2(cfg.update.mc_k)) + 1)} | {cfg.update.mc_k})
    return critical_step_agreement(wrong, ks, cfg.update.pit)


def write_report(path: Path, cfg: StepDpoConfig, state: dict[str, Any]) -> None:
    """`report.md`: before/after, what the pairs were made of, agreement against k, the training curve."""
    u = cfg.update
    lines = [
        f"# {u.loss} on `{cfg.task}`",
        "",
        f"Model `{cfg.model}`; {cfg.k} samples per training problem ({cfg.n_train} problems) at temperature "
        f"{cfg.temperature}; Monte-Carlo values from {u.mc_k} rollouts per step prefix of up to "
        f"{u.solutions_per_problem} solutions per problem; loss `{u.loss}`, {u.epochs:g} epochs.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| held-out greedy accuracy before ({cfg.n_eval} problems) | {100 * state['base_accuracy']:.1f}% |",
        f"| held-out greedy accuracy after | {100 * state['accuracy']:.1f}% |",
        f"| training problems with a right sample | {state['train_solved']} of {cfg.n_train} |",
    ]
    if "valued" in state:
        lines.append(f"| solutions valued by rollouts (wrong) | {state['valued']} ({state['valued_wrong']}) |")
    if "negative_pairs" in state:
        lines.append(
            f"| pairs: first pits of wrong solutions / decisive steps of right ones | {state['negative_pairs']} / "
            f"{state['positive_pairs']} (mean critical step {state['mean_critical_step']:.2f}) |"
        )
    lines.append(f"| training examples | {state['examples']} |")
    agreement = state.get("agreement")
    if agreement:
        lines += [
            "",
            f"Critical step of the {agreement[0]['n']} wrong solutions whose first error the world knows, against "
            "the rollouts per prefix k (the first k of the same rollouts):",
            "",
            "| k | first pit = true first error | a pit found | pit before the error | pit after the error |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {a['k']} | {100 * a['agreement']:.1f}% | {100 * a['found']:.1f}% | {100 * a['early']:.1f}% | "
            f"{100 * a['late']:.1f}% |"
            for a in agreement
        ]
        save_line_plot(
            path / "plots" / "agreement.png", [a["k"] for a in agreement],
            {"first pit = true first error": [100 * a["agreement"] for a in agreement],
             "a pit found": [100 * a["found"] for a in agreement]},
            xlabel="rollouts per prefix (k)", ylabel="% of wrong solutions", title=f"critical steps on {cfg.task}",
        )  # fmt: skip
        lines += ["", "![agreement](plots/agreement.png)"]
    history = state.get("history") or []
    if history:
        save_line_plot(
            path / "plots" / "training.png", [h["step"] for h in history], {u.loss: [_loss_of(h) for h in history]},
            xlabel="optimiser step", ylabel="loss", title=f"{u.loss} on {cfg.task}", xticks=len(history) <= 30,
        )  # fmt: skip
        lines += ["", "![training](plots/training.png)"]
    atomic_write_text(path / "report.md", "\n".join(lines) + "\n")
