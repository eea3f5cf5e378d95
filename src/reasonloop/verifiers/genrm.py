"""GenRM, the generative verifier (Zhang et al. 2024, "Generative Verifiers: Reward Modeling as Next-Token
Prediction"): the language model itself verifies.

Given a problem and a candidate solution, the verifier writes a short
verification, then answers `Correct? Yes` or `Correct? No`; the score is the
probability of the `Yes` token after the verification, averaged over `votes`
sampled verifications (GenRM-CoT with majority voting, in the paper's terms).

Training is next-token prediction on verification texts for correct and
incorrect solutions (`verification_pairs`): the prompt is the problem plus the
candidate, the completion is a verification rationale and the verdict. The
paper's rationales come from a stronger model given the reference solution; here
they come from the task itself: `rationale(problem)` is any function that writes
what a careful checker would (for the built-in worlds, their canonical solution:
"Verify:" followed by the worked steps), so the verifier learns to re-derive the
answer and compare it with the candidate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reasonloop.core import Problem, Sample, join_steps
from reasonloop.engine import HFEngine
from reasonloop.models import load_model, save_model
from reasonloop.train import TrainConfig, sft_on_pairs
from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps

QUESTION = "\nCorrect? "  # the verdict follows this
MARK = "?"  # where a sampled verification stops (the end of QUESTION)
HEADER = "\nVerify:\n"  # the verification rationale follows the candidate after this


@dataclass(frozen=True)
class GenRMConfig:
    """How the generative verifier is trained."""

    epochs: float = 3.0  # passes over the verification texts
    batch_size: int = 32  # texts per optimiser step
    lr: float = 1e-3  # peak learning rate
    seed: int = 0  # shuffling


def verifier_prompt(problem_prompt: str, solution: str) -> str:
    """What the verifier reads: the problem, the candidate solution, and the verification header."""
    return f"{problem_prompt}{solution}{HEADER}"


def verification_pairs(
    problems: Sequence[Problem], samples: Sequence[Sample], rationale: Callable[[Problem], str]
) -> list[tuple[str, str]]:
    """(verifier prompt, rationale + verdict) for every graded sample of a known problem.

    >>> ps = [Problem("a", "Q: 1+1\\n", "2")]
    >>> verification_pairs(ps, [Sample("a", "1+1=3\\nA: 3", reward=0.0)], lambda p: "1+1=2\\nA: 2")
    [('Q: 1+1\\n1+1=3\\nA: 3\\nVerify:\\n', '1+1=2\\nA: 2\\nCorrect? No')]
    """
    by_id = {p.id: p for p in problems}
    return [
        (verifier_prompt(by_id[s.problem_id].prompt, s.text), rationale(by_id[s.problem_id]) + QUESTION + verdict)
        for s in samples
        if s.problem_id in by_id and s.reward is not None
        for verdict in ["Yes" if s.reward == 1.0 else "No"]
    ]


def train_genrm(
    start: str | Path, pairs: list[tuple[str, str]], out_dir: str | Path, cfg: GenRMConfig = GenRMConfig()
) -> Path:
    """Fine-tune the model in `start` on verification texts; resumable. Returns the verifier's directory."""
    out = Path(out_dir)
    final = out / "verifier"
    if (final / "config.json").exists():
        return final
    if not pairs:
        raise ValueError("no verification texts: GenRM needs graded samples")
    model, tokenizer = load_model(start)
    steps = max(1, math.ceil(cfg.epochs * len(pairs) / cfg.batch_size))
    tcfg = TrainConfig(steps=steps, lr=cfg.lr, warmup=max(1, steps // 20), save_every=max(1, steps // 5), seed=cfg.seed)
    sft_on_pairs(model, tokenizer, pairs, tcfg, cfg.batch_size, out / "train", cfg.seed)
    return save_model(model, tokenizer, final)


class GenRMVerifier:
    """Scores a solution by P(`Yes`) after sampled verifications, averaged over `votes` of them.

    `score_steps` applies the same question to each step prefix (a prefix is
    judged as if it were the whole solution), so step scores are comparable with
    a PRM's but cost one verification per prefix.
    """

    def __init__(
        self,
        engine: HFEngine,
        votes: int = 4,
        temperature: float = 1.0,
        max_new_tokens: int = 96,
        step_delimiter: str = "\n",
        aggregate: str = "last",
        seed: int = 0,
    ):
        if aggregate not in STEP_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(STEP_AGGREGATES)}")
        self.engine, self.votes, self.temperature, self.max_new_tokens = engine, votes, temperature, max_new_tokens
        self.delimiter, self.aggregate, self.seed = step_delimiter, aggregate, seed
        yes = engine.tokenizer("Yes", add_special_tokens=False)["input_ids"]
        self.yes_first = "Yes" if len(yes) == 1 else engine.tokenizer.decode(yes[:1])

    @classmethod
    def from_dir(cls, path: str | Path, **kw) -> GenRMVerifier:
        return cls(HFEngine.from_pretrained(path), **kw)

    @property
    def tokens_scored(self) -> int:
        c = self.engine.counts
        return c.generated + c.prefilled + c.scored

    def p_yes(self, prompts: list[str], solutions: list[str]) -> list[float]:
        """Mean P(Yes) over `votes` sampled verifications of each (problem prompt, solution text)."""
        vprompts = [verifier_prompt(p, s) for p, s in zip(prompts, solutions)]
        # stop at the question mark: a one-character stop is checked per token, not by decoding text every step
        outs = self.engine.generate(
            vprompts, self.votes, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            stop=[MARK], seed=self.seed,
        )  # fmt: skip
        contexts = [vp + _rationale_of(s.text) + QUESTION for vp, samples in zip(vprompts, outs) for s in samples]
        first = self.engine.logprobs(contexts, [self.yes_first] * len(contexts))
        probs = [math.exp(lp[0]) for lp in first]
        return [sum(probs[i * self.votes : (i + 1) * self.votes]) / self.votes for i in range(len(prompts))]

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        if self.aggregate == "last":  # one verification of the whole solution; an empty one scores 0
            keep = [i for i, s in enumerate(solutions) if s]
            probs = self.p_yes([prompts[i] for i in keep], [join_steps(solutions[i], self.delimiter) for i in keep])
            out = [0.0] * len(solutions)
            for i, pr in zip(keep, probs):
                out[i] = pr
            return out
        return [aggregate_steps(v, self.aggregate, empty=0.0) for v in self.step_scores_many(prompts, solutions)]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        flat_p, flat_s, sizes = [], [], []
        for p, steps in zip(prompts, solutions):
            sizes.append(len(steps))
            for i in range(len(steps)):
                flat_p.append(p)
                flat_s.append(join_steps(steps[: i + 1], self.delimiter))
        scores = self.p_yes(flat_p, flat_s) if flat_p else []
        out, at = [], 0
        for n in sizes:
            out.append(scores[at : at + n])
            at += n
        return out

    def score_prefixes(self, prompts: list[str], prefixes: list[list[str]]) -> list[float]:
        return self.p_yes(prompts, [join_steps(s, self.delimiter) for s in prefixes])

    def score(self, problem: Problem, steps: list[str]) -> float:
        return self.score_many([problem.prompt], [steps])[0]

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.step_scores_many([problem.prompt], [steps])[0]


def _rationale_of(text: str) -> str:
    """The sampled verification without the verdict question (the engine cut the text at the question mark)."""
    return text.split(MARK)[0].removesuffix(QUESTION.split(MARK)[0])
