"""Critical steps from Monte-Carlo step values, per-step preference pairs, and their batches from sampled ids.

    values = [0.5, 0.75, 0.0, 0.0]            # Q of the problem alone, then after each step (`mc_step_values`)
    critical_step(values, correct=False)      # 1: the first pit, the step after which no rollout succeeds
    pair = step_pair(sample, values, good, bad, decode, "\\n")   # (prefix, good continuation, bad continuation)

Q(prefix) is the fraction of k rollouts from the prefix that reach a right answer; a step's advantage is Q after it
minus Q before it (Setlur et al. 2024, arXiv 2406.14532). The **critical step** of a wrong solution is its first
pit: the first step after which the value collapses to `pit` or below (no rollout succeeds, for `pit` = 0), while
the prefix before it could still succeed. In a right solution it is the step with the largest gain. A pair shares
the prefix before the critical step; the other continuation is a rollout from that same prefix, one that succeeds
(against a wrong solution) or fails (against a right one), so the pair differs exactly from the critical step on.

Everything is built from the token ids the engine sampled, never by re-tokenising text (DESIGN, "train on what was
sampled"): the context is the rollouts' `prompt_ids` (the engine's encoding of problem + prefix), the rollout's
continuation its `token_ids`, and the solution's own continuation its `token_ids` from the first token of the
critical step on (found by decoding, `token_steps`). With a tokeniser whose tokens may span a step boundary (BPE
merging a delimiter into the next word) the solution's prefix tokens can differ from the context's at the junction;
`step_pair` then still pairs the context with the solution's own tokens from the step on, and says so
(`joined=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from reasonloop.core import Sample, join_steps
from reasonloop.engine.fast import unwrap
from reasonloop.train import shared_prefix
from reasonloop.train.data import Batch
from reasonloop.train.losses import sequence_logprobs


def critical_step(values: Sequence[float], correct: bool, pit: float = 0.0) -> int | None:
    """Index of the critical step of a solution with Monte-Carlo values `values` (`len(steps) + 1` of them).

    Wrong solution: the first pit, the first step i whose value after, `values[i + 1]`, is at most `pit`, when the
    problem alone is still above it (else the policy never had a chance: None). Right solution: the step with the
    largest advantage `values[i + 1] - values[i]` (the first of equals), if positive (else None: never in doubt).

    >>> critical_step([0.5, 0.75, 0.0, 0.25, 0.0], correct=False)  # step 1 makes every rollout fail
    1
    >>> critical_step([0.25, 0.5, 1.0, 1.0], correct=True)  # step 1 gains 0.5, step 0 only 0.25
    1
    >>> critical_step([0.0, 0.0, 0.0], correct=False) is None, critical_step([1.0, 1.0], correct=True) is None
    (True, True)
    >>> critical_step([0.75, 0.25, 0.0], correct=False, pit=0.25)  # a softer collapse: at most 0.25
    0
    """
    if len(values) < 2:
        return None
    if correct:
        gains = [b - a for a, b in zip(values, values[1:])]
        best = max(range(len(gains)), key=lambda i: (gains[i], -i))
        return best if gains[best] > 0 else None
    if values[0] <= pit:
        return None
    return next((i for i in range(len(values) - 1) if values[i + 1] <= pit), None)


def splits_at_steps(text: str, steps: Sequence[str], delimiter: str) -> bool:
    """Whether `text` is exactly its `steps` joined by the delimiter (a trailing delimiter allowed, as a solution cut
    off by the token budget leaves), so that counting delimiters in its tokens finds the steps.

    >>> splits_at_steps("1+1=2\\nA: 2", ["1+1=2", "A: 2"], "\\n"), splits_at_steps("1+1=2\\n", ["1+1=2"], "\\n")
    (True, True)
    >>> splits_at_steps(" 1+1=2\\n\\nA: 2", ["1+1=2", "A: 2"], "\\n")  # stripped and empty steps shift the count
    False
    """
    return join_steps(list(steps), delimiter) == text.removesuffix(delimiter)


def token_steps(decode: Callable[[list[int]], str], token_ids: Sequence[int], delimiter: str) -> list[int]:
    """The step each completion token belongs to: the number of delimiters in the text decoded before it (a token
    holding a delimiter belongs to the step it ends; tokens after the last step, such as end-of-sequence, to it).

    >>> token_steps(lambda ids: "".join(map(chr, ids)), [ord(c) for c in "1+1=2\\nA: 2"], "\\n")
    [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    """
    return [decode(list(token_ids[:t])).count(delimiter) for t in range(len(token_ids))]


@dataclass(frozen=True)
class PreferencePair:
    """Two continuations of one context, built from sampled token ids: `chosen` reaches the right answer."""

    problem_id: str
    context_ids: list[int]  # the prompt, plus the shared prefix for a per-step pair
    chosen_ids: list[int]
    rejected_ids: list[int]
    step: int | None = None  # the critical step (the prefix has this many steps); None: whole solutions
    advantage: float = 0.0  # Q after the critical step minus Q before, in the solution it was found in
    negative: bool = True  # found in a wrong solution (its first pit), or a right one (its decisive step)
    joined: bool = True  # the solution's own prefix tokens equal the context (see the module docstring)


def step_pair(
    sample: Sample,
    values: Sequence[float],
    good: Sample | None,
    bad: Sample | None,
    decode: Callable[[list[int]], str],
    delimiter: str,
    pit: float = 0.0,
) -> PreferencePair | None:
    """The per-step pair of a graded `sample` (reward 1: right) with Monte-Carlo `values`, or None.

    `good` and `bad` are a succeeding and a failing rollout from the prefix before the critical step (graded
    `Sample`s with `prompt_ids` and `token_ids`, as `mc_step_rollouts` returns them). None when there is no
    critical step, when the needed rollout is missing, or when the sample's tokens cannot be split at its steps
    (`splits_at_steps`).
    """
    correct = sample.reward == 1.0
    c = critical_step(values, correct, pit)
    other = bad if correct else good
    if c is None or other is None or not splits_at_steps(sample.text, sample.steps, delimiter):
        return None
    at = token_steps(decode, sample.token_ids, delimiter)
    start = next((t for t, s in enumerate(at) if s >= c), len(at))
    own, context = list(sample.token_ids[start:]), list(other.prompt_ids)
    if not own:
        return None
    pair = (own, list(other.token_ids)) if correct else (list(other.token_ids), own)
    return PreferencePair(
        sample.problem_id, context, *pair, step=c, advantage=values[c + 1] - values[c], negative=not correct,
        joined=list(sample.prompt_ids) + list(sample.token_ids[:start]) == context,
    )  # fmt: skip


def solution_pairs(samples: Sequence[Sample], per_problem: int) -> list[PreferencePair]:
    """Plain DPO's pairs: whole right against whole wrong solutions of one problem (distinct texts, in sampling
    order, the i-th right with the i-th wrong), at most `per_problem` per problem.

    >>> ss = [Sample("a", t, token_ids=[i], prompt_ids=[9], reward=r)
    ...       for i, (t, r) in enumerate([("w", 0.0), ("r", 1.0), ("r", 1.0), ("v", 0.0)])]
    >>> [(p.chosen_ids, p.rejected_ids) for p in solution_pairs(ss, 4)]
    [([1], [0])]
    """
    sides: dict[str, tuple[list[Sample], list[Sample]]] = {}
    for s in samples:
        right, wrong = sides.setdefault(s.problem_id, ([], []))
        side = right if s.reward == 1.0 else wrong
        if all(t.text != s.text for t in side):
            side.append(s)
    return [
        PreferencePair(r.problem_id, list(r.prompt_ids), list(r.token_ids), list(w.token_ids), advantage=1.0)
        for right, wrong in sides.values()
        for r, w in list(zip(right, wrong))[:per_problem]
    ]


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Right-padded batch of (context ids, continuation ids) rows; the completion mask covers the continuation."""
    T = max(len(c) + len(x) for c, x in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(rows), T), dtype=torch.long)
    completion = torch.zeros((len(rows), T), dtype=torch.long)
    for r, (context, cont) in enumerate(rows):
        n = len(context) + len(cont)
        input_ids[r, :n] = torch.tensor(context + cont)
        attention[r, :n] = 1
        completion[r, len(context) : n] = 1
    return Batch(input_ids, attention, completion)


