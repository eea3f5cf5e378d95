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

GenRM-CoT with step checks (`check_pairs`, `GenRMVerifier(checks=True)`): the
rationale checks the candidate instead of re-solving the problem, one line per
step, each ending in a per-step verdict (`...: ok` or `...: wrong`), stopping at
the first wrong step, then `Correct? Yes/No`. The built-in worlds write these
lines from their exact checkers (`task.verification_checks`), standing in for
the paper's rationales from a stronger model. Scoring samples `votes`
verifications, then one forward pass over each reads both P(Yes) at the end and
P(ok) at every step verdict, so step scores cost nothing extra (see
`GenRMVerifier`). Departures from the paper: the rationales are exact rather
than a stronger model's, and they stop at the first wrong step (ProcessBench's
question) rather than commenting on every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reasonloop.core import Problem, Sample, join_steps, split_steps
from reasonloop.engine import HFEngine
from reasonloop.models import load_model, save_model
from reasonloop.train import TrainConfig, sft_on_pairs
from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps

QUESTION = "\nCorrect? "  # the verdict follows this
MARK = "?"  # where a sampled verification stops (the end of QUESTION)
HEADER = "\nVerify:\n"  # the verification rationale follows the candidate after this
STEP_OK, STEP_WRONG = "ok", "wrong"  # a step check's verdict, after ": " at the end of its line


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


def check_rationale(checks: Sequence[tuple[str, bool]]) -> str:
    """The verification text for a world's step checks (`task.verification_checks`), verdict included.

    >>> print(check_rationale([("value 1, next +1; 1+1=2", True), ("answer 3 not 2", False)]))
    value 1, next +1; 1+1=2: ok
    answer 3 not 2: wrong
    Correct? No
    """
    lines = [f"{note}: {STEP_OK if ok else STEP_WRONG}" for note, ok in checks]
    return "\n".join(lines) + QUESTION + ("Yes" if checks and all(ok for _, ok in checks) else "No")


def check_pairs(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    checks: Callable[[Problem, list[str]], list[tuple[str, bool]]],
    delimiter: str,
) -> list[tuple[str, str]]:
    """(verifier prompt, step-check rationale + verdict) for every sample of a known problem (GenRM-CoT texts)."""
    by_id = {p.id: p for p in problems}
    return [
        (verifier_prompt(by_id[s.problem_id].prompt, s.text), check_rationale(checks(by_id[s.problem_id], steps)))
        for s in samples
        if s.problem_id in by_id
        for steps in [s.steps or split_steps(s.text, delimiter)]
    ]


def parse_checks(rationale: str) -> list[tuple[int, bool]]:
    """Where each step verdict of a sampled rationale starts (a character offset) and whether it says `ok`.

    Lines that do not end in `: ok` or `: wrong` are not checks and are skipped.

    >>> parse_checks("have 3 4; 3+4=7: ok\\nanswer 7 not 8: wrong")
    [(17, True), (36, False)]
    """
    out, at = [], 0
    for line in rationale.split("\n"):
        for word, ok in ((STEP_OK, True), (STEP_WRONG, False)):
            if line.endswith(": " + word):
                out.append((at + len(line) - len(word), ok))
        at += len(line) + 1
    return out


def combine_step_checks(p_ok: Sequence[float], n_steps: int, p_yes: float) -> list[float]:
    """Step scores from one verification: the running product of P(ok) over its step checks, in order.

    Check i is about step i (the rationale writes one per step); steps the
    verification did not reach (it stopped at a wrong one, or ran out) get the
    smaller of the last product and the final P(Yes); checks past the last step
    (a closing "no answer") only move P(Yes).

    >>> combine_step_checks([0.9, 0.5], 3, 0.4)
    [0.9, 0.45, 0.4]
    """
    out, run = [], 1.0
    for i in range(n_steps):
        if i < len(p_ok):
            run *= p_ok[i]
            out.append(run)
        else:
            out.append(min(run, p_yes))
    return out


