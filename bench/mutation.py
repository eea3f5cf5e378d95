"""Mutation testing of the modules that compute numbers or guard data, one module at a time, with mutmut.

    nice -n 10 python bench/mutation.py                      # every module below
    nice -n 10 python bench/mutation.py eval/metrics.py      # one or more modules
    nice -n 10 python bench/mutation.py --survivors          # rerun the last survivors with the current tests
    python bench/mutation.py --list                          # modules and the tests run against each

For each module, a scratch copy of the repository (src/, tests/, pyproject.toml) gets a
`[tool.mutmut]` section that mutates that module only and runs only the test files
relevant to it (plus the module's own doctests), so a module takes minutes, not the
whole suite per mutant. mutmut runs one worker (`--max-children 1`): the machine is
shared. Results go to bench/results/mutation.json and bench/results/mutation.md
(killed / survived / other per module, and the name of every survivor); show a
survivor's diff with `cd bench/results/mutation/<module> && mutmut show <name>`.

Not part of CI (tens of minutes in all). The last table and the survivors judged
equivalent are in docs/testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"

# module (under src/reasonloop) -> (test files, mutant-name globs to restrict to, or None for every function)
MODULES: dict[str, tuple[list[str], list[str] | None]] = {
    "train/losses.py": (["tests/test_train_losses.py"], None),
    "eval/metrics.py": (["tests/test_metrics.py"], None),
    "eval/verifier_metrics.py": (["tests/test_verifier_metrics.py"], None),
    "search/vote.py": (["tests/test_search_beam.py", "tests/test_search_properties.py"], None),
    "search/beam.py": (
        [
            "tests/test_search_beam.py",
            "tests/test_search_properties.py",
            "tests/test_search_tree.py",
            "tests/test_search_solve.py",
            "tests/test_search_wiring.py",
        ],
        None,
    ),  # fmt: skip
    "search/dvts.py": (["tests/test_search_tree.py", "tests/test_search_properties.py"], None),
    "search/mcts.py": (["tests/test_search_tree.py", "tests/test_search_properties.py"], None),
    "search/tot.py": (["tests/test_search_tree.py", "tests/test_search_properties.py"], None),
    "search/solve.py": (["tests/test_search_solve.py", "tests/test_search_wiring.py"], None),
    # the labelling functions, not the model code (trained and scored in tests/test_verifier_value.py's slow tests)
    "verifiers/value.py": (
        ["tests/test_verifier_labels.py"],
        [
            "*.x_mc_step_values__*",
            "*.x_orm_examples__*",
            "*.x_prm_examples__*",
            "*.x_encode__*",
            "*.x__encode__*",
            "*.x__batch__*",
            "*StepExampleǁ__post_init__*",
        ],
    ),  # fmt: skip
    "core/jsonl.py": (["tests/test_core.py", "tests/test_core_properties.py"], None),
    "core/rundir.py": (["tests/test_core.py", "tests/test_core_properties.py"], None),
    "graders/base.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/batch.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/cli.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/json_fields.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/judge.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/math_equiv.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/multi.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/numeric.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    # the sandboxed process code (python_grade itself, sandbox.py) is covered by tests/test_sandbox.py's hostile suite
    "graders/python_grader.py": (
        ["tests/test_graders.py", "tests/test_graders_more.py"],
        ["*PythonConfigǁ*", "*.x_extract_program__*", "*.x__last_error_line__*"],
    ),
    "graders/registry.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/similarity.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
    "graders/text.py": (["tests/test_graders.py", "tests/test_graders_more.py"], None),
}

SKIP = "not trl and not with_a_generator"  # a -k expression over test names

STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 36: "timeout", -24: "timeout"}


def prepare(module: str, tests: list[str], work: Path) -> None:
    """A scratch copy of the repository whose pyproject tells mutmut what to mutate and which tests to run."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "examples", work / "examples")  # the graders' tests read the example configs
    write_config(module, tests, work)


def write_config(module: str, tests: list[str], work: Path) -> None:
    """The scratch copy's pyproject: the repository's, plus a `[tool.mutmut]` section for `module` and its tests."""
    present = [t for t in tests if (ROOT / t).exists()]
    selection = present + [f"src/reasonloop/{module}"]  # the module's doctests count as tests too
    config = {
        "source_paths": ["src"],
        "only_mutate": [f"src/reasonloop/{module}"],
        "pytest_add_cli_args_test_selection": selection,
        "also_copy": ["examples/"],
        # the trampolined copy holds every mutant as a function with the docstring: run the originals' doctests only;
        # and leave out the few slow tests (TRL's trainer: 15 s a mutant) that have fast hand-worked counterparts
        # and skip pytest's unraisable-exception check: its gc.collect() at every session end takes seconds once
        # torch is loaded, 15x the cost of a typical mutant's tests
        "pytest_add_cli_args": [
            "-p",
            "no:cacheprovider",
            "-p",
            "no:unraisableexception",
            "-q",
            "-k",
            "not mutmut and " + SKIP,
        ],
        "process_isolation": "forkserver",  # torch is imported by the tests: fork from a clean server
        "use_git_change_detection": False,
    }
    body = "\n".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in config.items())
    text = (ROOT / "pyproject.toml").read_text() + "\n[tool.mutmut]\n" + body + "\n"
    (work / "pyproject.toml").write_text(text)
    if (work / "mutants").exists():
        (work / "mutants" / "pyproject.toml").write_text(text)


