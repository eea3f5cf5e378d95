"""Dense process rewards for online RL: a verifier's score of each step, on the step's last sampled token.

Two sources (`reward.process` in `RLConfig`):

- `prm`: the value a PRM gives the solution after step i, V(prefix_i), the
  probability of finishing correctly from there under the policy that made its
  training data;
- `pav`: the prover's advantage of step i (Setlur et al. 2024, "Rewarding
  Progress"), A_mu(i) = Q_mu(prefix_i) - Q_mu(prefix_{i-1}), with mu the PAV's
  prover (best-of-K of the starting policy). The RL reward of the paper is the
  outcome reward plus alpha times this at every step.

`ProcessReward.step_rewards` scores a batch of graded samples in one batched
verifier call (its tokens are counted) and places each step's reward on the
token that completes the step (found by decoding prefixes of the sampled ids).

A frozen verifier is never trained. With `refresh_every = k` it is refitted
every k RL steps on that step's own rollouts: `refresh_samples` of them are
labelled by Monte-Carlo rollouts of the *current* policy (`mc_step_values`,
`refresh_rollouts` per prefix) and the value heads (PRM; or PAV's value and
best-of-`prover_k` prover heads) continue training from their current weights.
Each refit is a new verifier directory under the run's checkpoints, so a
resumed run loads the latest one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reasonloop.core import Grader, Problem, ReasonloopError, Sample
from reasonloop.train.rollout import step_char_ends, step_end_tokens
from reasonloop.verifiers import (
    PavVerifier,
    ValueVerifier,
    mc_step_values,
    pav_examples,
    prm_examples,
    step_advantages,
    train_value_verifier,
)
from reasonloop.verifiers.registry import MANIFEST, load_verifier, write_manifest


class ProcessReward:
    """Step rewards from the verifier in `directory` (`kind` 'prm' or 'pav')."""

    def __init__(self, kind: str, directory: str | Path, delimiter: str = "\n"):
        self.kind, self.directory, self.delimiter = kind, Path(directory).expanduser(), delimiter
        self.verifier = load_verifier(self.directory)
        want = PavVerifier if kind == "pav" else ValueVerifier
        if not isinstance(self.verifier, want):
            raise ReasonloopError(
                f"{self.directory}: reward.process '{kind}' needs a {'PAV' if kind == 'pav' else 'value-head (PRM)'} "
                f"verifier, found a {type(self.verifier).__name__}"
            )

    @property
    def tokens_scored(self) -> int:
        return self.verifier.tokens_scored

    def scores(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """One reward per step of each solution: V(prefix_i) (prm) or A_mu(i) (pav)."""
        if self.kind == "pav":
            return [step_advantages(v) for v in self.verifier.prover.values(prompts, solutions)]
        return self.verifier.step_scores_many(prompts, solutions)

    def step_rewards(self, tokenizer, samples: list[Sample], prompts: list[str], T: int) -> tuple[torch.Tensor, ...]:
        """(step rewards, step mask), both (B, T): each step's reward on the sampled token that completes it."""
        rewards, where = torch.zeros(len(samples), T), torch.zeros(len(samples), T)
        scores = self.scores(prompts, [s.steps for s in samples])
        for b, (s, sc) in enumerate(zip(samples, scores)):
            ends = step_end_tokens(tokenizer, s.token_ids, step_char_ends(s.text, self.delimiter))
            for t, r in zip(ends, sc):
                rewards[b, t] += r  # two steps can only share a token if the tokenizer merged them
                where[b, t] = 1.0
        return rewards, where

    def refresh(
        self,
        generator,
        grader: Grader,
        problems: list[Problem],
        samples: list[Sample],
        out_dir: Path,
        *,
        n_samples: int,
        rollouts: int,
        prover_k: int,
        max_new_tokens: int,
        seed: int,
    ) -> None:
        """Refit the value heads on `samples` labelled by `generator`'s rollouts, into `out_dir`; use it from now on.

        `problems[i]` is the problem of `samples[i]`. Resumable: a finished refit in `out_dir` is loaded as it is.
        """
        if not (out_dir / MANIFEST).exists():
            items = [(p, s.steps) for p, s in zip(problems, samples) if s.steps][:n_samples]
            values = mc_step_values(
                generator, grader, items, rollouts, delimiter=self.delimiter, max_new_tokens=max_new_tokens, seed=seed
            )
            spec = json.loads((self.directory / MANIFEST).read_text())
            if self.kind == "pav":
                value_ex, prover_ex = pav_examples(items, values, k=prover_k)
                value = train_value_verifier(
                    self._path(spec["value"]), value_ex, out_dir / "value", delimiter=self.delimiter
                )
                prover = train_value_verifier(
                    self._path(spec["prover"]), prover_ex, out_dir / "prover", delimiter=self.delimiter
                )
                write_manifest(out_dir, kind="pav", value=value.resolve(), prover=prover.resolve(),
                               alpha=spec.get("alpha", 1.0), aggregate=spec.get("aggregate", "min"))  # fmt: skip
            else:
                start = self._path(spec["model"]) if "model" in spec else self.directory
                model = train_value_verifier(
                    start, prm_examples(items, values), out_dir / "value", delimiter=self.delimiter
                )
                write_manifest(out_dir, kind="value", model=model.resolve(), aggregate=spec.get("aggregate", "min"))
        counted = self.verifier.tokens_scored
        self.directory = out_dir
        self.verifier = load_verifier(out_dir)
        self._carry(counted)

    def _path(self, entry: str) -> Path:
        p = Path(entry).expanduser()
        return p if p.is_absolute() else self.directory / p

    def _carry(self, counted: int) -> None:
        """Keep counting tokens across refits (a loaded verifier starts from 0)."""
        if isinstance(self.verifier, PavVerifier):
            self.verifier.value.tokens_scored += counted
        else:
            self.verifier.tokens_scored += counted
