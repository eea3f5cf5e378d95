"""Verifiers with a value head: the ORM, the PRM with Monte-Carlo labels, and the PAV's two value models.

One model (`ValueHeadModel`: a causal LM with a scalar head), one training
function and one scorer; what differs between the verifiers is the labels:

- **ORM** (outcome reward model, Cobbe et al. 2021; Uesato et al. 2022): every step
  of a graded sample is labelled with the sample's final outcome (`orm_examples`);
  the score of a solution is the value after its last step.
- **PRM with Monte-Carlo labels** (Math-Shepherd, Wang et al. 2024): step i is
  labelled with the fraction of `k` rollouts from the prefix ending at step i that
  reach a correct answer (`mc_step_values`; `hard=True` gives 1 if any does).
  Rollouts from one prefix are one prompt sampled `k` times, so the engine encodes
  the prefix once and shares it across the `k` rows.
- **PAV** (process advantage verifier, Setlur et al. 2024): see `pav.py`.

The value at a step is read at the last token of the step; training minimises
binary cross-entropy (soft targets allowed) at those positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reasonloop.core import Generator, Grader, Problem, Sample, join_steps, split_steps
from reasonloop.models import ValueHeadModel
from reasonloop.train import TrainConfig, shuffled_batch, train_loop
from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps


@dataclass(frozen=True)
class StepExample:
    """A solution with one target in [0, 1] per step (and optionally one for the problem alone, `start`)."""

    prompt: str
    steps: list[str]
    labels: list[float]
    start: float | None = None

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.labels) or not self.steps:
            raise ValueError(f"a step example needs one label per step, got {len(self.labels)} for {len(self.steps)}")


@dataclass(frozen=True)
class ValueVerifierConfig:
    """How a value-head verifier is trained."""

    epochs: float = 2.0  # passes over the examples
    batch_size: int = 32  # examples per optimiser step
    lr: float = 1e-3  # peak learning rate
    seed: int = 0  # shuffling


def orm_examples(problems: Sequence[Problem], samples: Sequence[Sample], delimiter: str = "\n") -> list[StepExample]:
    """Every graded sample, each step labelled with the sample's outcome (reward 1 or not).

    >>> ex = orm_examples([Problem("a", "Q: 1+1\\n", "2")], [Sample("a", "1+1=3\\nA: 3", reward=0.0)])
    >>> ex[0].steps, ex[0].labels
    (['1+1=3', 'A: 3'], [0.0, 0.0])
    """
    by_id = {p.id: p for p in problems}
    out = []
    for s in samples:
        steps = split_steps(s.text, delimiter)
        if s.problem_id in by_id and steps and s.reward is not None:
            label = 1.0 if s.reward == 1.0 else 0.0
            out.append(StepExample(by_id[s.problem_id].prompt, steps, [label] * len(steps)))
    return out


def mc_step_values(
    generator: Generator,
    grader: Grader,
    items: Sequence[tuple[Problem, list[str]]],
    k: int,
    *,
    delimiter: str = "\n",
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    hard: bool = False,
) -> list[list[float]]:
    """Monte-Carlo value of every step prefix of every (problem, steps): `len(steps) + 1` values each.

    Value 0 is the problem alone; value i the prefix ending at step i, estimated
    as the mean grade of `k` completions sampled by `generator` (the fraction
    correct for a 0/1 grader such as `task.grade`; `hard`: the best grade). A
    rollout is graded with its prefix, as one solution. The full solution's value
    is its own grade, with no rollout. (`mc_step_rollouts` also returns the rollouts.)
    """
    return [
        r.values
        for r in mc_step_rollouts(
            generator,
            grader,
            items,
            k,
            delimiter=delimiter,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            hard=hard,
        )  # fmt: skip
    ]


@dataclass
class StepRollouts:
    """Monte-Carlo values of one solution's step prefixes, with the rollouts they were estimated from."""

    values: list[float]  # len(steps) + 1: the problem alone, then the prefix ending at each step
    rollouts: list[list[Sample]]  # len(steps): rollouts[i] are the k graded completions of the prefix of i steps