def collect(work: Path, only: list[str] | None) -> dict:
    """Counts and survivors from mutmut's meta files."""
    import fnmatch

    counts: dict[str, int] = {}
    survivors: list[str] = []
    for meta in (work / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            if only and not any(fnmatch.fnmatch(name, g) for g in only):
                continue
            status = STATUS.get(code, "not checked" if code is None else f"exit {code}")
            counts[status] = counts.get(status, 0) + 1
            if status == "survived":
                survivors.append(name)
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)  # a mutant that hangs the tests is caught
    return {
        "killed": killed,
        "survived": counts.get("survived", 0),
        "total": total,
        "score": round(killed / total, 4) if total else None,
        "counts": counts,
        "survivors": sorted(survivors),
    }


def run_module(module: str, survivors: list[str] | None = None) -> dict:
    """Mutate `module` in a fresh scratch copy; with `survivors`, rerun only those mutants in the last run's copy
    (with the current tests), keeping the other verdicts."""
    tests, only = MODULES[module]
    work = OUT / "mutation" / module.replace("/", "_").removesuffix(".py")
    if survivors is None:
        prepare(module, tests, work)
    else:
        for t in tests:
            if (ROOT / t).exists():
                for dst in (work / t, work / "mutants" / t):
                    shutil.copy(ROOT / t, dst)
        # the other modules as they are now (the tests may rely on changes there); the mutated module's own
        # source must not have changed since the full run (rerun it in full if it has)
        for src in (ROOT / "src").rglob("*.py"):
            rel = src.relative_to(ROOT)
            if rel != Path("src/reasonloop") / module:
                for dst in (work / rel, work / "mutants" / rel):
                    shutil.copy(src, dst)
        write_config(module, tests, work)  # the test list may have grown
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)  # new tests: recollect who covers what
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/src first itself
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())", "run",
           "--max-children", "1", *(survivors or only or [])]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    (work / "mutmut.log").write_text(proc.stdout + proc.stderr)
    reap_orphans(work)
    result = collect(work, only)
    result.update(module=module, tests=tests, seconds=round(time.time() - t0), returncode=proc.returncode)
    return result


def reap_orphans(work: Path) -> None:
    """End the processes this run left behind: a mutant's test process exits without shutting down the worker pools
    its tests started (the math grader's), and their spawned workers outlive it. They are ours: their working
    directory is this run's scratch copy."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")).is_relative_to(work.resolve()):
                os.kill(int(entry.name), 15)
        except (OSError, ValueError):
            continue


def write_reports(results: dict[str, dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mutation.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    lines = ["| module | killed | survived | total | killed % |", "|---|---:|---:|---:|---:|"]
    for module, r in results.items():
        pct = f"{100 * r['score']:.1f}%" if r["score"] is not None else "-"
        lines.append(f"| `{module}` | {r['killed']} | {r['survived']} | {r['total']} | {pct} |")
    lines.append("")
    for module, r in results.items():
        if r["survivors"]:
            lines.append(f"- `{module}`: " + ", ".join(f"`{s}`" for s in r["survivors"]))
    (OUT / "mutation.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help="modules under src/reasonloop (default: all)")
    ap.add_argument("--survivors", action="store_true", help="rerun only the last run's survivors, with current tests")
    ap.add_argument("--list", action="store_true", help="print the modules and their tests, run nothing")
    args = ap.parse_args()
    if args.list:
        for m, (tests, only) in MODULES.items():
            print(f"{m}: {' '.join(tests)}" + (f"  (only {' '.join(only)})" if only else ""))
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    previous = json.loads((OUT / "mutation.json").read_text()) if (OUT / "mutation.json").exists() else {}
    results = {m: previous[m] for m in MODULES if m in previous}
    for module in args.modules or list(MODULES):
        if args.survivors and not results.get(module, {}).get("survivors"):
            continue
        r = run_module(module, results[module]["survivors"] if args.survivors else None)
        results[module] = r
        write_reports({m: results[m] for m in MODULES if m in results})
        pct = f"{100 * r['score']:.1f}%" if r["score"] is not None else "-"
        print(
            f"{module}: {r['killed']}/{r['total']} killed ({pct}), {r['survived']} survived, {r['seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
