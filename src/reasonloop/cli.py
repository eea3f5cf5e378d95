"""The `reasonloop` command: init, sample, eval, demo, grade, star, rft, vstar, verifiers, rl, search, scale, selfplay,
step-dpo, quiet-star, serve.

Errors caused by input (unknown task, missing model path, bad config key,
malformed JSONL) print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reasonloop.core import DataError, ReasonloopError, ranged
from reasonloop.core.paths import reasonloop_home, resolve_model

NANO_DIR = reasonloop_home() / "nano"


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Any]:
    """A rich progress bar on stderr; yields `advance(k=1, status=None)`; `status` replaces the trailing text."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, TextColumn("{task.fields[status]}"), console=_console(), transient=False) as prog:
        task = prog.add_task(description, total=total, status="")

        def advance(k: int = 1, status: str | None = None) -> None:
            prog.update(task, advance=k, **({"status": status} if status is not None else {}))

        yield advance


def _task_from_args(args: argparse.Namespace):
    import yaml

    from reasonloop.tasks import get_task

    options: dict[str, Any] = {}
    for item in args.task_option or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ReasonloopError(f"--task-option '{item}': expected key=value")
        options[k] = yaml.safe_load(v)
    chat = None
    if getattr(args, "chat", False):  # commands that sample: render with --model's own chat template
        from reasonloop.models import chat_renderer, check_model_dir, load_tokenizer

        tokenizer = load_tokenizer(check_model_dir(resolve_model(args.model)))
        chat = chat_renderer(tokenizer, where=f"--model {args.model}")
    return get_task(args.task, data=args.data, system_prompt=args.system or "", chat=chat, **options)


# --- init ----------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from reasonloop.core import set_threads
    from reasonloop.core.jsonl import atomic_write_json
    from reasonloop.recipes.nano import load_nano_config, train_nano

    cfg = load_nano_config(args.config, args.set)
    out = Path(args.out).expanduser()
    con = _console()
    if (out / "config.json").exists() and not args.force:
        con.print(f"nano model already at {out} (use --force to rebuild)")
    else:
        set_threads(args.threads)
        t0 = time.perf_counter()
        log_path = out.with_name(out.name + "-train.jsonl")
        from reasonloop.core import JsonlWriter

        with progress_bar(cfg.steps, "training nano model") as advance, JsonlWriter(log_path) as log:
            val = {"acc": None}

            def on_step(rec: dict) -> None:
                val["acc"] = rec.get("val_greedy_accuracy", val["acc"])
                shown = (
                    ""
                    if val["acc"] is None
                    else f" val acc {100 * val['acc']:.0f}% (stop at {100 * cfg.target_accuracy:.0f}%)"
                )
                advance(status=f"loss {rec['loss']:.3f}{shown}")

            train_nano(out, cfg, log=log.write, progress=on_step)
        build_s = time.perf_counter() - t0
        atomic_write_json(out / "reasonloop_build.json", {"config": cfg.__dict__, "build_seconds": build_s})
        info = json.loads((out / "nano_training.json").read_text())
        con.print(
            f"built nano model in {build_s:.0f}s at {out}: stopped at step {info['stopped_at_step']} with "
            f"validation greedy accuracy {100 * (info['val_greedy_accuracy'] or 0):.0f}% (target {100 * cfg.target_accuracy:.0f}%)"
        )
    if args.eval_problems > 0:
        from reasonloop.tasks import parse_task_spec

        name, options = parse_task_spec(cfg.task)
        args.model, args.task, args.data = str(out), name, None
        args.task_option = [f"{k}={v}" for k, v in options.items()]
        args.split, args.num_problems, args.n = "test", args.eval_problems, 16
        args.temperature, args.top_p, args.max_new_tokens, args.seed = 1.0, 1.0, 128, 0
        args.output, args.system, args.chat = str(out / f"eval_{name}.json"), None, False
        args.executor, args.ray_address, args.ray_cpus, args.ray_actors = "local", "", 2, 0
        return cmd_eval(args)
    return 0


