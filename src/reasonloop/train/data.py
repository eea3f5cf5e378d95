"""Tokenise (prompt, completion) pairs into right-padded batches with a completion mask.

The prompt and the completion are tokenised separately and concatenated, so the
completion's tokens are exactly those the engine would score with
`Generator.logprobs(prompt, completion)`. An end-of-sequence token is appended
to the completion by default, so fine-tuning teaches the model to stop.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T) 1 for real tokens
    completion_mask: torch.Tensor  # (B, T) 1 for completion tokens (trained on)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def encode_pairs(
    tokenizer, prompts: list[str], completions: list[str], *, add_eos: bool = True, max_length: int | None = None
) -> Batch:
    """Batch of prompt+completion sequences. Sequences longer than `max_length` lose their end."""
    if len(prompts) != len(completions):
        raise ValueError("prompts and completions must have the same length")
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    rows: list[tuple[list[int], list[int]]] = []
    for p, c in zip(prompts, completions):
        p_ids = tokenizer(p)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + eos
        ids, comp = p_ids + c_ids, [0] * len(p_ids) + [1] * len(c_ids)
        if max_length is not None:
            ids, comp = ids[:max_length], comp[:max_length]
        rows.append((ids, comp))
    T = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), T), dtype=torch.long)
    completion = torch.zeros((len(rows), T), dtype=torch.long)
    for r, (ids, comp) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        completion[r, : len(ids)] = torch.tensor(comp)
    return Batch(input_ids, attention, completion)


def shuffled_batch(i: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Indices of batch `i` over `n` items, reshuffled every epoch (deterministic for a seed, so resumes agree).

    >>> [shuffled_batch(i, 5, 2, seed=0) for i in range(3)] == [shuffled_batch(i, 5, 2, seed=0) for i in range(3)]
    True
    >>> sorted(sum((shuffled_batch(i, 5, 2, seed=0) for i in range(3)), []))
    [0, 1, 2, 3, 4]
    """
    epoch, k = divmod(i, math.ceil(n / batch_size))
    order = list(range(n))
    random.Random(seed * 7919 + epoch).shuffle(order)
    return order[k * batch_size : (k + 1) * batch_size]
