"""Pieces every recipe shares: resumable sampling to JSONL, the run set-up, SFT on (prompt, completion) pairs."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import (
    Generator,
    JsonlWriter,
    Problem,
    ReasonloopError,
    RunDir,
    Sample,
    atomic_write_text,
    defaults_of,
    derive_seed,
    read_jsonl,
    repair_jsonl,
    seed_everything,
    to_dict,
)
from reasonloop.engine import HFEngine, open_generator
from reasonloop.engine.fanout import LocalExecutor, RayExecutor
from reasonloop.eval import greedy_accuracy
from reasonloop.models import (
    chat_renderer,
    check_model_dir,
    load_model,
    load_tokenizer,
    resolve_model,
    save_model,
)
from reasonloop.tasks import Task, get_task
from reasonloop.train import TrainConfig, sft_on_pairs
from reasonloop.verifiers.check import claim_split

PLACEMENT_KEYS = ("executor", "ray")  # config keys that say where sampling and grading run, not what they compute

# A progress factory: `with bar(total, description) as advance: advance(k)`.
BarFactory = Callable[[int, str], contextlib.AbstractContextManager]


@contextlib.contextmanager
def no_bar(total: int, description: str) -> Iterator[Callable[..., None]]:
    yield lambda *a, **k: None


def sample_to_file(run: RunDir, name: str, *args: Any, seed: int, **kwargs: Any) -> list[Sample]:
    """`sample_jsonl` (same arguments after `path`) into the run's `samples/<name>.jsonl`. Each file has its own
    random streams (the seed is `derive_seed(seed, name)`), so a round's plain and hinted samples of one problem
    are drawn independently."""
    return sample_jsonl(run.samples_path(name), *args, seed=derive_seed(seed, name), description=name, **kwargs)


def start_and_samples(
    run: RunDir, cfg: Any, source: Path, task: Task, train: list[Problem], test: list[Problem], bar: BarFactory = no_bar
) -> tuple[dict[str, Any], list[Sample] | None]:
    """The opening of the one-shot recipes (RFT, per-step DPO): the run's state with `base_accuracy` (the starting
    model's held-out greedy accuracy, measured once), and `cfg.k` samples per training problem from it
    (`samples/samples.jsonl`, resumable), or None once the run has its result (`accuracy` in the state)."""
    state = run.state
    if "base_accuracy" not in state:
        engine = HFEngine.from_pretrained(source, max_batch=cfg.max_batch)
        state = run.update_state(base_accuracy=greedy_accuracy(engine, task.grade, test, cfg.max_new_tokens))
    if "accuracy" in state:
        return state, None
    engine = HFEngine.from_pretrained(source, max_batch=cfg.max_batch)
    samples = sample_to_file(
        run, "samples", engine, task, train, lambda p: p.prompt, cfg.k,
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 1, bar=bar,
    )  # fmt: skip
    return state, samples


def sample_jsonl(
    path: Path,
    engine: Generator,
    task: Task,
    problems: list[Problem],
    prompt_of: Callable[[Problem], str],
    n: int,
    *,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    top_p: float = 1.0,
    bar: BarFactory = no_bar,
    description: str = "sampling",
    executor: LocalExecutor | RayExecutor | None = None,
) -> list[Sample]:
    """`n` graded samples per problem in JSONL `path`, resuming what a killed run left; the first `n` per problem.

    Each sample carries (problem_id, sample_index); a rerun tops up problems
    with fewer than `n` samples, so none is lost or written twice. Sample j of
    problem p draws from its own random stream, `derive_seed(derive_seed(seed,
    p.id), j)` (see `reasonloop.engine.hf`), so its tokens do not depend on
    which problems share its batch. The batches are also fixed: groups of
    `engine.max_batch // n` consecutive problems of `problems`, not of what is
    left, and a rerun regenerates a partly written group whole (writing only
    what is missing). So a resumed run repeats the very calls of an
    uninterrupted one, float rounding of the logprobs included, and the file
    ends up byte for byte the same (same machine and thread count).

    `executor` says where the calls and the grading run (this process by
    default). A Ray executor runs the same fixed calls concurrently on its
    actors and grades in Ray tasks; lines are still written group by group in
    order, so the file is the one the local executor writes.
    """
    executor = executor or LocalExecutor()
    have: dict[str, list[Sample]] = {}
    if path.exists():
        repair_jsonl(path)
        for rec in read_jsonl(path):
            s = Sample.from_dict(rec)
            have.setdefault(s.problem_id, []).append(s)
    per_call = max(1, engine.max_batch // n)
    groups = [problems[b : b + per_call] for b in range(0, len(problems), per_call)]
    groups = [g for g in groups if any(len(have.get(p.id, [])) < n for p in g)]
    if groups:
        total = sum(max(0, n - len(have.get(p.id, []))) for g in groups for p in g)
        calls = (
            dict(
                prompts=[prompt_of(p) for p in group],
                n=n,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                seeds=[derive_seed(seed, p.id) for p in group],
            )
            for group in groups
        )
        with bar(total, description) as advance, JsonlWriter(path) as w:
            for group, out in zip(groups, executor.generate_calls(engine, calls)):
                starts = [len(have.get(p.id, [])) for p in group]  # samples each problem already has
                new: list[tuple[Problem, Sample]] = []
                for p, start, samples in zip(group, starts, out):
                    for j, s in enumerate(samples[start:], start=start):
                        s.meta["sample_index"] = j
                        new.append((p, s))
                for (p, _), s in zip(new, executor.grade(task.grade, new, task.step_delimiter)):
                    w.write(s.to_dict())
                    have.setdefault(p.id, []).append(s)
                advance(sum(max(0, n - start) for start in starts))
    return [s for p in problems for s in have.get(p.id, [])[:n]]


def finetune(
    model,
    tokenizer,
    pairs: list[tuple[str, str]],
    cfg: TrainConfig,
    batch_size: int,
    out_dir: Path,
    seed: int,
    bar: BarFactory = no_bar,
) -> dict[str, Any]:
    """SFT on (prompt, completion) pairs for `cfg.steps` steps (see `reasonloop.train.sft_on_pairs`), with a bar."""
    with bar(cfg.steps, f"fine-tuning on {len(pairs)} rationales") as advance:
        return sft_on_pairs(
            model, tokenizer, pairs, cfg, batch_size, out_dir, seed,
            progress=lambda r: advance(status=f"nll {r['sft_nll']:.3f}"),
        )  # fmt: skip


@dataclass
class RunSetup:
    """What every recipe starts from: its run directory, task, problems and model."""

    run: RunDir
    task: Task
    train: list[Problem]  # train-split problems the recipe learns from
    test: list[Problem]  # held-out test-split problems it is measured on
    by_id: dict[str, Problem]  # train problems by id
    model: Path  # the starting model's directory

    def __iter__(self):
        return iter((self.run, self.task, self.train, self.test, self.by_id, self.model))


def start_run(cfg: Any, run_dir: str | Path) -> RunSetup:
    """Record the config (refusing a different one in the same directory), seed, and draw the problems.

    `cfg` needs `task`, `n_train`, `n_eval`, `model`, `seed` and `metrics_sinks` (and may name example files, see
    `draw_problems`); the metrics sinks are opened on the run (`core.sinks`).
    """
    model = resolve_model(cfg.model)  # a missing model, or a bad world option, fails before the run directory exists
    draw_problems(cfg)  # so does a malformed example file (file:line)
    run = RunDir(run_dir)
    # where the work runs and where metrics go are not what it computes (both executors write the same samples): a
    # run started on Ray resumes locally and back, and a rerun may add or drop a sink, so those keys stay out of the
    # recorded config
    skip = (*PLACEMENT_KEYS, "metrics_sinks")
    recorded = {k: v for k, v in to_dict(cfg).items() if k not in skip}
    run.save_config(recorded, {k: v for k, v in defaults_of(type(cfg)).items() if k not in skip})
    run.open_sinks(getattr(cfg, "metrics_sinks", ()), recorded)
    seed_everything(cfg.seed)
    task, train, test = draw_problems(cfg)
    return RunSetup(run, task, train, test, {p.id: p for p in train}, model)


def draw_problems(cfg: Any) -> tuple[Task, list[Problem], list[Problem]]:
    """The task, its `n_train` train-split problems and `n_eval` held-out problems, drawn from `cfg.seed`.

    A config with example files (`data`, `eval_data`: a file task such as `jsonl`) takes the first `n_train`
    problems of `data` to learn from and the first `n_eval` of `eval_data` as the held-out set, prompted with its
    `system_prompt` and, with `chat`, through the model's chat template.
    """
    data = getattr(cfg, "data", "")
    if data:
        shaping: dict[str, Any] = {"system_prompt": cfg.system_prompt}  # the same prompts for both files
        if cfg.chat:
            tokenizer = load_tokenizer(check_model_dir(resolve_model(cfg.model)))
            shaping["chat"] = chat_renderer(tokenizer, where=f"model {cfg.model}")
        task = get_task(cfg.task, data=data, **shaping)
        held_out = get_task(cfg.task, data=cfg.eval_data, **shaping)
        return task, task.problems("train", cfg.n_train), held_out.problems("test", cfg.n_eval)
    task = get_task(cfg.task)
    return (
        task,
        task.problems("train", cfg.n_train, seed=cfg.seed + 100),
        task.problems("test", cfg.n_eval, seed=cfg.seed),
    )


def finetune_and_save(
    start: Path,
    pairs: list[tuple[str, str]],
    ckpt: Path,
    train_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    seed: int,
    bar: BarFactory = no_bar,
    steps: int = 0,
) -> None:
    """Fine-tune the model in `start` on `pairs` for `epochs` (or exactly `steps` optimiser steps when above 0)
    and save it to `ckpt` (skipped if it exists)."""
    if (ckpt / "config.json").exists():
        return
    model, tokenizer = load_model(start)
    steps = steps if steps > 0 else max(1, math.ceil(epochs * len(pairs) / batch_size))
    cfg = TrainConfig(steps=steps, lr=lr, warmup=max(1, steps // 20), save_every=max(1, steps // 5), seed=seed)
    finetune(model, tokenizer, pairs, cfg, batch_size, train_dir, seed, bar)
    save_model(model, tokenizer, ckpt)


def train_step_checker(
    start: Path, task, ckpt: Path, train_dir: Path, n_facts: int, *, seed: int = 0, bar: BarFactory = no_bar
) -> None:
    """Fine-tune `start` on `n_facts` of the world's single facts (`a op b=c`: the claim after the last `=` given
    the left side) and save it to `ckpt` as a step checker (`verifiers.check.StepChecker`); skipped if it exists.
    One pass, batch 64, lr 1e-3."""
    if (ckpt / "config.json").exists():
        return
    require_claims(task)
    pairs = [split for split in map(claim_split, task.facts(n_facts, seed=seed + 7919)) if split is not None]
    finetune_and_save(start, pairs, ckpt, train_dir, epochs=1, batch_size=64, lr=1e-3, seed=seed, bar=bar)


def require_claims(task) -> None:
    """A one-line error unless the world's facts state claims (`left=claim`) a step checker can learn."""
    facts = task.facts(16) if hasattr(task, "facts") else []
    if not any(claim_split(f) for f in facts):
        raise ReasonloopError(f"{task.name}: its facts have no claims (`left=claim`) for a step checker to learn")