# --- eval ----------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from reasonloop.core import atomic_write_json, set_threads
    from reasonloop.engine.fanout import RayConfig, open_executor
    from reasonloop.eval import EvalConfig, evaluate, summary_rows

    set_threads(getattr(args, "threads", None))
    if Path(args.output).is_dir():
        raise DataError(f"{args.output}: --output is a directory; give a JSON file path")
    task = _task_from_args(args)
    problems = task.problems(args.split, args.num_problems, seed=args.seed)
    cfg = EvalConfig(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    ray_cfg = RayConfig(address=args.ray_address, num_cpus=args.ray_cpus, actors=args.ray_actors)
    t0 = time.perf_counter()
    if args.executor != "local":
        check_prompts_of_spec(args.model, problems)
    with open_executor(args.executor, ray_cfg) as executor:
        engine = executor.open_generator(args.model, max_batch=args.max_batch)
        check_prompts(engine, problems)  # a local engine: its own tokenizer and context
        with progress_bar(len(problems) * (1 + args.n), f"evaluating on {task.name}") as advance:
            result = evaluate(engine, task, problems, cfg, progress=advance, executor=executor)
    result["seconds"] = time.perf_counter() - t0
    table = Table(title=f"{args.model} on {task.name} ({len(problems)} {args.split} problems, n={args.n})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary_rows(result):
        table.add_row(name, f"{100 * value:.1f}%")
    table.add_row("tokens generated", f"{result['tokens']['generated']:,}")
    table.add_row("seconds", f"{result['seconds']:.1f}")
    from rich.console import Console

    Console().print(table)
    if result["by_group"]:
        groups = Table(title="by number of operations")
        cols = list(next(iter(result["by_group"].values())))
        for c in ["n_ops", *cols]:
            groups.add_column(c, justify="right")
        for g, row in result["by_group"].items():
            groups.add_row(g, *(str(v) if k == "problems" else f"{100 * v:.0f}%" for k, v in row.items()))
        Console().print(groups)
    out = {k: v for k, v in result.items() if k != "samples"}
    out.update(model=str(args.model), task=task.name, split=args.split, config=cfg.__dict__, executor=args.executor)
    atomic_write_json(args.output, out)
    _console().print(f"wrote {args.output}")
    return 0


# --- sample --------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample completions to JSONL; rerunning resumes after the last problem fully written."""
    from reasonloop.core import set_threads
    from reasonloop.core.lock import output_lock

    set_threads(args.threads)
    out = Path(args.output)
    if out.is_dir():
        raise DataError(f"{out}: --output is a directory; give a JSONL file path")
    task = _task_from_args(args)
    problems = task.problems(args.split, args.num_problems, seed=args.seed)
    with output_lock(out):  # one writer per output file; released when this command returns
        return _sample_into(args, task, problems, out)


def _sample_into(args: argparse.Namespace, task, problems, out: Path) -> int:
    from reasonloop.engine import open_generator
    from reasonloop.recipes.common import sample_jsonl

    done = _sampled_counts(out)
    todo = [p for p in problems if done.get(p.id, 0) < args.n]
    if not todo:
        _console().print(f"all {len(problems)} problems already sampled in {out}")
        return 0
    engine = open_generator(args.model, max_batch=args.max_batch)
    check_prompts(engine, todo)
    sample_jsonl(
        out, engine, task, problems, lambda p: p.prompt, args.n,
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
        bar=progress_bar, description=f"sampling {task.name}",
    )  # fmt: skip
    _console().print(f"wrote {sum(args.n - done.get(p.id, 0) for p in todo)} samples to {out}")
    return 0


def _sampled_counts(out: Path) -> dict[str, int]:
    """Samples already in `out` per problem id; a file that `sample` did not write is a one-line error."""
    from reasonloop.core import repair_jsonl
    from reasonloop.core.jsonl import read_jsonl_numbered

    done: dict[str, int] = {}
    if not out.exists():
        return done
    repair_jsonl(out)
    for lineno, rec in read_jsonl_numbered(out):
        meta = rec.get("meta")
        if not isinstance(rec.get("problem_id"), str) or not isinstance(meta, dict) or "sample_index" not in meta:
            raise DataError(
                f"{out}:{lineno}: not a samples file of `reasonloop sample` (no problem_id and meta.sample_index); "
                "give a new --output"
            )
        done[rec["problem_id"]] = done.get(rec["problem_id"], 0) + 1
    return done


def check_prompts(engine, problems) -> None:
    """Refuse, before generating, a prompt the model cannot take: empty, or longer than its context (a 50 MB
    question would otherwise be tokenised and fed whole). The error names the problem's file:line. A model behind
    an HTTP server (no local tokenizer) is checked by its server, which refuses such a prompt with a 4xx."""
    if getattr(engine, "tokenizer", None) is None:
        return
    context = getattr(engine, "context_length", None)  # vLLM's; the hf engine's model config says it
    if context is None:
        context = getattr(engine.model.config, "max_position_embeddings", None)
    _check_prompt_lengths(engine.tokenizer, context, problems)


def check_prompts_of_spec(spec: str, problems) -> None:
    """`check_prompts` before a fanned-out generator loads the model on its workers: with the tokenizer and the
    context length read here, when the spec names local weights this machine can read (a worker's error would
    otherwise come back from another process). Other specs are checked by their server."""
    from reasonloop.core.paths import parse_model_spec
    from reasonloop.models.hf import check_model_dir, load_tokenizer

    if parse_model_spec(spec).backend != "hf" or not resolve_model(spec).exists():
        return
    path = check_model_dir(resolve_model(spec))
    context = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
    _check_prompt_lengths(load_tokenizer(path), context, problems)


def _check_prompt_lengths(tokenizer, context: int | None, problems) -> None:
    for p in problems:
        where = f"{p.meta['source']}:{p.meta['source_line']}" if "source_line" in p.meta else f"problem {p.id}"
        n_tokens = len(tokenizer(p.prompt)["input_ids"])
        if n_tokens == 0:
            raise DataError(f"{where}: empty prompt")
        if context and n_tokens > context:
            raise DataError(f"{where}: prompt is {n_tokens:,} tokens, longer than the model's context ({context:,})")


# --- problems ------------------------------------------------------------------


def cmd_problems(args: argparse.Namespace) -> int:
    """A task's problems as a JSONL example file (the input of reinforcement fine-tuning, `rl --set data=`)."""
    from reasonloop.core import atomic_write_text
    from reasonloop.tasks.jsonl import to_example

    out = Path(args.output)
    if out.is_dir():
        raise DataError(f"{out}: --output is a directory; give a JSONL file path")
    task = _task_from_args(args)
    problems = task.problems(args.split, args.num_problems, seed=args.seed)
    atomic_write_text(out, "".join(json.dumps(to_example(p), ensure_ascii=False) + "\n" for p in problems))
    _console().print(f"wrote {len(problems)} {args.split} problems of {task.name} to {out}")
    return 0


# --- demo ----------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The self-play story: the countdown base (built if needed), rounds of search and training for both players,
    then greedy, majority vote and verifier best-of-n on held-out problems."""
    from rich.table import Table

    from reasonloop.core import set_threads
    from reasonloop.recipes import demo_config, run_demo

    cfg = demo_config(args.config, args.set)
    set_threads(args.threads)
    t0 = time.perf_counter()
    con = _console()
    records = run_demo(args.run_dir, cfg, bar=progress_bar, log=con.print)["records"]
    N, last = cfg.best_of, records[-1]
    table = Table(title=f"held-out {cfg.task} ({cfg.n_eval} problems), after round {last['round']}")
    for column in ("n", "greedy", "majority vote", f"verifier best-of-n ({cfg.verifier.upper()})"):
        table.add_column(column, justify="right")
    for n in sorted({1, 2, 4, 8, N}):
        if n <= N:
            best = f"{100 * last['verifier_curve'][n - 1]:.1f}%" if "verifier_curve" in last else "-"
            table.add_row(str(n), f"{100 * last['greedy']:.1f}%", f"{100 * last['majority_curve'][n - 1]:.1f}%", best)
    con.print(table)
    rows = Table(title="per round")
    columns = ("round", "greedy", f"pass@{N}", f"majority vote@{N}", f"verifier best-of-{N}", "AUROC within a problem",
               "the same, on G(r-1)'s samples")  # fmt: skip
    for column in columns:
        rows.add_column(column, justify="right")
    for r in records:
        best = f"{100 * r['verifier_curve'][-1]:.1f}%" if "verifier_curve" in r else "-"
        aurocs = [f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in ("auroc_within", "auroc_within_previous")]
        rows.add_row(str(r["round"]), f"{100 * r['greedy']:.1f}%", f"{100 * r[f'pass@{N}']:.1f}%",
                     f"{100 * r['majority_curve'][-1]:.1f}%", best, *aurocs)  # fmt: skip
    con.print(rows)
    con.print(f"demo finished in {time.perf_counter() - t0:.0f}s; report at {Path(args.run_dir) / 'report.md'}")
    return 0


def _judge_engine(path: str):
    from reasonloop.engine import open_generator

    return open_generator(path)


def _recipe_config(args: argparse.Namespace, cls):
    """A recipe's config from its YAML file and --set overrides; also sets torch threads."""
    from reasonloop.core import load_config, set_threads

    set_threads(args.threads)
    return load_config(cls, args.config, args.set)


def _report_recipe(config_name: str, run_name: str):
    """A command that loads the recipe's config, runs it with progress bars and points at its report."""

    def command(args: argparse.Namespace) -> int:
        import reasonloop.recipes as recipes

        run = getattr(recipes, run_name)
        run(_recipe_config(args, getattr(recipes, config_name)), args.run_dir, bar=progress_bar, log=_console().print)
        _console().print(f"report at {Path(args.run_dir) / 'report.md'}")
        return 0

    command.__doc__ = f"`{run_name}`; rerun the same command to resume."
    return command


cmd_rft = _report_recipe("RftConfig", "run_rft")
cmd_vstar = _report_recipe("VStarConfig", "run_vstar")
cmd_verifiers = _report_recipe("VerifiersConfig", "run_verifiers")
cmd_scale = _report_recipe("ScaleConfig", "run_scale")
cmd_selfplay = _report_recipe("SelfPlayConfig", "run_selfplay")
cmd_step_dpo = _report_recipe("StepDpoConfig", "run_step_dpo")
cmd_quiet_star = _report_recipe("QuietStarConfig", "run_quiet_star")


def cmd_star(args: argparse.Namespace) -> int:
    """STaR; rerun the same command to resume."""
    from reasonloop.recipes import StarConfig, run_star

    res = run_star(_recipe_config(args, StarConfig), args.run_dir, bar=progress_bar, log=_console().print)
    _console().print(
        f"STaR: held-out greedy accuracy {100 * res['base_accuracy']:.1f}% -> {100 * res['final_accuracy']:.1f}% "
        f"(best {100 * res['best_accuracy']:.1f}%); report at {Path(args.run_dir) / 'report.md'}"
    )
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    """Online RL; rerun the same command to resume."""
    from reasonloop.recipes import RLConfig, run_rl
    from reasonloop.recipes.rl import held_out_name

    cfg = _recipe_config(args, RLConfig)
    res = run_rl(cfg, args.run_dir, bar=progress_bar, log=_console().print)
    _console().print(
        f"{cfg.algorithm}: held-out greedy {held_out_name(cfg)} {100 * res['start_accuracy']:.1f}% -> "
        f"{100 * res['final_accuracy']:.1f}%; policy at {res['model']}; report at {Path(args.run_dir) / 'report.md'}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """One strategy at one budget on held-out problems; rerun to resume."""
    from reasonloop.recipes.scale import SearchConfig, run_scale

    cfg = _recipe_config(args, SearchConfig)
    (cell,) = run_scale(cfg.as_scale(), args.run_dir, bar=progress_bar, log=lambda s: None)["cells"]
    _console().print(
        f"{cfg.strategy} (N={cfg.budget}) on {cfg.n_eval} held-out {cfg.task} problems: accuracy "
        f"{100 * cell['accuracy']:.1f}%, {cell['generator_tokens']:.0f} generator and {cell['verifier_tokens']:.0f} "
        f"verifier tokens per problem; answers in {Path(args.run_dir) / 'samples'}"
    )
    return 0


# --- serve ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """A model behind the OpenAI completions API, until Ctrl-C."""
    from reasonloop.core import set_threads
    from reasonloop.engine import HFEngine
    from reasonloop.engine.server import ServeLimits, serve

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ReasonloopError("serve needs FastAPI and uvicorn: pip install 'reasonloop[serve]'") from None
    set_threads(args.threads)
    engine = HFEngine.from_pretrained(resolve_model(args.model), max_batch=args.max_batch)
    limits = ServeLimits(max_n=args.max_n, max_tokens=args.max_tokens, max_prompts=args.max_prompts)
    name = args.name or args.model
    _console().print(
        f"serving {args.model} as '{name}' at http://{args.host}:{args.port}/v1 (Ctrl-C stops)", soft_wrap=True
    )
    serve(engine, name, host=args.host, port=args.port, limits=limits, allow_reload=args.allow_reload)
    return 0


# --- parser --------------------------------------------------------------------


class UsageError(ReasonloopError):
    """A bad command line (unknown flag, missing argument, value out of range)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other input error: `error: reasonloop eval: argument ...`."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="arith", help="arith, countdown, extract, gsm8k, math or jsonl (default: arith)")
    p.add_argument("--data", help="JSONL file for the gsm8k, math and jsonl tasks")
    p.add_argument(
        "--task-option", action="append", metavar="KEY=VALUE", help="world knob, e.g. max_ops=5 (repeatable)"
    )
    p.add_argument("--system", help="system prompt for the gsm8k, math and jsonl tasks (a line's `system` field wins)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="problem split (default: test)")
    p.add_argument("--num-problems", type=ranged(int, ge=1), default=200, help="how many problems (default: 200)")


def _add_gen_args(p: argparse.ArgumentParser, n_default: int, n_min: int = 1) -> None:
    p.add_argument(
        "--model", default="nano", help="model directory, hf:DIR, openai:URL#model, or 'nano' (the built-in, default)"
    )
    p.add_argument(
        "--n", type=ranged(int, ge=n_min), default=n_default, help=f"samples per problem (default: {n_default})"
    )
    p.add_argument("--temperature", type=ranged(float, ge=0), default=1.0, help="sampling temperature; 0: greedy")
    p.add_argument("--top-p", type=ranged(float, gt=0, le=1), default=1.0, help="nucleus sampling mass (default: 1.0)")
    p.add_argument("--max-new-tokens", type=ranged(int, ge=1), default=128, help="generation budget (default: 128)")
    p.add_argument(
        "--max-batch", type=ranged(int, ge=1), default=256, help="rows decoded at once; bounds KV-cache memory"
    )
    p.add_argument("--seed", type=ranged(int, ge=0), default=0, help="problem and sampling seed (default: 0)")
    p.add_argument(
        "--chat", action="store_true",
        help="prompt file tasks through --model's chat template (instruct models; needs its local tokenizer)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="reasonloop", description="Generator-verifier self-play for reasoning.")
    parser.add_argument("--threads", type=ranged(int, ge=1), default=None, help="torch threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="build the nano base model from scratch, then evaluate it")
    p.add_argument("--out", default=str(NANO_DIR), help=f"where to save it (default: {NANO_DIR})")
    p.add_argument("--config", help="YAML file of NanoConfig keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a NanoConfig key (repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    p.add_argument(
        "--eval-problems", type=ranged(int, ge=0), default=200, help="held-out problems to evaluate on (0: skip)"
    )
    p.add_argument("--max-batch", type=ranged(int, ge=1), default=256, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("sample", help="sample completions to a JSONL file (resumable)")
    _add_task_args(p)
    _add_gen_args(p, 4)
    p.add_argument("--output", required=True, help="JSONL file to append samples to")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("problems", help="write a task's problems to a JSONL example file (prompt, answer, fields)")
    _add_task_args(p)
    p.add_argument("--seed", type=ranged(int, ge=0), default=0, help="problem seed (default: 0)")
    p.add_argument("--output", required=True, help="JSONL file to write (replaced)")
    p.set_defaults(func=cmd_problems)

    p = sub.add_parser("eval", help="greedy accuracy, pass@k and maj@k of a model on a task")
    _add_task_args(p)
    _add_gen_args(p, 16, n_min=0)  # --n 0: greedy accuracy only
    p.add_argument("--output", default="eval.json", help="where to write the JSON results (default: eval.json)")
    p.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="where to sample and grade (default: local)"
    )
    p.add_argument("--ray-address", default="", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--ray-cpus", type=ranged(int, ge=1), default=2, help="CPUs of a local Ray cluster (default: 2)")
    p.add_argument(
        "--ray-actors", type=ranged(int, ge=0), default=0, help="generator actors (default 0: one per GPU, else CPU)"
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo",
        help="self-play on the nano model and countdown: base, rounds for generator and verifier, vote vs best-of-N",
    )
    p.add_argument("config", nargs="?", help="YAML file of SelfPlayConfig keys over the demo's defaults (optional)")
    p.add_argument("--run-dir", default="runs/demo", help="run directory (default: runs/demo); rerun to resume")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SelfPlayConfig key (repeatable)")
    p.set_defaults(func=cmd_demo)

    for name, config, help_text, func in (
        ("star", "StarConfig", "STaR self-improvement", cmd_star),
        ("rft", "RftConfig", "rejection-sampling fine-tuning", cmd_rft),
        ("step-dpo", "StepDpoConfig", "per-step DPO from negatives at Monte-Carlo critical steps", cmd_step_dpo),
        ("vstar", "VStarConfig", "V-STaR: STaR plus a DPO verifier for best-of-N", cmd_vstar),
        (
            "verifiers",
            "VerifiersConfig",
            "train ORM, PRM, PAV, Bradley-Terry and DPO verifiers and compare them",
            cmd_verifiers,
        ),
        ("rl", "RLConfig", "online RL with grader rewards: GRPO, Dr. GRPO, RLOO, REINFORCE++, PPO", cmd_rl),
        ("search", "SearchConfig", "answer held-out problems with one search strategy and verifier", cmd_search),
        ("scale", "ScaleConfig", "strategies x budgets x seeds: accuracy against tokens spent", cmd_scale),
        (
            "selfplay",
            "SelfPlayConfig",
            "generator and verifier in rounds: search, then train both on what it found",
            cmd_selfplay,
        ),
        (
            "quiet-star",
            "QuietStarConfig",
            "Quiet-STaR: learned hidden thoughts before every token of text",
            cmd_quiet_star,
        ),
    ):
        p = sub.add_parser(name, help=f"{help_text} (resumable: rerun the same command)")
        p.add_argument("config", nargs="?", help=f"YAML file of {config} keys (optional)")
        p.add_argument("--run-dir", required=True, help="run directory (config, samples, checkpoints, report)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override a {config} key (repeatable)")
        p.set_defaults(func=func)

    p = sub.add_parser("serve", help="serve a model on the OpenAI completions API (/v1/completions, /v1/models)")
    p.add_argument("model", help="model directory, hf:DIR, or a built-in name such as nano")
    p.add_argument("--name", help="the model name clients send (default: MODEL as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=ranged(int, ge=1, le=65535), default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-batch", type=ranged(int, ge=1), default=256, help="rows decoded at once; bounds KV-cache memory"
    )
    p.add_argument("--max-n", type=ranged(int, ge=1), default=64, help="largest n per request (default: 64)")
    p.add_argument(
        "--max-tokens", type=ranged(int, ge=1), default=1024, help="largest max_tokens per request (default: 1024)"
    )
    p.add_argument("--max-prompts", type=ranged(int, ge=1), default=64, help="most prompts per request (default: 64)")
    p.add_argument(
        "--allow-reload", action="store_true",
        help="let clients swap in another saved model (POST /update_weights_from_disk; a recipe's sampler needs it)",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)

    from reasonloop.graders.cli import add_grade_parser

    add_grade_parser(sub, progress_bar, make_generator=_judge_engine)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own bars say what is happening
        return args.func(args)
    except ReasonloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the code: a full disk, a read-only or unwritable path
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror}; free space (or fix the path) and rerun to resume", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