@dataclass(frozen=True)
class Verdicts:
    """What the sampled verifications of one solution said (one entry per verification)."""

    p_yes: list[float]  # (k,) P(Yes) after each verification
    step_scores: list[list[float]]  # (k, n_steps) `combine_step_checks` of each verification
    tokens: list[int]  # (k,) tokens each verification cost: generated plus scored in its forward pass
    prompt_tokens: int  # the verifier prompt's tokens, encoded once for all k


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

    Re-solving GenRM (`checks=False`): `score_steps` applies the same question
    to each step prefix (a prefix is judged as if it were the whole solution), so
    step scores are comparable with a PRM's but cost one verification per prefix.

    Step-checking GenRM-CoT (`checks=True`): each of the `votes` sampled
    verifications is read back in one forward pass that gives P(Yes) at its end
    and P(ok) at each of its step verdicts; the score is the mean P(Yes), a step's
    score the mean over verifications of `combine_step_checks`. `verdicts` returns
    the per-verification figures (for verification-time scaling), and both
    `score_many` and `step_scores_many` reuse them, so a solution scored both
    ways is verified once. Scores depend on the seed and on the batch they are
    sampled in, never on earlier calls.
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
        checks: bool = False,
    ):
        if aggregate not in STEP_AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(STEP_AGGREGATES)}")
        self.engine, self.votes, self.temperature, self.max_new_tokens = engine, votes, temperature, max_new_tokens
        self.delimiter, self.aggregate, self.seed, self.checks = step_delimiter, aggregate, seed, checks
        self.yes_first = self._first_token("Yes")
        self.yes_id, self.ok_id = self._first_id("Yes"), self._first_id(STEP_OK)
        self._memo: dict[tuple[str, tuple[str, ...]], Verdicts] = {}

    def _first_token(self, word: str) -> str:
        ids = self.engine.tokenizer(word, add_special_tokens=False)["input_ids"]
        return word if len(ids) == 1 else self.engine.tokenizer.decode(ids[:1])

    def _first_id(self, word: str) -> int:
        return self.engine.tokenizer(word, add_special_tokens=False)["input_ids"][0]

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

    def verdicts(self, prompts: list[str], solutions: list[list[str]]) -> list[Verdicts]:
        """`votes` step-checking verifications of each (problem prompt, steps), sampled in one batch."""
        keys = [(p, tuple(s)) for p, s in zip(prompts, solutions)]
        todo = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if todo:
            if len(self._memo) > 100_000:  # bounded: search scores ever new prefixes
                self._memo.clear()
            for k, v in zip(todo, self._verify([p for p, _ in todo], [list(s) for _, s in todo])):
                self._memo[k] = v
        return [self._memo[k] for k in keys]

    def _verify(self, prompts: list[str], solutions: list[list[str]]) -> list[Verdicts]:
        vprompts = [verifier_prompt(p, join_steps(s, self.delimiter)) for p, s in zip(prompts, solutions)]
        outs = self.engine.generate(
            vprompts, self.votes, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            stop=[MARK], seed=self.seed,
        )  # fmt: skip
        rows, parsed = [], []
        for vp, samples in zip(vprompts, outs):
            for s in samples:
                text = _rationale_of(s.text) + QUESTION
                cuts = [at for at, _ in parse_checks(text)]
                bounds = [0, *cuts, len(text)]
                rows.append([vp] + [text[a:b] for a, b in zip(bounds, bounds[1:])])
                parsed.append(len(cuts))
        lps = self.engine.next_token_logprobs(rows, [self.ok_id, self.yes_id])  # (rows, segments, 2)
        out, r = [], 0
        for steps, samples in zip(solutions, outs):
            p_yes, step_scores, tokens = [], [], []
            for s in samples:
                lp, n = lps[r], parsed[r]
                p_ok = [math.exp(lp[1 + i][0]) for i in range(n)]  # after the segment that ends at verdict i
                p_yes.append(math.exp(lp[-1][1]))
                step_scores.append(combine_step_checks(p_ok, len(steps), p_yes[-1]))
                tokens.append(len(s.token_ids) + len(s.prompt_ids) + len(s.token_ids))  # sampled, then read back
                r += 1
            out.append(Verdicts(p_yes, step_scores, tokens, len(samples[0].prompt_ids)))
        return out

    def score_many(self, prompts: list[str], solutions: list[list[str]]) -> list[float]:
        if self.checks and self.aggregate == "last":  # the mean P(Yes); an empty solution scores 0
            vs = iter(self.verdicts(*_nonempty(prompts, solutions)))
            return [_mean(next(vs).p_yes) if s else 0.0 for s in solutions]
        if self.aggregate == "last":  # one verification of the whole solution; an empty one scores 0
            keep = [i for i, s in enumerate(solutions) if s]
            probs = self.p_yes([prompts[i] for i in keep], [join_steps(solutions[i], self.delimiter) for i in keep])
            out = [0.0] * len(solutions)
            for i, pr in zip(keep, probs):
                out[i] = pr
            return out
        return [aggregate_steps(v, self.aggregate, empty=0.0) for v in self.step_scores_many(prompts, solutions)]

    def step_scores_many(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        if self.checks:
            vs = iter(self.verdicts(*_nonempty(prompts, solutions)))
            return [_mean_rows(next(vs).step_scores) if s else [] for s in solutions]
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
        if self.checks:  # how likely every step so far is right: a prefix has no answer yet, so P(Yes) would be ~0
            return [s[-1] if s else 0.0 for s in self.step_scores_many(prompts, prefixes)]
        return self.p_yes(prompts, [join_steps(s, self.delimiter) for s in prefixes])

    def score(self, problem: Problem, steps: list[str]) -> float:
        return self.score_many([problem.prompt], [steps])[0]

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.step_scores_many([problem.prompt], [steps])[0]


def _rationale_of(text: str) -> str:
    """The sampled verification without the verdict question (the engine cut the text at the question mark)."""
    return text.split(MARK)[0].removesuffix(QUESTION.split(MARK)[0])


def _nonempty(prompts: list[str], solutions: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    keep = [i for i, s in enumerate(solutions) if s]
    return [prompts[i] for i in keep], [solutions[i] for i in keep]


def _mean_rows(rows: list[list[float]]) -> list[float]:
    """Column means of equal-length rows: (k, n) -> (n,)."""
    return [_mean(list(col)) for col in zip(*rows)]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)
