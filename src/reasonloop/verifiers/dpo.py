"""The DPO verifier of V-STaR (Hosseini et al. 2024): a policy trained with DPO on (correct, incorrect)
solutions of the same problem, scoring a solution by its log-likelihood ratio to the reference.

    pairs = preference_pairs(problems, samples)                # from every round's graded samples
    train_dpo_verifier("base_dir", pairs, "out", DpoVerifierConfig())
    verifier = DpoVerifier.from_dirs("out/policy", "base_dir")
    verifier.score(problem, steps)                             # log pi(y|x) - log pi_ref(y|x)

The score is the (unscaled) DPO implicit reward: higher means "more like the
correct solutions". Best-of-N picks the highest-scoring sample.

Departure from the paper: the scored text is the solution without the
end-of-sequence token (training pairs include it, so the model learns to stop);
`score_steps` gives the cumulative reward after each step (the causal model
scores every prefix in one pass); `aggregate` selects how a solution's token
log-ratios become one score (the paper's sum, a per-token mean, or the worst step).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from reasonloop.core import Problem, Sample, join_steps
from reasonloop.engine import HFEngine
from reasonloop.models import load_model, save_model
from reasonloop.train import TrainConfig, dpo_loss, encode_pairs, sequence_logprobs, shuffled_batch, train_loop


@dataclass(frozen=True)
class DpoVerifierConfig:
    """How the DPO verifier is trained."""

    beta: float = 0.1  # DPO temperature: strength of the pull away from the reference
    epochs: float = 2.0  # passes over the pairs
    batch_size: int = 16  # pairs per optimiser step
    lr: float = 5e-4  # peak learning rate
    max_pairs_per_problem: int = 4  # (correct, incorrect) pairs kept per problem
    seed: int = 0  # pair sampling and shuffling


def preference_pairs(
    problems: list[Problem], samples: list[Sample], max_pairs_per_problem: int = 4, seed: int = 0
) -> list[tuple[str, str, str]]:
    """(prompt, correct solution, incorrect solution) for problems with both, at most `max_pairs_per_problem` each.

    >>> ps = [Problem("a", "Q: 1+1\\n", "2")]
    >>> ss = [Sample("a", "1+1=2\\nA: 2", reward=1.0), Sample("a", "1+1=3\\nA: 3", reward=0.0)]
    >>> preference_pairs(ps, ss)
    [('Q: 1+1\\n', '1+1=2\\nA: 2', '1+1=3\\nA: 3')]
    """
    rng = random.Random(seed)
    good: dict[str, list[str]] = {}
    bad: dict[str, list[str]] = {}
    for s in samples:
        side = good if s.reward == 1.0 else bad
        if s.text not in side.setdefault(s.problem_id, []):
            side[s.problem_id].append(s.text)
    pairs = []
    for p in problems:
        combos = [(c, w) for c in good.get(p.id, []) for w in bad.get(p.id, [])]
        rng.shuffle(combos)
        pairs += [(p.prompt, c, w) for c, w in combos[:max_pairs_per_problem]]
    return pairs


def train_dpo_verifier(
    start: str | Path,
    pairs: list[tuple[str, str, str]],
    out_dir: str | Path,
    cfg: DpoVerifierConfig = DpoVerifierConfig(),
) -> Path:
    """Train a DPO verifier from the model in `start` (also the frozen reference); resumable. Returns its directory."""
    out = Path(out_dir)
    final = out / "policy"
    if (final / "config.json").exists():
        return final
    if not pairs:
        raise ValueError("no (correct, incorrect) pairs: the verifier needs problems with both")
    policy, tokenizer = load_model(start)
    ref, _ = load_model(start)
    ref.requires_grad_(False)
    per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))

    def batches(i: int):
        chosen = [pairs[j] for j in shuffled_batch(i, len(pairs), cfg.batch_size, cfg.seed)]
        # [chosen..., rejected...] for the same prompts, as DPO trainers lay them out
        return encode_pairs(
            tokenizer, [p for p, _, _ in chosen] * 2, [c for _, c, _ in chosen] + [r for _, _, r in chosen]
        )

    def loss_fn(model, b):
        n = len(b) // 2
        logps = sequence_logprobs(
            model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
        )
        with torch.no_grad():
            ref_logps = sequence_logprobs(
                ref(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
            )
        return dpo_loss(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], beta=cfg.beta)

    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup=max(1, steps // 20), save_every=max(1, steps // 5), seed=cfg.seed)
    train_loop(policy, tokenizer, batches, loss_fn, tcfg, out_dir=out / "train")
    return save_model(policy, tokenizer, final)


AGGREGATES = ("sum", "mean", "min_step")


class DpoVerifier:
    """Scores solutions by log pi(y|x) - log pi_ref(y|x); implements `score` and `score_steps`.

    `aggregate` turns the per-token log-ratios into one score: `sum` (the paper's
    sequence log-ratio), `mean` (per token, against a length bias) or `min_step`
    (the worst step's summed log-ratio: one bad step sinks the solution).
    """

    def __init__(self, policy: HFEngine, reference: HFEngine, step_delimiter: str = "\n", aggregate: str = "sum"):
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
        self.policy, self.reference, self.delimiter, self.aggregate = policy, reference, step_delimiter, aggregate

    @classmethod
    def from_dirs(cls, policy_dir: str | Path, reference_dir: str | Path, **kw) -> DpoVerifier:
        return cls(HFEngine.from_pretrained(policy_dir), HFEngine.from_pretrained(reference_dir), **kw)

    def token_ratios(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Per-token log pi(y_t|...) - log pi_ref(y_t|...) of each completion."""
        pol = self.policy.logprobs(prompts, completions)
        ref = self.reference.logprobs(prompts, completions)
        return [[a - b for a, b in zip(x, y)] for x, y in zip(pol, ref)]

    def step_ratios(self, completion: str, ratios: list[float]) -> list[float]:
        """Summed log-ratio of each step (a delimiter token counts to the step it ends)."""
        enc = self.policy.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        steps = [0.0] * (completion.count(self.delimiter) + 1)
        for (start, _), r in zip(enc["offset_mapping"], ratios):
            steps[completion.count(self.delimiter, 0, start)] += r
        return steps

    def score_completions(self, prompts: list[str], completions: list[str]) -> list[float]:
        out = []
        for text, r in zip(completions, self.token_ratios(prompts, completions)):
            if self.aggregate == "sum":
                out.append(sum(r))
            elif self.aggregate == "mean":
                out.append(sum(r) / max(1, len(r)))
            else:
                out.append(min(self.step_ratios(text, r)))
        return out

    def score(self, problem: Problem, steps: list[str]) -> float:
        return self.score_many([problem.prompt], [steps])[0]

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        """The aggregated log-ratio; a solution with no steps scores -inf (it never answers)."""
        scores = self.score_completions(prompts, [join_steps(s, self.delimiter) for s in solutions])
        return [sc if steps else -math.inf for sc, steps in zip(scores, solutions)]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        """Each step's summed token log-ratio, for many solutions."""
        texts = [join_steps(s, self.delimiter) for s in solutions]
        return [self.step_ratios(t, r) for t, r in zip(texts, self.token_ratios(prompts, texts))]

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]:
        """The score of each partial solution as it stands (the implicit reward accumulated so far; 0 at the root)."""
        return self.score_completions(prompts, [join_steps(s, self.delimiter) for s in prefixes])

    @property
    def tokens_scored(self) -> int:
        """Tokens the policy and the reference read (each counts: two forward passes)."""
        return sum(e.counts.scored + e.counts.prefilled for e in (self.policy, self.reference))

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        """Cumulative log-ratio after each step, from one pass over the whole solution."""
        text = join_steps(steps, self.delimiter)
        per_step = self.step_ratios(text, self.token_ratios([problem.prompt], [text])[0])
        return [sum(per_step[: i + 1]) for i in range(len(steps))]
