"""Continuous batching over `FastDecoder`: a fixed set of slots, refilled in place as rows finish.

Each row is one sample of one prompt. At most `max_batch` rows are in flight,
each in a slot of a preallocated cache of `longest prompt + max_new` positions.
When a row finishes (end of sequence, a stop string, or the token budget) the
next waiting row takes its slot at once: only that row's prompt cache is copied
in; nothing else moves. A row's prompt cache comes from a prefill computed once
per distinct prompt (prompts are prefilled a group at a time, ahead of need),
so n samples, or many rollouts from one prefix, encode the prompt once. When no
row is left waiting, finished slots are dropped from the batch once they are an
eighth of it, so the tail of long rows runs on a small batch.

Randomness is per row: a row brings its own `max_new` uniforms (`noise`) into
its slot, and its t-th token uses the t-th of them, so what a row draws does not
depend on the slot it lands in, on its neighbours, or on when slots are dropped.

Memory: `max_batch` slots of cache plus the prefill of one group of prompts,
whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from reasonloop.engine.fast import Cache, FastDecoder

# logits (B, V), one uniform per slot (B,) or None -> tokens (B,), logprobs (B,)
Sampler = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
NoiseFn = Callable[[list[int]], torch.Tensor | None]  # rows -> their (len(rows), max_new) uniforms, or None
StopFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]  # tok, out_tok, ngen, live -> (B,) bool


@dataclass
class RowResult:
    tokens: list[int]
    logprobs: list[float]
    reason: str  # "stop" (a stop token or string, EOS included) or "length"


@dataclass
class _Prefill:
    """The prefill of a group of distinct prompts; rows copy their slice of it."""

    cache: Cache  # per layer (U, H_kv, L_max, D)
    logits: torch.Tensor  # (U, V) next-token logits after each prompt
    lengths: list[int]


class RowDecoder:
    """Decode many rows with continuous batching; `run` returns one `RowResult` per row."""

    def __init__(self, decoder: FastDecoder, pad_id: int, max_batch: int, prefill_group: int = 64):
        self.dec = decoder
        self.pad_id = pad_id
        self.max_batch = max_batch
        self.prefill_group = prefill_group
        self.prefilled = 0  # prompt tokens encoded
        self.generated = 0  # tokens sampled for live rows
        self.peak_cache_bytes = 0  # slot cache + the largest prefill group held at once

    def _prefill(self, prompts: list[tuple[int, ...]]) -> _Prefill:
        lens = torch.tensor([len(p) for p in prompts])
        ids = torch.full((len(prompts), int(lens.max())), self.pad_id, dtype=torch.long)
        for u, p in enumerate(prompts):
            ids[u, : len(p)] = torch.tensor(p)
        cache = self.dec.new_cache(len(prompts), ids.shape[1])
        self._group_bytes = max(self._group_bytes, _nbytes(cache))
        logits = self.dec.forward(ids, torch.zeros(len(prompts), dtype=torch.long), cache, logits_at=lens - 1)
        self.prefilled += int(lens.sum())
        return _Prefill(cache, logits, lens.tolist())

    @torch.inference_mode()
    def run(
        self,
        row_prompts: list[list[int]],
        max_new: int,
        sample: Sampler,
        stops: StopFn,
        share_prefix: bool = True,
        on_done: Callable[[int], None] | None = None,
        noise: NoiseFn | None = None,
    ) -> list[RowResult]:
        n_rows = len(row_prompts)
        results: list[RowResult | None] = [None] * n_rows
        # distinct prompts ("uids"), in order of first use
        keys: dict[tuple[int, ...], int] = {}
        if share_prefix:
            row_uid = [keys.setdefault(tuple(p), len(keys)) for p in row_prompts]
            uid_prompt = list(keys)
        else:
            row_uid, uid_prompt = list(range(n_rows)), [tuple(p) for p in row_prompts]
        rows_left = [0] * len(uid_prompt)
        for u in row_uid:
            rows_left[u] += 1
        home: dict[int, tuple[_Prefill, int]] = {}  # uid -> (its prefill group, index in the group)
        next_uid = 0  # uids [next_uid, ...) are not prefilled yet
        next_row = 0  # rows [next_row, n_rows) are waiting

        B = min(self.max_batch, n_rows)
        t_max = max(len(p) for p in uid_prompt) + max_new
        cache = self.dec.slot_cache(B, t_max)
        slot_bytes, self._group_bytes = _nbytes(cache), 0
        rows = torch.zeros(B, dtype=torch.long)  # row in each slot
        pos = torch.zeros(B, dtype=torch.long)  # cache position of the slot's next token
        ngen = torch.zeros(B, dtype=torch.long)  # tokens sampled so far
        alive = torch.zeros(B, dtype=torch.bool)
        out_tok = torch.zeros(B, max_new, dtype=torch.long)
        out_lp = torch.zeros(B, max_new)
        slot_u: torch.Tensor | None = None  # (B, max_new) the uniforms of the row in each slot
        logits: torch.Tensor | None = None

        while True:
            # 1. refill free slots with waiting rows (in place)
            free = torch.nonzero(~alive).flatten().tolist()
            if free and next_row < n_rows:
                take = list(range(next_row, min(n_rows, next_row + len(free))))
                next_row += len(take)
                while any(row_uid[r] not in home for r in take):
                    group_uids = list(
                        range(next_uid, min(len(uid_prompt), next_uid + max(self.prefill_group, len(take))))
                    )
                    next_uid += len(group_uids)
                    group = self._prefill([uid_prompt[u] for u in group_uids])
                    for i, u in enumerate(group_uids):
                        home[u] = (group, i)
                slots = torch.tensor(free[: len(take)])
                by_group: dict[int, tuple[_Prefill, list[int], list[int]]] = {}
                for s, r in zip(slots.tolist(), take):
                    group, i = home[row_uid[r]]
                    by_group.setdefault(id(group), (group, [], []))[1].append(s)
                    by_group[id(group)][2].append(i)
                    rows_left[row_uid[r]] -= 1
                    if rows_left[row_uid[r]] == 0:
                        del home[row_uid[r]]  # a group is freed when no uid refers to it
                if logits is None:
                    logits = torch.zeros(B, next(iter(by_group.values()))[0].logits.shape[1])
                for group, s_list, i_list in by_group.values():
                    s_t, i_t, L = torch.tensor(s_list), torch.tensor(i_list), group.cache[0][0].shape[2]
                    for (k, v), (gk, gv) in zip(cache, group.cache):
                        k[s_t, :, :L] = gk[i_t]
                        v[s_t, :, :L] = gv[i_t]
                    logits[s_t] = group.logits[i_t]
                    pos[s_t] = torch.tensor([group.lengths[i] for i in i_list])
                rows[slots] = torch.tensor(take)
                u_take = noise(take) if noise is not None else None
                if u_take is not None:
                    if slot_u is None:
                        slot_u = torch.zeros(B, max_new)
                    slot_u[slots] = u_take
                ngen[slots] = 0
                alive[slots] = True
            # 2. with nobody waiting, drop finished slots once they are an eighth of the batch
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if next_row >= n_rows and B - n_alive >= max(1, B // 8):
                keep = torch.nonzero(alive).flatten()
                t_keep = int((pos[keep] + max_new - ngen[keep]).max()) + 1
                cache = FastDecoder.select(cache, keep, t_keep)
                rows, pos, ngen, alive = rows[keep], pos[keep], ngen[keep], alive[keep]
                out_tok, out_lp, logits = out_tok[keep], out_lp[keep], logits[keep]
                slot_u = slot_u[keep] if slot_u is not None else None
                B = len(keep)
            # 3. sample one token per slot; record it for live rows
            assert logits is not None
            # a finished slot waiting to be dropped has ngen == max_new: clamp its (unused) draw into range
            u = slot_u.gather(1, ngen.clamp(max=max_new - 1)[:, None]).squeeze(1) if slot_u is not None else None
            tok, lp = sample(logits, u)  # (B,), (B,)
            live = torch.nonzero(alive).flatten()
            out_tok[live, ngen[live]] = tok[live]
            out_lp[live, ngen[live]] = lp[live]
            ngen[live] += 1
            self.generated += len(live)
            stopped = alive & stops(tok, out_tok, ngen, live)
            finished = stopped | (alive & (ngen >= max_new))
            done = torch.nonzero(finished).flatten().tolist()
            for b in done:
                k = int(ngen[b])
                results[int(rows[b])] = RowResult(
                    out_tok[b, :k].tolist(), out_lp[b, :k].tolist(), "stop" if stopped[b] else "length"
                )
            if done and on_done is not None:
                on_done(len(done))
            alive &= ~finished
            if not bool(alive.any()) and next_row >= n_rows:
                break
            # 4. one decoding step; finished slots keep rewriting one position until refilled or dropped
            logits = self.dec.forward(tok[:, None], pos, cache, logits_at=torch.zeros(B, dtype=torch.long))
            pos += alive.long()
        self.peak_cache_bytes = slot_bytes + self._group_bytes
        return results  # type: ignore[return-value]


def _nbytes(cache: Cache) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in cache)