def mc_step_rollouts(
    generator: Generator,
    grader: Grader,
    items: Sequence[tuple[Problem, list[str]]],
    k: int,
    *,
    delimiter: str = "\n",
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    hard: bool = False,
) -> list[StepRollouts]:
    """`mc_step_values`, keeping the rollouts: each is a `Sample` of the prefix's prompt (its `prompt_ids` encode
    the problem and the prefix) whose `reward` is the grade of prefix + rollout. Per-step DPO takes its good and
    bad continuations from them."""
    prompts, where = [], []
    for j, (problem, steps) in enumerate(items):
        for i in range(len(steps)):  # prefixes with 0..len-1 steps are rolled out
            prompts.append(problem.prompt + "".join(s + delimiter for s in steps[:i]))
            where.append((j, i))
    outs = (
        generator.generate(prompts, k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        if prompts
        else []
    )
    out = [StepRollouts([0.0] * (len(steps) + 1), [[] for _ in steps]) for _, steps in items]
    for (j, i), prompt, rollouts in zip(where, prompts, outs):
        problem = items[j][0]
        wins = [grader(problem, prompt[len(problem.prompt) :] + r.text).score for r in rollouts]
        for r, w in zip(rollouts, wins):
            r.problem_id, r.reward = problem.id, w
        out[j].values[i] = max(wins) if hard else sum(wins) / len(wins)
        out[j].rollouts[i] = list(rollouts)
    for j, (problem, steps) in enumerate(items):
        out[j].values[-1] = grader(problem, join_steps(steps, delimiter)).score
    return out


def prm_examples(items: Sequence[tuple[Problem, list[str]]], values: Sequence[list[float]]) -> list[StepExample]:
    """Examples for a PRM from `mc_step_values`: step i's target is the value of the prefix ending there."""
    return [StepExample(p.prompt, steps, list(v[1:]), start=v[0]) for (p, steps), v in zip(items, values)]


def _encode(tokenizer, prompt: str, steps: list[str], delimiter: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + solution, and the position of the prompt's last token then of each step's last token."""
    text = join_steps(steps, delimiter)
    p_ids = tokenizer(prompt)["input_ids"]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends, at = [], 0
    for s in steps:
        at += len(s)
        ends.append(at)  # index one past the step's last character
        at += len(delimiter)
    positions = [len(p_ids) - 1]
    for end in ends:
        last = max((t for t, (a, _) in enumerate(enc["offset_mapping"]) if a < end), default=-1)
        positions.append(len(p_ids) + last if last >= 0 else positions[-1])
    return p_ids + enc["input_ids"], positions


def _batch(tokenizer, rows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, ...]:
    T = max(len(ids) for ids, _ in rows)
    K = max(len(pos) for _, pos in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), T), dtype=torch.long)
    positions = torch.zeros((len(rows), K), dtype=torch.long)
    valid = torch.zeros((len(rows), K), dtype=torch.bool)
    for r, (x, pos) in enumerate(rows):
        ids[r, : len(x)] = torch.tensor(x)
        attention[r, : len(x)] = 1
        positions[r, : len(pos)] = torch.tensor(pos)
        valid[r, : len(pos)] = True
    return ids, attention, positions, valid


def _fit(start: str | Path, out_dir: str | Path, n: int, make_batch, loss_fn, cfg: ValueVerifierConfig) -> Path:
    """Train a value head from `start` on `n` items (`make_batch(tokenizer, indices)`); resumable."""
    out = Path(out_dir)
    final = out / "verifier"
    if (final / "config.json").exists():
        return final
    model = ValueHeadModel.from_pretrained(start)
    per_epoch = math.ceil(n / cfg.batch_size)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))

    def batches(i: int):
        return make_batch(model.tokenizer, shuffled_batch(i, n, cfg.batch_size, cfg.seed))

    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup=max(1, steps // 20), save_every=max(1, steps // 5), seed=cfg.seed)
    train_loop(model, model.tokenizer, batches, loss_fn, tcfg, out_dir=out / "train")
    return model.save_pretrained(final)


def train_value_verifier(
    start: str | Path,
    examples: list[StepExample],
    out_dir: str | Path,
    cfg: ValueVerifierConfig = ValueVerifierConfig(),
    delimiter: str = "\n",
) -> Path:
    """Train a value head (and the backbone) from the model in `start` on per-step targets with binary
    cross-entropy; resumable. Returns the directory of the trained verifier (backbone, tokenizer and head)."""
    if not examples:
        raise ValueError("no examples: the value verifier needs labelled solutions")

    def make_batch(tokenizer, indices):
        chosen = [examples[j] for j in indices]
        rows = [_encode(tokenizer, e.prompt, e.steps, delimiter) for e in chosen]
        # the prompt's position is trained only when the example has a `start` target
        rows = [(ids, pos if e.start is not None else pos[1:]) for (ids, pos), e in zip(rows, chosen)]
        ids, attention, positions, valid = _batch(tokenizer, rows)
        targets = torch.zeros(positions.shape)
        for r, e in enumerate(chosen):
            labels = ([e.start] if e.start is not None else []) + list(e.labels)
            targets[r, : len(labels)] = torch.tensor(labels)
        return ids, attention, positions, valid, targets

    def loss_fn(m, b):
        ids, attention, positions, valid, targets = b
        logits = m(ids, attention_mask=attention, positions=positions)  # (B, K)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], targets[valid])
        return loss, {"bce": loss.item()}

    return _fit(start, out_dir, len(examples), make_batch, loss_fn, cfg)


def train_bt_verifier(
    start: str | Path,
    pairs: list[tuple[str, list[str], list[str]]],
    out_dir: str | Path,
    cfg: ValueVerifierConfig = ValueVerifierConfig(),
    delimiter: str = "\n",
) -> Path:
    """A Bradley-Terry reward model: (prompt, better steps, worse steps) pairs, loss -log sigmoid(r_better - r_worse)
    with r the head's output after the last step; resumable. Score it with `ValueVerifier(aggregate="last")`."""
    if not pairs:
        raise ValueError("no pairs: the Bradley-Terry verifier needs (better, worse) solutions of the same problem")

    def make_batch(tokenizer, indices):
        chosen = [pairs[j] for j in indices]
        rows = [_encode(tokenizer, p, good, delimiter) for p, good, _ in chosen]
        rows += [_encode(tokenizer, p, bad, delimiter) for p, _, bad in chosen]
        ids, attention, positions, _ = _batch(tokenizer, [(x, pos[-1:]) for x, pos in rows])
        return ids, attention, positions

    def loss_fn(m, b):
        ids, attention, positions = b
        r = m(ids, attention_mask=attention, positions=positions)[:, 0]  # (2B,)
        n = len(r) // 2
        loss = -torch.nn.functional.logsigmoid(r[:n] - r[n:]).mean()
        return loss, {"bt_loss": loss.item(), "accuracy": (r[:n] > r[n:]).float().mean().item()}

    return _fit(start, out_dir, len(pairs), make_batch, loss_fn, cfg)


class ValueVerifier:
    """Scores solutions by a value head: `score_steps` gives the value (a probability) after each step,
    `score` aggregates them (`last` for an ORM, `min` for a PRM, as usual)."""

    def __init__(
        self, model: ValueHeadModel, aggregate: str = "last", step_delimiter: str = "\n", batch_size: int = 64
    ):
        if aggregate not in STEP_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(STEP_AGGREGATES)}")
        self.model, self.aggregate, self.delimiter, self.batch_size = (
            model.eval(),
            aggregate,
            step_delimiter,
            batch_size,
        )
        self.tokens_scored = 0  # tokens read so far (prompts and solutions)

    @classmethod
    def from_dir(cls, path: str | Path, **kw) -> ValueVerifier:
        return cls(ValueHeadModel.from_pretrained(path), **kw)

    @torch.no_grad()
    def values(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """Per solution: the value at the end of the prompt, then after each step (probabilities)."""
        out: list[list[float]] = []
        for c in range(0, len(prompts), self.batch_size):
            rows = [
                _encode(self.model.tokenizer, p, s, self.delimiter)
                for p, s in zip(prompts[c : c + self.batch_size], solutions[c : c + self.batch_size])
            ]
            ids, attention, positions, valid = _batch(self.model.tokenizer, rows)
            self.tokens_scored += int(attention.sum())
            probs = torch.sigmoid(self.model(ids, attention_mask=attention, positions=positions).float())
            out += [probs[r, : len(pos)].tolist() for r, (_, pos) in enumerate(rows)]
        return out

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.values([problem.prompt], [steps])[0][1:]

    def score(self, problem: Problem, steps: list[str]) -> float:
        return aggregate_steps(self.score_steps(problem, steps), self.aggregate, empty=0.0)

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        """`score` for many solutions at once (batched)."""
        return [aggregate_steps(v[1:], self.aggregate, empty=0.0) for v in self.values(prompts, solutions)]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """The value after each step, for many solutions."""
        return [v[1:] for v in self.values(prompts, solutions)]

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]:
        """The value after the last step of each partial solution (what tree search compares)."""
        return [v[-1] for v in self.values(prompts, prefixes)]
