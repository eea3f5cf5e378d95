"""A learned verifier with a step checker beside it: each step's claim is re-derived in isolation.

A learned verifier reads a whole solution and has to notice that `14*7=35` is false while the solution around it
looks right (countdown's self-play generator learns to write exactly that: a last step that lands on the target
whatever the arithmetic). A `StepChecker` is a causal LM that knows the world's single facts (`a op b=c`: the
base fine-tuned on `task.facts`); it scores a step's claim, the text after its last `=`, by its log-probability
given the left side alone, as a standalone document: `log P("35" | "14*7=")`, with no problem or earlier steps to
bias it toward the target. `CheckedVerifier` adds the least likely claim of a solution to the learned verifier's
log-odds, and scores the result as a probability again (so votes weighted by it and step thresholds still work):

    score = sigmoid(logit(V(solution)) + weight * min over the steps with a claim of log P(claim | left side))

A solution with no claim keeps the verifier's score. Only value verifiers (scores that are probabilities) are
combined; see `docs/verifiers.md`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from reasonloop.core import Problem
from reasonloop.train.losses import token_logprobs
from reasonloop.verifiers.value import ValueVerifier

_EPS = 1e-6


def claim_split(step: str) -> tuple[str, str] | None:
    """`(left side up to and including the last '=', the claim after it)`, or None for a step without a claim.

    >>> claim_split("14*7=35"), claim_split("A: 35"), claim_split("x=")
    (('14*7=', '35'), None, None)
    """
    i = step.rfind("=")
    if i < 0 or not step[i + 1 :].strip():
        return None
    return step[: i + 1], step[i + 1 :].strip()


def shift_odds(p: float, by: float) -> float:
    """sigmoid(logit(p) + by), with p clipped to [1e-6, 1 - 1e-6].

    >>> round(shift_odds(0.5, math.log(3)), 3), shift_odds(0.8, 0.0) == 0.8
    (0.75, True)
    """
    p = min(max(p, _EPS), 1 - _EPS)
    z = math.log(p / (1 - p)) + by
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


class StepChecker:
    """log P(claim | left side) of each step, under a causal LM that reads the step as a document of its own."""

    def __init__(self, model, tokenizer, batch_size: int = 256):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.tokens_scored = 0
        self._cache: dict[str, float | None] = {}

    @classmethod
    def from_dir(cls, path: str | Path, **kw) -> StepChecker:
        from reasonloop.models import load_model

        return cls(*load_model(path), **kw)

    def _encode(self, left: str, claim: str) -> tuple[list[int], int]:
        """Token ids of the document `left + claim` (with the tokenizer's special tokens) and how many of the
        last ones are the claim's."""
        ids = self.tokenizer(left + claim)["input_ids"]
        n_claim = len(self.tokenizer(claim, add_special_tokens=False)["input_ids"])
        if ids and ids[-1] == self.tokenizer.eos_token_id and self.tokenizer.eos_token_id is not None:
            ids = ids[:-1]  # a tokenizer that appends EOS: the claim's tokens end before it
        return ids, min(n_claim, len(ids) - 1)

    @torch.no_grad()
    def claim_logprobs(self, steps: Sequence[str]) -> list[float | None]:
        """Per step: log P(claim | left side), or None for a step without a claim (cached by step text)."""
        new = sorted({s for s in steps if s not in self._cache})
        self._cache.update({s: None for s in new if claim_split(s) is None})
        todo = [s for s in new if s not in self._cache]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for c in range(0, len(todo), self.batch_size):
            chunk = todo[c : c + self.batch_size]
            rows = [self._encode(*claim_split(s)) for s in chunk]  # type: ignore[misc]
            T = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), T), pad)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for r, (row, _) in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            self.tokens_scored += int(mask.sum())
            token_lp = token_logprobs(self.model(input_ids=ids, attention_mask=mask).logits, ids)  # (B, T-1)
            for r, (s, (row, n_claim)) in enumerate(zip(chunk, rows)):
                n = len(row)
                self._cache[s] = float(token_lp[r, n - 1 - n_claim : n - 1].sum()) if n_claim > 0 else None
        return [self._cache[s] for s in steps]

    def least_likely(self, solutions: Sequence[Sequence[str]]) -> list[float]:
        """Per solution: the smallest claim log-probability over its steps (0.0 when no step has a claim)."""
        flat = self.claim_logprobs([s for steps in solutions for s in steps])
        out, i = [], 0
        for steps in solutions:
            lps = [lp for lp in flat[i : i + len(steps)] if lp is not None]
            out.append(min(lps) if lps else 0.0)
            i += len(steps)
        return out


class CheckedVerifier:
    """A value verifier's log-odds plus `weight` times the least likely claim of the solution (`StepChecker`),
    as a probability."""

    def __init__(self, verifier: ValueVerifier, checker: StepChecker, weight: float = 1.0):
        if weight < 0:
            raise ValueError(f"weight: expected a number >= 0, got {weight}")
        self.verifier, self.checker, self.weight = verifier, checker, weight

    def _combine(self, probs: list[float], solutions: Sequence[Sequence[str]]) -> list[float]:
        worst = self.checker.least_likely(solutions) if self.weight > 0 else [0.0] * len(solutions)
        return [shift_odds(p, self.weight * w) for p, w in zip(probs, worst)]

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        return self._combine(self.verifier.score_many(prompts, solutions), solutions)

    def score(self, problem: Problem, steps: list[str]) -> float:
        return self.score_many([problem.prompt], [steps])[0]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """After each step: the verifier's value there, shifted by the least likely claim so far."""
        values = self.verifier.step_scores_many(prompts, solutions)
        return [self._combine(v, [steps[: i + 1] for i in range(len(v))]) for v, steps in zip(values, solutions)]

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.step_scores_many([problem.prompt], [steps])[0]

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]:
        return self._combine(self.verifier.score_prefixes(prompts, prefixes), prefixes)

    @property
    def tokens_scored(self) -> int:
        return self.verifier.tokens_scored + self.checker.tokens_scored