_VLLM_ENGINES: dict[str, Any] = {}  # in-process vLLM holds the GPU: one per architecture, later rounds reload weights


def open_sampler(spec: str, weights: Path, *, max_batch: int):
    """The generator a round samples from, on `weights`: the `hf` engine in process when `spec` is empty; in-process
    vLLM for "vllm" (made once per architecture, then given each round's weights from disk); else the server `spec`
    names (`openai:URL#model`), first told to load `weights` (`load_weights_from_disk`), so that it samples from the
    model being trained. The server must read `weights` on its own file system (the same machine, or a shared one)
    and offer reloads (`reasonloop serve --allow-reload`, SGLang); one line otherwise."""
    if not spec:
        return HFEngine.from_pretrained(weights, max_batch=max_batch)
    if spec == "vllm":
        key = (Path(weights) / "config.json").read_text()
        if key not in _VLLM_ENGINES:
            from reasonloop.engine.vllm_engine import VLLMEngine

            _VLLM_ENGINES[key] = VLLMEngine(weights, max_batch=max_batch)
            return _VLLM_ENGINES[key]
        engine = _VLLM_ENGINES[key]
    else:
        engine = open_generator(spec, max_batch=max_batch)
    engine.load_weights_from_disk(Path(weights).resolve())
    return engine


def metrics_through(path: Path, step: int) -> list[dict[str, Any]]:
    """The logged records of steps 0..`step`; lines of later steps (logged before a kill, not checkpointed) are
    dropped from the file, so each step is logged exactly once when the run redoes them."""
    if not path.exists():
        return []
    repair_jsonl(path)
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    seen: dict[int, dict[str, Any]] = {r["step"]: r for r in kept}  # a step logged twice keeps its last line
    kept = [seen[s] for s in sorted(seen)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
