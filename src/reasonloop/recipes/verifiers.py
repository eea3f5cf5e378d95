"""Train every kind of verifier from one generator's own samples, then compare them on the same held-out samples.

    reasonloop verifiers --run-dir runs/verifiers --set generator=runs/vstar-arith/star/checkpoints/round5

1. sample `samples` solutions per training problem from the generator, graded;
2. Monte-Carlo step values (`mc_k` rollouts per prefix) for one correct and one
   incorrect sample per problem (where it has them);
3. train the chosen `kinds`, each starting from the generator:
   - `orm`: every step labelled with the outcome; score = value after the last step;
   - `prm`: MC values (Math-Shepherd); score = the smallest step value;
   - `pav`: the PRM as Q_pi plus a best-of-`prover_k` prover head; step reward
     Q_pi + `alpha` * A_mu, score = the smallest (Setlur et al. 2024);
   - `bt`: Bradley-Terry on (correct, incorrect) pairs of the same problem;
   - `dpo`: the V-STaR DPO verifier on the same pairs;
   - `genrm`: the generative verifier, fine-tuned on verification texts (the
     world's worked solution as the rationale, then `Correct? Yes/No`) for the
     same samples; score = P(Yes) averaged over `genrm_votes` sampled verifications;
   - `genrm_cot`: GenRM-CoT with step checks: the rationale checks the sample
     step by step (the world's `verification_checks`), each step ending in
     `ok` / `wrong`; optionally mixed with the correct samples' solutions
     (`genrm_solutions`); score as `genrm`, step scores from the per-step verdicts;
4. sample `best_of` solutions per held-out problem and report, per verifier: AUROC
   of correct vs incorrect over all samples and within each problem, best-of-n
   for n = 1..N, weighted vote, and ProcessBench-style error-step F1 (threshold
   chosen on the first half of the held-out problems, applied to the second half;
   truth from the world's exact step labels).

Each trained verifier is saved in `RUN/<kind>/` with a manifest, so
`reasonloop search --verifier RUN/<kind>` can load it. Resumable: samples, MC
values and trained verifiers are reused on a rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import RunDir, atomic_write_json, atomic_write_text, bounded, defaults_of, split_steps, to_dict
from reasonloop.engine import HFEngine
from reasonloop.eval import best_of_n_curve, greedy_accuracy, majority_curve, save_line_plot
from reasonloop.eval.verifier_metrics import (
    auroc_or_none,
    auroc_within,
    best_threshold,
    error_step_f1,
    predicted_first_error,
)
from reasonloop.models import resolve_model
from reasonloop.recipes.common import BarFactory, no_bar, sample_to_file
from reasonloop.search import weighted_vote_pick
from reasonloop.tasks import get_task
from reasonloop.verifiers import (
    DpoVerifierConfig,
    GenRMConfig,
    ValueVerifierConfig,
    check_pairs,
    mc_step_values,
    orm_examples,
    pav_examples,
    preference_pairs,
    train_bt_verifier,
    train_dpo_verifier,
    train_genrm,
    train_value_verifier,
    verification_pairs,
)
from reasonloop.verifiers.registry import load_verifier, write_manifest

KINDS = ("orm", "prm", "pav", "bt", "dpo", "genrm", "genrm_cot")
NAMES = {
    "orm": "ORM", "prm": "PRM", "pav": "PAV", "bt": "Bradley-Terry", "dpo": "DPO (V-STaR)", "genrm": "GenRM",
    "genrm_cot": "GenRM-CoT (step checks)",
}  # fmt: skip


@dataclass(frozen=True)
class VerifiersConfig:
    """Which verifiers to train from which generator, and how they are compared."""

    generator: str = "nano"  # the model that writes solutions; every verifier starts from it
    task: str = "arith"  # a world with exact step checks, with options: arith, countdown:n_numbers=3
    kinds: str = "orm,prm,pav,bt,dpo,genrm"  # comma-separated subset of orm, prm, pav, bt, dpo, genrm, genrm_cot
    n_train: int = bounded(500, ge=1)  # training problems (train split)
    samples: int = bounded(4, ge=1)  # solutions sampled per training problem
    mc_k: int = bounded(8, ge=1)  # rollouts per step prefix for the PRM / PAV labels
    mc_all: bool = False  # MC-label every training sample (default: one correct and one incorrect per problem)
    prover_k: int = bounded(4, ge=1)  # the PAV prover is best-of-k of the generator
    alpha: float = bounded(1.0, ge=0)  # PAV: weight of the prover's advantage
    genrm_votes: int = bounded(4, ge=1)  # GenRM: sampled verifications averaged per score
    genrm_solutions: bool = False  # GenRM-CoT: also train on the correct samples' solutions (the paper's mix)
    epochs: float = bounded(6.0, gt=0)  # passes over each verifier's data
    lr: float = bounded(1e-3, gt=0)  # value-head verifiers' learning rate
    batch_size: int = bounded(32, ge=1)  # examples (or pairs) per optimiser step
    n_eval: int = bounded(200, ge=1)  # held-out problems (test split)
    best_of: int = bounded(16, ge=1)  # N: samples per held-out problem
    temperature: float = bounded(1.0, ge=0)  # sampling temperature (training and held-out samples, rollouts)
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per solution
    seed: int = bounded(0, ge=0)  # problems, sampling and training

    def __post_init__(self) -> None:
        bad = [k for k in self.kind_list if k not in KINDS]
        if bad or not self.kind_list:
            raise ValueError(f"kinds must be a comma-separated subset of {', '.join(KINDS)}; got {self.kinds!r}")

    @property
    def kind_list(self) -> list[str]:
        return [k.strip() for k in self.kinds.split(",") if k.strip()]


def train_verifiers(
    cfg: VerifiersConfig, run: RunDir, engine: HFEngine, task, bar: BarFactory = no_bar, log=print
) -> dict[str, Path]:
    """Steps 1-3 of the module docstring (`engine` serves `cfg.generator`); each kind's directory, with its manifest."""
    gen = resolve_model(cfg.generator)
    train = task.problems("train", cfg.n_train, seed=cfg.seed + 100)
    kw = dict(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, bar=bar)
    samples = sample_to_file(
        run, "train", engine, task, train, lambda p: p.prompt, cfg.samples, seed=cfg.seed + 1, **kw
    )
    by_id = {p.id: p for p in train}
    kinds = cfg.kind_list
    vcfg = ValueVerifierConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    out: dict[str, Path] = {}
    if {"prm", "pav"} & set(kinds):
        chosen, seen = [], set()
        for s in samples:  # one correct and one incorrect sample per problem, where it has them (or all)
            if s.steps and (cfg.mc_all or (s.problem_id, s.reward == 1.0) not in seen):
                seen.add((s.problem_id, s.reward == 1.0))
                chosen.append((by_id[s.problem_id], s.steps))
        mc_file = run.path / "mc_values.json"
        if mc_file.exists():  # written atomically: whole or absent
            values = json.loads(mc_file.read_text())
        else:
            log(f"Monte-Carlo step values: {len(chosen)} solutions, {cfg.mc_k} rollouts per prefix")
            values = mc_step_values(
                engine, task.grade, chosen, cfg.mc_k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                seed=cfg.seed + 2, delimiter=task.step_delimiter,
            )  # fmt: skip
            atomic_write_json(mc_file, values)
        prm_ex, prover_ex = pav_examples(chosen, values, k=cfg.prover_k)
        log("training the PRM")
        prm_dir = train_value_verifier(gen, prm_ex, run.path / "prm", vcfg, task.step_delimiter)
        write_manifest(run.path / "prm", kind="value", model="verifier", aggregate="min")
        if "prm" in kinds:
            out["prm"] = run.path / "prm"
        if "pav" in kinds:
            log("training the PAV prover head")
            train_value_verifier(gen, prover_ex, run.path / "pav", vcfg, task.step_delimiter)
            write_manifest(
                run.path / "pav", kind="pav", value=Path("..") / "prm" / prm_dir.name, prover="verifier",
                alpha=cfg.alpha, aggregate="min",
            )  # fmt: skip
            out["pav"] = run.path / "pav"
    if "orm" in kinds:
        log("training the ORM")
        train_value_verifier(gen, orm_examples(train, samples, task.step_delimiter), run.path / "orm", vcfg)
        write_manifest(run.path / "orm", kind="value", model="verifier", aggregate="last")
        out["orm"] = run.path / "orm"
    pairs = preference_pairs(train, samples, 4, cfg.seed)
    gcfg = GenRMConfig(epochs=min(cfg.epochs, 3.0), batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    if "bt" in kinds:
        log(f"training the Bradley-Terry model on {len(pairs)} pairs")
        split = [(p, split_steps(a, task.step_delimiter), split_steps(b, task.step_delimiter)) for p, a, b in pairs]
        train_bt_verifier(gen, split, run.path / "bt", vcfg, task.step_delimiter)
        write_manifest(run.path / "bt", kind="value", model="verifier", aggregate="last")
        out["bt"] = run.path / "bt"
    if "dpo" in kinds:
        log(f"training the DPO verifier on {len(pairs)} pairs")
        dcfg = DpoVerifierConfig(epochs=min(cfg.epochs, 2.0), batch_size=16, seed=cfg.seed)
        policy = train_dpo_verifier(gen, pairs, run.path / "dpo", dcfg)
        write_manifest(run.path / "dpo", kind="dpo", policy=policy.name, reference=gen.resolve(), aggregate="sum")
        out["dpo"] = run.path / "dpo"
    if "genrm" in kinds:
        if any("solution" not in p.meta for p in train):
            raise ValueError(f"genrm needs worked solutions for the rationales; task {cfg.task!r} has none")
        texts = verification_pairs(train, samples, lambda p: p.meta["solution"])
        log(f"training GenRM on {len(texts)} verification texts")
        train_genrm(gen, texts, run.path / "genrm", gcfg)
        write_manifest(run.path / "genrm", kind="genrm", model="verifier", votes=cfg.genrm_votes, aggregate="last")
        out["genrm"] = run.path / "genrm"
    if "genrm_cot" in kinds:
        checks = getattr(task, "verification_checks", None)  # only the built-in worlds have exact step checkers
        if checks is None:
            raise ValueError(f"genrm_cot needs a world with step checks (arith, countdown), not {cfg.task!r}")
        texts = check_pairs(train, samples, checks, task.step_delimiter)
        # the longest training rationale, twice over: room for the verification of any held-out sample
        budget = 2 * max(len(engine.tokenizer(c, add_special_tokens=False)["input_ids"]) for _, c in texts)
        if cfg.genrm_solutions:
            texts += [(by_id[s.problem_id].prompt, s.text) for s in samples if s.reward == 1.0]
        log(f"training GenRM-CoT on {len(texts)} texts")
        # its rationales are several times longer than the re-solving ones: it trains for all `epochs`
        ccfg = GenRMConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
        train_genrm(gen, texts, run.path / "genrm_cot", ccfg)
        write_manifest(
            run.path / "genrm_cot", kind="genrm", model="verifier", votes=cfg.genrm_votes, aggregate="last",
            checks=True, max_new_tokens=budget,
        )  # fmt: skip
        out["genrm_cot"] = run.path / "genrm_cot"
    return {k: out[k] for k in kinds}


def run_verifiers(cfg: VerifiersConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Train the verifiers, compare them on held-out samples, write `results.json`, `report.md` and a plot."""
    run = RunDir(run_dir)
    run.save_config(to_dict(cfg), defaults_of(type(cfg)))
    task = get_task(cfg.task)
    engine = HFEngine.from_pretrained(resolve_model(cfg.generator))
    dirs = train_verifiers(cfg, run, engine, task, bar, log)
    test = task.problems("test", cfg.n_eval, seed=cfg.seed)
    N = cfg.best_of
    held = sample_to_file(
        run, "heldout", engine, task, test, lambda p: p.prompt, N, temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 3, bar=bar,
    )  # fmt: skip
    steps = [s.steps or [""] for s in held]
    labels = [int(s.reward == 1.0) for s in held]
    truth = [task.first_error(test[i // N], st) for i, st in enumerate(steps)]
    results: dict[str, Any] = {}
    for kind, d in dirs.items():
        log(f"scoring {len(held)} held-out samples with the {NAMES[kind]}")
        results[kind] = evaluate_verifier(load_verifier(d), test, held, steps, labels, truth, N)
    res = {
        "greedy_accuracy": greedy_accuracy(engine, task.grade, test, cfg.max_new_tokens),
        "pass@1": sum(labels) / len(labels),
        "majority_vote": majority_curve(test, held, N),
        "verifiers": results,
    }
    atomic_write_json(run.path / "results.json", res)
    _report(run, cfg, res)
    return res


def evaluate_verifier(verifier, test, held, steps, labels, truth, N: int) -> dict[str, Any]:
    """AUROC (all samples; within each problem), best-of-n, weighted vote and error-step F1 of one verifier."""
    prompts = [p.prompt for p in test for _ in range(N)]
    step_scores = verifier.step_scores_many(prompts, steps)
    scores = verifier.score_many(prompts, steps)
    best = best_of_n_curve(test, held, scores, N)
    picks = [
        weighted_vote_pick([s.answer for s in held[i * N : (i + 1) * N]], scores[i * N : (i + 1) * N])
        for i in range(len(test))
    ]
    vote = sum(held[i * N + j].reward or 0.0 for i, j in enumerate(picks)) / len(test)  # the picked sample's grade
    # ProcessBench: the "correct" class is right answers whose steps are all right; threshold on the first half
    keep = [j for j in range(len(held)) if truth[j] is not None or labels[j] == 1]
    half = len(held) // 2
    cal, ev = [j for j in keep if j < half], [j for j in keep if j >= half]
    has_both = {truth[j] is None for j in cal} == {True, False}
    if has_both:
        thr = best_threshold([step_scores[j] for j in cal], [truth[j] for j in cal])
        f1 = error_step_f1([predicted_first_error(step_scores[j], thr) for j in ev], [truth[j] for j in ev])
    return {
        "auroc": auroc_or_none(scores, labels),
        "auroc_within_problem": auroc_within(scores, labels, N),
        "best_of_n": best,
        f"weighted_vote@{N}": vote,
        "error_step": {**f1, "threshold": thr} if has_both else None,  # None: a class is missing
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _report(run: RunDir, cfg: VerifiersConfig, res: dict[str, Any]) -> None:
    N = cfg.best_of
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= N]
    series = {"majority vote": [100 * a for a in res["majority_vote"]]}
    series.update({f"best-of-n, {NAMES[k]}": [100 * a for a in r["best_of_n"]] for k, r in res["verifiers"].items()})
    save_line_plot(
        run.path / "plots" / "best_of_n.png", list(range(1, N + 1)), series, xlabel="samples per problem (n)",
        ylabel="held-out accuracy (%)", title=f"verifiers on {cfg.task}", hlines={"greedy": 100 * res["greedy_accuracy"]},
    )  # fmt: skip
    lines = [
        f"# Verifiers on `{cfg.task}`",
        "",
        f"Generator `{cfg.generator}` (greedy {_pct(res['greedy_accuracy'])}, pass@1 {_pct(res['pass@1'])}); "
        f"{cfg.n_train} training problems x {cfg.samples} samples; {cfg.n_eval} held-out problems x {N} samples.",
        "",
        "| selection | AUROC | AUROC within a problem | "
        + " | ".join(f"n={n}" for n in ns)
        + f" | weighted vote@{N} |",
        "|---|---|---|" + "---|" * len(ns) + "---|",
        "| majority vote | | | " + " | ".join(_pct(res["majority_vote"][n - 1]) for n in ns) + " | |",
    ]
    for k, r in res["verifiers"].items():
        a, w = r["auroc"], r["auroc_within_problem"]
        lines.append(
            f"| best-of-n, {NAMES[k]} | {'n/a' if a is None else f'{a:.3f}'} | {'n/a' if w is None else f'{w:.3f}'} | "
            + " | ".join(_pct(r["best_of_n"][n - 1]) for n in ns)
            + f" | {_pct(r[f'weighted_vote@{N}'])} |"
        )
    lines += [
        "",
        "![best-of-n](plots/best_of_n.png)",
        "",
        "Error-step identification (ProcessBench-style F1 of finding the first wrong step; threshold chosen on the "
        "first half of the held-out problems, measured on the second):",
        "",
        "| verifier | F1 | accuracy on erroneous solutions | on correct solutions | threshold |",
        "|---|---|---|---|---|",
    ]
    for k, r in res["verifiers"].items():
        e = r["error_step"]
        if e is None:
            lines.append(f"| {NAMES[k]} | n/a (the calibration half lacks right or wrong solutions) | | | |")
            continue
        lines.append(
            f"| {NAMES[k]} | {_pct(e['f1'])} | {_pct(e['error_accuracy'])} | {_pct(e['correct_accuracy'])} | "
            f"{e['threshold']:.3g} |"
        )
    atomic_write_text(run.path / "report.md", "\n".join(lines) + "\n")