def pair_batch(pairs: Sequence[PreferencePair], pad_id: int) -> Batch:
    """[chosen..., rejected...] rows of `pairs` (2B rows), as `dpo_loss` and `step_dpo_loss` split them."""
    return pad_rows(
        [(p.context_ids, p.chosen_ids) for p in pairs] + [(p.context_ids, p.rejected_ids) for p in pairs], pad_id
    )


PACK_TOKENS = 512  # tokens packed into one row by `pair_logprobs` (its attention mask is that length squared)


def pair_logprobs(model, pairs: Sequence[PreferencePair], pad_id: int) -> torch.Tensor:
    """log pi(continuation | context) summed over the continuation's tokens, for [chosen..., rejected...]. -> (2B,)

    What `sequence_logprobs` gives on `pair_batch`'s rows (tested), computed with less work for Llama-family
    models: each distinct context goes through the layers once for both of its continuations (and for every
    pair that shares it), rows are packed without padding, and the LM head runs on continuation tokens only
    (`shared_prefix.packed_hidden`). A per-step pair's context is the prompt plus the solution up to its
    critical step, most of each row, so sharing it halves the work; packing saves the padding of the rest.
    Other models run the padded rows through transformers.
    """
    dev = next(model.parameters()).device
    if not shared_prefix.supports(model):
        b = pair_batch(pairs, pad_id)
        ids, mask = b.input_ids.to(dev), b.completion_mask.to(dev)
        return sequence_logprobs(model(input_ids=ids, attention_mask=b.attention_mask.to(dev)).logits, ids, mask)
    # packed attention is quadratic in the packed length: pack at most ~`PACK_TOKENS` tokens at a time
    chunks, size = [[]], 0
    for p in pairs:
        n = len(p.context_ids) + len(p.chosen_ids) + len(p.rejected_ids)
        if chunks[-1] and size + n > PACK_TOKENS:
            chunks.append([])
            size = 0
        chunks[-1].append(p)
        size += n
    if len(chunks) > 1:
        parts = [pair_logprobs(model, c, pad_id).view(2, -1) for c in chunks]
        return torch.cat(parts, dim=1).reshape(-1)  # [chosen..., rejected...] of all the pairs
    index: dict[tuple[int, ...], int] = {}
    group = [index.setdefault(tuple(p.context_ids), len(index)) for p in pairs] * 2
    continuations = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    hidden, row = shared_prefix.packed_hidden(model, [list(c) for c in index], continuations, group)  # (N, C), (N,)
    targets = torch.tensor([t for c in continuations for t in c], device=dev)
    logp = torch.log_softmax(unwrap(model).lm_head(hidden).float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    return torch.zeros(len(continuations), device=dev).index_add(0, row, logp)


def step_advantage_tokens(values: Sequence[float], steps_of_tokens: Sequence[int]) -> list[float]:
    """Each completion token's advantage: that of the step it belongs to, `values[s + 1] - values[s]`.

    >>> step_advantage_tokens([0.5, 1.0, 0.0], [0, 0, 1, 1, 1])
    [0.5, 0.5, -1.0, -1.0, -1.0]
    """
    last = len(values) - 2
    return [values[min(s, last) + 1] - values[min(s, last)] for s in steps_of_tokens]
