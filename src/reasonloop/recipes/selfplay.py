"""Self-play: a generator and a verifier improving together, round after round ("search is exploration, training
is memory"). Resumable at every stage.

    reasonloop selfplay --run-dir runs/selfplay --set task=countdown:n_numbers=3,number_max=9,target_max=100

Each round r, with generator G(r-1) and verifier V(r-1) (round 1: the base, no verifier):

1. **Search** on the training problems under a budget per problem (`search`, `budget`; the budget means what it
   means in `reasonloop.search.solve`). Sampling strategies (`best_of_n`, `weighted_vote`) draw `budget` samples per
   problem and V(r-1) scores them when the update reads the scores (`keep_order: verifier`); tree strategies
   (`beam`, `mcts`) are guided by V(r-1) and every complete solution they visit is kept. Round 1 has no verifier,
   so it samples (best-of-N needs no scores to explore). Everything search finds is graded by the world's grader
   (the training problems' answers are known).
2. **Generator memory** (`update`): `sft` is expert iteration: fine-tune on the verified traces, up to
   `keep_per_problem` distinct correct ones per problem, the verifier's favourites first (the grader says which
   are right, the verifier ranks them: a trace it scores low is more likely right by accident) or in sampling order
   (`keep_order: sampled`); `rl` runs `reasonloop rl` (GRPO) from G(r-1) for `rl_steps` steps, with V(r-1)'s
   value after each step as dense reward (`reward.process: prm`) when there is one.
3. **Verifier memory** (`verifier_memory`): `union` retrains the verifier every round on the graded traces of
   every round so far (V-STaR's recipe), so it sees the new generator's mistakes; `frozen` trains it once, in
   round 1, and keeps it. Each round adds up to `verifier_per_problem` graded traces per problem, right and wrong
   alternately; with `verifier_fresh: k`, k samples per problem from G(r) itself are offered first, so V(r) learns
   the mistakes of the generator it will judge. The verifier starts from G(r)'s weights (`verifier_init:
   generator`), the base's, or V(r-1)'s (`previous`). Kinds: `orm` (every step labelled with the outcome), `prm`
   (Monte-Carlo step values from G(r), `mc_k` rollouts per prefix), `bt` (Bradley-Terry on right/wrong pairs of
   one problem). With `verifier_check`, a step checker (the base fine-tuned once on the world's facts, in
   `RUN/checker`) stands beside V(r) and re-derives each step's `a op b=c` alone (`verifiers/check.py`).
4. **Measure** on held-out problems with G(r) and V(r): greedy accuracy, pass@1 and pass@N of N = `best_of`
   samples, majority vote, verifier best-of-n and weighted vote for n = 1..N, the verifier's AUROC (all samples,
   and within a problem) and error-step F1 (worlds with exact step checks), search accuracy at the two
   `eval_budgets`, and the tokens every stage spent (generator and verifier). From round 2 also V(r)'s
   within-problem AUROC on G(r-1)'s held-out samples: against V(r-1)'s on the same samples it says whether the
   verifier improved, against V(r)'s on G(r)'s whether the new generator's mistakes are harder to rank.

`report.md` has the per-round table for both players, three plots (generator, verifier, accuracy against n for the
last round) and the tokens. State lives in `RUN/state.json`; every stage writes its result atomically (or as a
resumable JSONL), so a killed run redoes at most the stage it was in, and never duplicates a trace.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.core import (
    JsonlWriter,
    Problem,
    RunDir,
    Sample,
    atomic_write_json,
    atomic_write_text,
    bounded,
    grade_sample,
    read_jsonl,
    repair_jsonl,
    split_steps,
)
from reasonloop.engine import HFEngine
from reasonloop.eval import auroc_within, greedy_accuracy, majority_curve, pass_at_k, save_line_plot
from reasonloop.models import load_model, save_model
from reasonloop.recipes.common import (
    BarFactory,
    finetune_and_save,
    no_bar,
    require_claims,
    sample_to_file,
    start_run,
    train_step_checker,
)
from reasonloop.recipes.verifiers import evaluate_verifier
from reasonloop.search import weighted_vote_pick
from reasonloop.search.solve import SAMPLING, solve
from reasonloop.tasks import get_task
from reasonloop.verifiers import (
    ValueVerifierConfig,
    mc_step_values,
    orm_examples,
    preference_pairs,
    prm_examples,
    train_bt_verifier,
    train_value_verifier,
)
from reasonloop.verifiers.registry import load_verifier, write_manifest

SEARCHES = ("best_of_n", "weighted_vote", "beam", "mcts")
UPDATES = ("sft", "rl", "step_dpo")
VERIFIER_KINDS = ("orm", "prm", "bt")
MEMORIES = ("union", "frozen")


@dataclass(frozen=True)
class SelfPlayConfig:
    """One self-play run: the search, the two players' updates, and how each round is measured."""

    model: str = "nano"  # the base generator (a model directory, or "nano")
    task: str = "countdown:n_numbers=3,number_max=9,target_max=100"  # a built-in world, with options
    n_train: int = bounded(1000, ge=1)  # training problems (train split), searched every round
    n_eval: int = bounded(200, ge=1)  # held-out problems (test split)
    rounds: int = bounded(3, ge=1)  # self-play rounds
    search: str = "best_of_n"  # best_of_n, weighted_vote, beam or mcts on the training problems
    budget: int = bounded(16, ge=1)  # search budget per training problem (samples for best_of_n)
    update: str = "sft"  # the generator's update: sft (expert iteration), rl (GRPO, verifier step rewards) or step_dpo
    keep_per_problem: int = bounded(4, ge=1)  # sft: distinct correct traces kept per problem
    keep_order: str = "verifier"  # sft: which correct traces first: the "verifier"'s favourites, or as "sampled"
    continue_training: bool = True  # sft: fine-tune the last round's generator (false: the base, on this round's)
    epochs: float = bounded(3.0, gt=0)  # sft: passes over the round's traces
    lr: float = bounded(1e-3, gt=0)  # sft: peak learning rate
    batch_size: int = bounded(32, ge=1)  # sft: sequences per optimiser step
    rl_steps: int = bounded(20, ge=1)  # rl: GRPO steps per round (16 problems x 8 samples each)
    rl_lr: float = bounded(1e-4, gt=0)  # rl: learning rate
    verifier: str = "orm"  # orm, prm or bt
    verifier_memory: str = "union"  # union: retrain on every round's traces; frozen: train in round 1 only
    verifier_init: str = "generator"  # start V(r) from this round's "generator", the "base", or V(r-1) ("previous")
    verifier_per_problem: int = bounded(4, ge=2)  # graded traces per problem per round added to the verifier's data
    verifier_fresh: int = bounded(0, ge=0)  # samples per training problem from G(r) offered to V(r)'s data first
    verifier_epochs: float = bounded(3.0, gt=0)  # passes over the verifier's data
    verifier_lr: float = bounded(1e-3, gt=0)  # verifier learning rate
    # V(r) also re-derives each step's claim (`a op b=c`) with a step checker, the base fine-tuned once on
    # `check_facts` of the world's facts; V(r)'s log-odds plus `check_weight` x the least likely claim
    # (verifiers/check.py)
    verifier_check: bool = False
    check_facts: int = bounded(50_000, ge=1)
    check_weight: float = bounded(1.0, ge=0)
    mc_k: int = bounded(4, ge=1)  # prm: rollouts per step prefix for the step labels
    best_of: int = bounded(16, ge=1)  # N: samples per held-out problem for pass@N, vote and best-of-n
    eval_budgets: str = "4,16"  # two search budgets measured on the held-out problems every round
    temperature: float = bounded(1.0, ge=0)  # sampling temperature (search, held-out samples, rollouts)
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per solution
    max_batch: int = bounded(256, ge=1)  # engine rows in flight
    seed: int = bounded(0, ge=0)  # problems, sampling and training derive from this
    metrics_sinks: tuple[str, ...] = ()  # also send metrics.jsonl records to: "tensorboard", "wandb" (core.sinks)

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("search", self.search, SEARCHES),
            ("update", self.update, UPDATES),
            ("verifier", self.verifier, VERIFIER_KINDS),
            ("verifier_memory", self.verifier_memory, MEMORIES),
            ("verifier_init", self.verifier_init, ("generator", "base", "previous")),
            ("keep_order", self.keep_order, ("verifier", "sampled")),
        ):
            if value not in allowed:
                raise ValueError(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")
        budgets = self.budget_list
        if len(budgets) != 2 or any(b < 1 for b in budgets):
            raise ValueError(f"eval_budgets: expected two positive integers such as '4,16', got {self.eval_budgets!r}")
        if self.verifier_check and self.update == "rl" and self.verifier != "bt":
            raise ValueError(
                "verifier_check: update rl reads V(r)'s value after each step as a dense reward, which "
                "the step checker does not give; use verifier: bt or verifier_check: false"
            )
        if self.update == "step_dpo" and self.search not in SAMPLING:
            raise ValueError(f"update: step_dpo learns from sampled token ids; search {self.search} keeps texts only "
                             "(use best_of_n or weighted_vote)")  # fmt: skip
        if self.search in SAMPLING and max(budgets) > self.best_of:
            raise ValueError(f"eval_budgets: {self.search} at {max(budgets)} needs best_of >= {max(budgets)}")

    @property
    def budget_list(self) -> list[int]:
        try:
            return [int(b) for b in self.eval_budgets.split(",")]
        except ValueError:
            return []


def kept_traces(samples: list[Sample], keep: int, by_verifier: bool = True) -> list[tuple[str, str]]:
    """(problem id, trace): up to `keep` distinct correct traces per problem, the highest `meta["verifier_score"]`
    first (sampling order among equal scores, without a verifier, and with `by_verifier=False`).

    >>> ss = [Sample("a", "x", reward=1.0, meta={"verifier_score": 0.2}), Sample("a", "y", reward=0.0),
    ...       Sample("a", "z", reward=1.0, meta={"verifier_score": 0.9}), Sample("b", "w", reward=1.0)]
    >>> kept_traces(ss, 1), kept_traces(ss, 1, by_verifier=False)
    ([('a', 'z'), ('b', 'w')], [('a', 'x'), ('b', 'w')])
    """
    by_problem: dict[str, list[tuple[int, Sample]]] = {}
    for i, s in enumerate(samples):
        if s.reward == 1.0:
            by_problem.setdefault(s.problem_id, []).append((i, s))
    out = []
    for pid, found in by_problem.items():
        if by_verifier:
            found.sort(key=lambda t: (-(t[1].meta.get("verifier_score") or 0.0), t[0]))
        out += [(pid, t) for t in list(dict.fromkeys(s.text for _, s in found))[:keep]]
    return out


def verifier_data(samples: list[Sample], per_problem: int) -> list[Sample]:
    """Up to `per_problem` graded traces per problem with distinct texts, right and wrong alternately (right first),
    then whichever side has more.

    >>> ss = [Sample("a", t, reward=r) for t, r in [("w1", 0.0), ("r1", 1.0), ("w1", 0.0), ("w2", 0.0), ("r2", 1.0)]]
    >>> [s.text for s in verifier_data(ss, 3)]
    ['r1', 'w1', 'r2']
    """
    sides: dict[str, tuple[list[Sample], list[Sample]]] = {}
    for s in samples:
        good, bad = sides.setdefault(s.problem_id, ([], []))
        side = good if s.reward == 1.0 else bad
        if all(t.text != s.text for t in side):
            side.append(s)
    out = []
    for good, bad in sides.values():
        mixed = [s for pair in zip(good, bad) for s in pair]
        out += (mixed + good[len(bad) :] + bad[len(good) :])[:per_problem]
    return out


class SelfPlay:
    """The run's state and its stages; `run_selfplay` plays the rounds."""

    def __init__(self, cfg: SelfPlayConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print):
        self.cfg, self.bar, self.log = cfg, bar, log
        if cfg.verifier_check:  # before the run directory exists
            require_claims(get_task(cfg.task))
        self.run, self.task, self.train, self.test, self.by_id, self.base = start_run(cfg, run_dir)
        self.truth_fn = getattr(self.task, "first_error", None)

    # -- the players --------------------------------------------------------------------------------------------
    def generator_dir(self, r: int) -> Path:
        return self.base if r == 0 else self.run.checkpoint(f"round{r}")

    def verifier_dir(self, r: int) -> Path | None:
        """V(r): the verifier after round r (None before round 1)."""
        if r == 0:
            return None
        if self.cfg.verifier_memory == "frozen":
            r = 1
        return self.run.path / f"round{r}" / "verifier"

    def engine(self, r: int) -> HFEngine:
        return HFEngine.from_pretrained(self.generator_dir(r), max_batch=self.cfg.max_batch)

    # -- 1. search ----------------------------------------------------------------------------------------------
    @property
    def search_reads_verifier(self) -> bool:
        """Whether the search stage needs V(r-1): tree strategies are guided by it; sampled traces are only scored
        for expert iteration's `keep_order: verifier` (nothing else reads the scores, so no tokens are spent)."""
        cfg = self.cfg
        return cfg.search not in SAMPLING or (cfg.update == "sft" and cfg.keep_order == "verifier")

    def search(self, r: int) -> tuple[list[Sample], dict[str, int]]:
        """Every graded trace search found on the training problems in round r, and the tokens it spent."""
        cfg = self.cfg
        engine, vdir = self.engine(r - 1), self.verifier_dir(r - 1)
        verifier = load_verifier(vdir) if vdir is not None and self.search_reads_verifier else None
        if cfg.search in SAMPLING or verifier is None:
            samples = sample_to_file(
                self.run, f"round{r}-search", engine, self.task, self.train, lambda p: p.prompt, cfg.budget,
                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + r, bar=self.bar,
            )  # fmt: skip
            scores, read = self._scores(r, verifier, samples)
            for s, v in zip(samples, scores):
                s.meta["verifier_score"] = v
            return samples, {"generator": sum(len(s.token_ids) for s in samples), "verifier": read}
        return self._tree_search(r, engine, verifier)

    def _scores(self, r: int, verifier, samples: list[Sample]) -> tuple[list[float | None], int]:
        """V(r-1)'s score of every search sample, and the tokens it read (cached in `RUN/roundr/search_scores.json`)."""
        if verifier is None:
            return [None] * len(samples), 0
        path = self.run.path / f"round{r}" / "search_scores.json"
        if not path.exists():  # written atomically: whole or absent
            self.log(f"round {r}: the verifier scores {len(samples)} search traces")
            before = verifier.tokens_scored
            scores = verifier.score_many(
                [self.by_id[s.problem_id].prompt for s in samples], [s.steps or [""] for s in samples]
            )
            atomic_write_json(path, {"scores": scores, "tokens": verifier.tokens_scored - before})
        cached = json.loads(path.read_text())
        return cached["scores"], cached["tokens"]

    def _tree_search(self, r: int, engine: HFEngine, verifier) -> tuple[list[Sample], dict[str, int]]:
        """`solve` with a tree strategy per training problem; one JSONL line per problem (resumable)."""
        cfg = self.cfg
        path = self.run.samples_path(f"round{r}-search")
        done: dict[str, dict[str, Any]] = {}
        if path.exists():
            repair_jsonl(path)
            done = {rec["problem_id"]: rec for rec in read_jsonl(path)}
        todo = [p for p in self.train if p.id not in done]
        if todo:
            with self.bar(len(todo), f"round {r}: {cfg.search} search") as advance, JsonlWriter(path) as w:
                for p in todo:
                    out = solve(
                        p, self.task, engine, verifier, cfg.search, cfg.budget, temperature=cfg.temperature,
                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + r * 10_007 + self.train.index(p),
                    )  # fmt: skip
                    texts = list(dict.fromkeys([out.text] + [k[0] for k in out.kept]))
                    rec = {"problem_id": p.id, "texts": texts, "generator_tokens": out.generator_tokens,
                           "verifier_tokens": out.verifier_tokens}  # fmt: skip
                    w.write(rec)
                    done[p.id] = rec
                    advance(1)
        samples = []
        for p in self.train:
            for text in done[p.id]["texts"]:
                s = grade_sample(self.task.grade, p, Sample(p.id, text), self.task.step_delimiter)
                if self.task.extract_answer(text) is not None:  # a complete solution, not a partial path
                    samples.append(s)
        recs = [done[p.id] for p in self.train]
        tokens = {k: sum(rec[f"{k}_tokens"] for rec in recs) for k in ("generator", "verifier")}
        return samples, tokens

    # -- 2. generator memory ------------------------------------------------------------------------------------
    def update_generator(self, r: int, samples: list[Sample]) -> dict[str, Any]:
        cfg = self.cfg
        ckpt = self.run.checkpoint(f"round{r}")
        if cfg.update == "rl":
            return self._rl_update(r, ckpt)
        if cfg.update == "step_dpo":
            return self._step_dpo_update(r, samples, ckpt)
        pairs = [
            (self.by_id[pid].prompt, t)
            for pid, t in kept_traces(samples, cfg.keep_per_problem, cfg.keep_order == "verifier")
        ]
        start = self.generator_dir(r - 1) if cfg.continue_training else self.base
        if not pairs and not (ckpt / "config.json").exists():
            self.log(f"round {r}: search found no correct trace; the generator is carried over unchanged")
            save_model(*load_model(start), ckpt)
        self.log(f"round {r}: fine-tuning the generator on {len(pairs)} verified traces")
        finetune_and_save(
            start, pairs, ckpt, self.run.checkpoint(f"round{r}-train"), epochs=cfg.epochs,
            batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed + r, bar=self.bar,
        )  # fmt: skip
        return {"traces_kept": len(pairs), "problems_kept": len({p for p, _ in pairs})}

    def _rl_update(self, r: int, ckpt: Path) -> dict[str, Any]:
        from reasonloop.recipes.rl import RewardConfig, RLConfig, run_rl

        cfg = self.cfg
        vdir = self.verifier_dir(r - 1)
        reward = RewardConfig(process="prm", verifier=str(vdir)) if vdir is not None and cfg.verifier != "bt" else None
        rl_cfg = RLConfig(
            model=str(self.generator_dir(r - 1)), task=cfg.task, n_train=cfg.n_train, n_eval=min(cfg.n_eval, 50),
            steps=cfg.rl_steps, lr=cfg.rl_lr, max_new_tokens=cfg.max_new_tokens, eval_every=0, seed=cfg.seed + r,
            **({"reward": reward} if reward is not None else {}),
        )  # fmt: skip
        res = run_rl(rl_cfg, self.run.path / f"round{r}" / "rl", bar=self.bar, log=self.log)
        if not (ckpt / "config.json").exists():
            save_model(*load_model(res["model"]), ckpt)
        last = res["records"][-1]
        return {"rl_reward_last": last.get("reward_mean"), "tokens_rl": last.get("tokens_sampled", 0),
                "tokens_rl_verifier": last.get("tokens_verifier", 0)}  # fmt: skip

    def _step_dpo_update(self, r: int, samples: list[Sample], ckpt: Path) -> dict[str, Any]:
        """Per-step DPO (`reasonloop step-dpo`'s update, its defaults with `mc_k` rollouts per prefix) on the
        round's search samples, from G(r-1); resumable in `RUN/roundr/step_dpo`."""
        from reasonloop.recipes.step_dpo import StepDpoUpdateConfig, step_dpo_update

        cfg = self.cfg
        res = step_dpo_update(
            self.generator_dir(r - 1), self.train, samples, self.task, self.run.path / f"round{r}" / "step_dpo",
            StepDpoUpdateConfig(mc_k=cfg.mc_k), temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
            max_batch=cfg.max_batch, seed=cfg.seed + r, bar=self.bar, log=self.log,
        )  # fmt: skip
        if not (ckpt / "config.json").exists():
            save_model(*load_model(res["model"]), ckpt)
        return {"step_dpo_examples": res["examples"], "step_dpo_negative_pairs": res.get("negative_pairs", 0)}

    # -- 3. verifier memory -------------------------------------------------------------------------------------
    def update_verifier(self, r: int, samples: list[Sample]) -> dict[str, Any]:
        """Train V(r) on the union of the rounds' verifier data (`frozen`: only in round 1); its directory has a
        manifest once it is whole."""
        cfg = self.cfg
        data_file = self.run.path / f"round{r}" / "verifier_data.json"
        vdir = self.verifier_dir(r)
        trained = vdir.parent.name == f"round{r}"
        fresh: list[Sample] = []
        if cfg.verifier_fresh and trained:  # the new generator's own traces, so V(r) sees the mistakes G(r) makes
            fresh = sample_to_file(
                self.run, f"round{r}-fresh", self.engine(r), self.task, self.train, lambda p: p.prompt,
                cfg.verifier_fresh, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + r,
                bar=self.bar,
            )  # fmt: skip
        if not data_file.exists():
            chosen = verifier_data(fresh + samples, cfg.verifier_per_problem)
            atomic_write_json(data_file, [s.to_dict() for s in chosen])
        data = self.union(r)
        info: dict[str, Any] = {"verifier_examples": len(data), "verifier_trained": trained,
                                "tokens_fresh": sum(len(s.token_ids) for s in fresh)}  # fmt: skip
        if not info["verifier_trained"] or (vdir / "reasonloop_verifier.json").exists():
            return info
        start = self.base if cfg.verifier_init == "base" else self.generator_dir(r)
        if cfg.verifier_init == "previous" and r > 1:  # round 1 has no V(0): "previous" starts from the generator
            start = self.verifier_dir(r - 1) / "verifier"  # the value model `write_manifest` names below
        vcfg = ValueVerifierConfig(epochs=cfg.verifier_epochs, batch_size=32, lr=cfg.verifier_lr, seed=cfg.seed + r)
        delim = self.task.step_delimiter
        self.log(f"round {r}: training the {cfg.verifier.upper()} on {len(data)} traces of rounds 1..{r}")
        if cfg.verifier == "orm":
            train_value_verifier(start, orm_examples(self.train, data, delim), vdir, vcfg, delim)
        elif cfg.verifier == "bt":
            pairs = preference_pairs(self.train, data, cfg.verifier_per_problem, cfg.seed + r)
            train_bt_verifier(start, [(p, split_steps(a, delim), split_steps(b, delim)) for p, a, b in pairs], vdir,
                              vcfg, delim)  # fmt: skip
        else:
            train_value_verifier(start, prm_examples(*self._mc_values(r)), vdir, vcfg, delim)
        aggregate = "min" if cfg.verifier == "prm" else "last"
        if cfg.verifier_check:
            checker = self.step_checker()
            write_manifest(vdir, kind="checked", model="verifier", aggregate=aggregate,
                           checker=os.path.relpath(checker, vdir), weight=cfg.check_weight)  # fmt: skip
        else:
            write_manifest(vdir, kind="value", model="verifier", aggregate=aggregate)
        return info

    def step_checker(self) -> Path:
        """The step checker (`verifier_check`): the base fine-tuned once on `check_facts` of the world's facts,
        in `RUN/checker` (resumable)."""
        out = self.run.path / "checker"
        if not (out / "config.json").exists():
            self.log(f"training the step checker on {self.cfg.check_facts} of the world's facts")
        train_step_checker(self.base, self.task, out, self.run.path / "checker-train", self.cfg.check_facts,
                           seed=self.cfg.seed, bar=self.bar)  # fmt: skip
        return out

    def _round_data(self, k: int) -> list[Sample]:
        return [
            Sample.from_dict(d) for d in json.loads((self.run.path / f"round{k}" / "verifier_data.json").read_text())
        ]

    def union(self, r: int) -> list[Sample]:
        """The verifier's data after round r: every round's chosen traces (`union`) or round 1's (`frozen`)."""
        return [
            s for k in range(1, (1 if self.cfg.verifier_memory == "frozen" else r) + 1) for s in self._round_data(k)
        ]

    def _mc_values(self, r: int) -> tuple[list[tuple[Problem, list[str]]], list[list[float]]]:
        """PRM labels for the union: Monte-Carlo step values of each round's traces under that round's generator
        G(k), cached per round (`RUN/roundk/mc_values.json`, with the rollout tokens), so each is labelled once."""
        items_all, values_all = [], []
        for k in range(1, (1 if self.cfg.verifier_memory == "frozen" else r) + 1):
            items = [(self.by_id[s.problem_id], s.steps) for s in self._round_data(k) if s.steps]
            items_all += items
            values_all += self.mc_file(k, items)["values"]
        return items_all, values_all

    def mc_file(self, k: int, items: list[tuple[Problem, list[str]]] | None = None) -> dict[str, Any]:
        path = self.run.path / f"round{k}" / "mc_values.json"
        if not path.exists():
            if items is None:
                return {"values": [], "tokens": 0}
            engine = self.engine(k)
            self.log(f"round {k}: Monte-Carlo step values, {len(items)} traces x {self.cfg.mc_k} rollouts per prefix")
            values = mc_step_values(
                engine, self.task.grade, items, self.cfg.mc_k, delimiter=self.task.step_delimiter,
                temperature=self.cfg.temperature, max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed + k,
            )  # fmt: skip
            atomic_write_json(path, {"values": values, "tokens": engine.counts.generated})
        return json.loads(path.read_text())

    # -- 4. measure ---------------------------------------------------------------------------------------------
    def measure(self, r: int) -> dict[str, Any]:
        """G(r) and V(r) on the held-out problems (round 0: the base alone)."""
        cfg, N, test = self.cfg, self.cfg.best_of, self.test
        engine = self.engine(r)
        held = sample_to_file(
            self.run, f"round{r}-heldout", engine, self.task, test, lambda p: p.prompt, N,
            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, bar=self.bar,
        )  # fmt: skip
        labels = [int(s.reward == 1.0) for s in held]
        correct = [sum(labels[i * N : (i + 1) * N]) for i in range(len(test))]
        rec: dict[str, Any] = {
            "round": r,
            "greedy": greedy_accuracy(engine, self.task.grade, test, cfg.max_new_tokens),
            "pass@1": sum(pass_at_k(N, c, 1) for c in correct) / len(test),
            f"pass@{N}": sum(pass_at_k(N, c, N) for c in correct) / len(test),
            "majority_curve": majority_curve(test, held, N),
            "tokens_heldout": sum(len(s.token_ids) for s in held),
        }
        vdir = self.verifier_dir(r)
        if vdir is None:
            return rec
        verifier = load_verifier(vdir)
        steps = [s.steps or [""] for s in held]
        truth = [self.truth_fn(test[i // N], st) if self.truth_fn else None for i, st in enumerate(steps)]
        ev = evaluate_verifier(verifier, test, held, steps, labels, truth, N)
        rec.update(
            verifier_curve=ev["best_of_n"], weighted_vote=ev[f"weighted_vote@{N}"], auroc=ev["auroc"],
            auroc_within=ev["auroc_within_problem"], error_f1=(ev["error_step"] or {}).get("f1"),
        )  # fmt: skip
        if r >= 2:  # V(r) on G(r-1)'s samples: did the verifier improve, or did the generator's samples get harder?
            rec["auroc_within_previous"] = self.auroc_within_on(verifier, r - 1)
        rec["search"] = self._search_at_budgets(r, engine, verifier, held, ev)
        return rec

    def auroc_within_on(self, verifier, r: int) -> float | None:
        """`verifier`'s within-problem AUROC on G(r)'s held-out samples."""
        held, N = self.heldout(r), self.cfg.best_of
        scores = verifier.score_many(
            [self.test[i // N].prompt for i in range(len(held))], [s.steps or [""] for s in held]
        )
        return auroc_within(scores, [int(s.reward == 1.0) for s in held], N)

    def heldout(self, r: int) -> list[Sample]:
        """G(r)'s held-out samples as round r measured them: `best_of` per problem, in the test problems' order."""
        by_problem: dict[str, list[Sample]] = {}
        for rec in read_jsonl(self.run.samples_path(f"round{r}-heldout")):
            s = Sample.from_dict(rec)
            by_problem.setdefault(s.problem_id, []).append(s)
        return [
            s
            for p in self.test
            for s in sorted(by_problem[p.id], key=lambda s: s.meta["sample_index"])[: self.cfg.best_of]
        ]

    def _search_at_budgets(self, r: int, engine, verifier, held: list[Sample], ev: dict) -> dict[str, Any]:
        """Held-out accuracy and tokens per problem of the round's search strategy at the two `eval_budgets`."""
        cfg, N, test = self.cfg, self.cfg.best_of, self.test
        out: dict[str, Any] = {}
        for b in cfg.budget_list:
            if cfg.search in SAMPLING:
                first = [held[i * N : i * N + b] for i in range(len(test))]
                if cfg.search == "best_of_n":
                    acc = ev["best_of_n"][b - 1]
                else:
                    scores = verifier.score_many([p.prompt for p, ss in zip(test, first) for _ in ss],
                                                 [s.steps or [""] for ss in first for s in ss])  # fmt: skip
                    picks = [weighted_vote_pick([s.answer for s in ss], scores[i * b : (i + 1) * b])
                             for i, ss in enumerate(first)]  # fmt: skip
                    acc = sum(first[i][j].reward or 0.0 for i, j in enumerate(picks)) / len(test)
                gen = sum(len(s.token_ids) for ss in first for s in ss) / len(test)
                out[str(b)] = {"accuracy": acc, "generator_tokens": gen}
                continue
            path = self.run.path / f"round{r}" / f"search_eval_{b}.json"
            if not path.exists():
                outs = [
                    solve(
                        p,
                        self.task,
                        engine,
                        verifier,
                        cfg.search,
                        b,
                        temperature=cfg.temperature,
                        max_new_tokens=cfg.max_new_tokens,
                        seed=cfg.seed * 7919 + i,
                    )  # fmt: skip
                    for i, p in enumerate(test)
                ]
                grades = [self.task.grade(p, o.text).score for p, o in zip(test, outs)]
                atomic_write_json(path, {
                    "accuracy": sum(grades) / len(test),
                    "generator_tokens": sum(o.generator_tokens for o in outs) / len(test),
                    "verifier_tokens": sum(o.verifier_tokens for o in outs) / len(test),
                })  # fmt: skip
            out[str(b)] = json.loads(path.read_text())
        return out


def run_selfplay(cfg: SelfPlayConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Play `cfg.rounds` rounds (resuming a killed run), write `results.json` and `report.md`; returns the records."""
    sp = SelfPlay(cfg, run_dir, bar, log)
    state = sp.run.state
    records: list[dict[str, Any]] = state.get("records", [])
    if not records:
        records = [sp.measure(0)]
        sp.run.update_state(records=records)
        sp.run.log_metrics(**_flat(records[0], cfg.best_of))
    log(
        f"base: held-out greedy {_pct(records[0]['greedy'])}, pass@{cfg.best_of} {_pct(records[0][f'pass@{cfg.best_of}'])}"
    )
    for r in range(len(records), cfg.rounds + 1):
        samples, tokens = sp.search(r)
        solved = len({s.problem_id for s in samples if s.reward == 1.0})
        gen_info = sp.update_generator(r, samples)
        ver_info = sp.update_verifier(r, samples)
        rec = sp.measure(r)
        rec.update(gen_info, **ver_info, train_solved=solved / len(sp.train), tokens_search_generator=tokens["generator"],
                   tokens_search_verifier=tokens["verifier"], tokens_mc=sp.mc_file(r).get("tokens", 0))  # fmt: skip
        records.append(rec)
        sp.run.update_state(records=records)
        sp.run.log_metrics(**_flat(rec, cfg.best_of))
        log(
            f"round {r}: greedy {_pct(rec['greedy'])} | majority@{cfg.best_of} {_pct(rec['majority_curve'][-1])} | "
            f"verifier best-of-{cfg.best_of} {_pct(rec['verifier_curve'][-1])} | AUROC within a problem "
            f"{_num(rec['auroc_within'])} | search solved {_pct(rec['train_solved'])} of the training problems"
        )
    atomic_write_json(sp.run.path / "results.json", records)
    write_report(sp.run, cfg, records)
    return {"records": records, "model": sp.generator_dir(cfg.rounds), "verifier": sp.verifier_dir(cfg.rounds)}


def _flat(rec: dict[str, Any], N: int) -> dict[str, Any]:
    """The scalar figures of a round's record, for metrics.jsonl."""
    out = {k: v for k, v in rec.items() if isinstance(v, (int, float)) or v is None}
    out[f"majority@{N}"] = rec["majority_curve"][-1]
    if "verifier_curve" in rec:
        out[f"verifier_best_of_{N}"] = rec["verifier_curve"][-1]
    for b, s in rec.get("search", {}).items():
        out[f"search@{b}"] = s["accuracy"]
    return out


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_report(run: RunDir, cfg: SelfPlayConfig, records: list[dict[str, Any]]) -> None:
    """`report.md`: the per-round table of both players, the final comparison and three plots."""
    N, b1, b2 = cfg.best_of, *cfg.budget_list
    rounds = [r["round"] for r in records]
    plots = run.path / "plots"
    save_line_plot(
        plots / "generator.png", rounds,
        {"greedy": [100 * r["greedy"] for r in records], f"pass@{N}": [100 * r[f"pass@{N}"] for r in records],
         f"majority vote@{N}": [100 * r["majority_curve"][-1] for r in records],
         f"verifier best-of-{N}": [100 * r["verifier_curve"][-1] if "verifier_curve" in r else math.nan for r in records]},
        xlabel="round", ylabel="held-out accuracy (%)", title=f"self-play on {cfg.task}: the generator",
    )  # fmt: skip
    save_line_plot(
        plots / "verifier.png", rounds,
        {"AUROC within a problem": [_nan(r.get("auroc_within")) for r in records],
         "the same, on G(r-1)'s samples": [_nan(r.get("auroc_within_previous")) for r in records],
         "AUROC (all samples)": [_nan(r.get("auroc")) for r in records],
         "error-step F1": [_nan(r.get("error_f1")) for r in records]},
        xlabel="round", ylabel="score", title=f"self-play on {cfg.task}: the verifier ({cfg.verifier.upper()})",
    )  # fmt: skip
    last = records[-1]
    series = {"majority vote": [100 * a for a in last["majority_curve"]]}
    if "verifier_curve" in last:
        series["verifier best-of-n"] = [100 * a for a in last["verifier_curve"]]
    save_line_plot(
        plots / "best_of_n.png", list(range(1, N + 1)), series, xlabel="samples per problem (n)",
        ylabel="held-out accuracy (%)", title=f"round {last['round']}: selection against n",
        hlines={"greedy": 100 * last["greedy"]},
    )  # fmt: skip
    lines = [
        f"# Self-play on `{cfg.task}`",
        "",
        f"Generator `{cfg.model}`, {cfg.rounds} rounds: search `{cfg.search}` at budget {cfg.budget} on "
        f"{cfg.n_train} training problems; generator update `{cfg.update}`; verifier `{cfg.verifier}` "
        f"({cfg.verifier_memory} memory, from the {cfg.verifier_init}). Held-out: {cfg.n_eval} problems x {N} samples.",
        "",
        f"| round | greedy | pass@1 | pass@{N} | majority@{N} | verifier best-of-{N} | weighted vote@{N} | "
        f"AUROC within a problem | the same on G(r-1)'s samples | AUROC | error-step F1 | {cfg.search}@{b1} | "
        f"{cfg.search}@{b2} | search solved (train) | traces kept | verifier traces | search tokens (gen + ver) |",
        "|---" * 17 + "|",
    ]
    for r in records:
        search = r.get("search", {})
        lines.append(
            f"| {r['round']} | {_pct(r['greedy'])} | {_pct(r['pass@1'])} | {_pct(r[f'pass@{N}'])} | "
            f"{_pct(r['majority_curve'][-1])} | {_pct(r['verifier_curve'][-1]) if 'verifier_curve' in r else ''} | "
            f"{_pct(r.get('weighted_vote')) if 'weighted_vote' in r else ''} | {_num(r.get('auroc_within'))} | "
            f"{_num(r.get('auroc_within_previous'))} | "
            f"{_num(r.get('auroc'))} | {_pct(r.get('error_f1'))} | "
            f"{_pct(search[str(b1)]['accuracy']) if search else ''} | {_pct(search[str(b2)]['accuracy']) if search else ''} | "
            f"{_pct(r['train_solved']) if 'train_solved' in r else ''} | {r.get('traces_kept', '')} | "
            f"{r.get('verifier_examples', '')} | "
            f"{(r['tokens_search_generator'] + r['tokens_search_verifier']) if 'tokens_search_generator' in r else ''} |"
        )
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= N]
    lines += [
        "",
        f"Round {last['round']} on the held-out problems (greedy {_pct(last['greedy'])}):",
        "",
        "| selection | " + " | ".join(f"n={n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
        "| majority vote | " + " | ".join(_pct(last["majority_curve"][n - 1]) for n in ns) + " |",
    ]
    if "verifier_curve" in last:
        lines.append("| verifier best-of-n | " + " | ".join(_pct(last["verifier_curve"][n - 1]) for n in ns) + " |")
    gen_tokens = sum(
        r.get("tokens_search_generator", 0) + r.get("tokens_mc", 0) + r.get("tokens_rl", 0) + r.get("tokens_fresh", 0)
        for r in records
    )
    ver_tokens = sum(r.get("tokens_search_verifier", 0) + r.get("tokens_rl_verifier", 0) for r in records)
    lines += [
        "",
        f"Tokens over all rounds (training side): generator {gen_tokens:,} (search, Monte-Carlo labels, RL "
        f"rollouts, fresh traces for the verifier), verifier {ver_tokens:,} (scoring search traces and RL "
        "rewards); the held-out measurement is not counted.",
        "",
        "![generator](plots/generator.png)",
        "",
        "![verifier](plots/verifier.png)",
        "",
        "![selection against n](plots/best_of_n.png)",
    ]
    atomic_write_text(run.path / "report.md", "\n".join(lines) + "\n")
