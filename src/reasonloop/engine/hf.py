"""The `hf` backend: batched sampling over a transformers model with a KV cache.

- `n` samples per prompt; the prompt is encoded once and its cache copied to the
  `n` rows (and to every row of an identical prompt), so many rollouts from one
  prefix never re-encode it.
- Rows are processed in chunks of at most `max_batch`, so KV-cache memory is
  bounded by the batch, not by `len(prompts) * n`.
- Finished rows leave the batch as soon as enough of them have finished.
- Temperature, top-p, stop strings (one step at a time with `stop=[delimiter]`),
  per-token logprobs under the untempered model.
- Randomness per row: sample j of prompt i draws its uniforms from its own
  stream, seeded by `derive_seed(seeds[i], j)` (`seeds[i]` defaults to
  `derive_seed(seed, i)`). What a row draws does not depend on the other rows of
  the call, on `max_batch`, or on the order rows finish, so a caller that keys
  `seeds` by problem (the resumable samplers do) gets the same samples whether a
  problem is sampled alone, in any batch, or after a resume.
- `counts` accumulates tokens generated, prompt tokens encoded and tokens scored.

Llama-family models run on `FastDecoder`; other architectures fall back to
`transformers.generate` per chunk (same results format, without prefix sharing).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from reasonloop.core import Sample, TokenCounts, derive_seed, prompt_keys
from reasonloop.engine import fast
from reasonloop.engine.batching import RowDecoder

ProgressFn = Callable[[int], None]


def row_uniforms(seeds: list[int], length: int) -> torch.Tensor:
    """(R, length) uniforms in [0, 1): row r's come from its own generator seeded by `seeds[r]`, so they are the
    same whatever rows are drawn with it. One generator call per row, not per decoding step."""
    out = torch.empty(len(seeds), length)
    gen = torch.Generator()  # reseeded for every row (reseeding resets its whole state)
    for r, s in enumerate(seeds):
        torch.rand(length, generator=gen.manual_seed(s), out=out[r])
    return out


def _sample_tokens(
    logits: torch.Tensor,  # (B, V) float32
    temperature: float,
    top_p: float,
    u: torch.Tensor | None,  # (B,) one uniform in [0, 1) per row; unused (may be None) when greedy
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens (B,), their logprobs under the raw model (B,))."""
    logp = torch.log_softmax(logits, dim=-1)
    if temperature <= 0:
        tok = logits.argmax(dim=-1)
    else:
        scaled = logits / temperature
        if top_p < 1.0:
            sorted_logits, order = scaled.sort(dim=-1, descending=True)
            probs = sorted_logits.softmax(dim=-1)
            # drop a token when the mass before it already reaches top_p (the top token always stays)
            drop = probs.cumsum(dim=-1) - probs >= top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
        # inverse-CDF sampling: one uniform per row (multinomial draws noise for every vocabulary entry)
        cdf = scaled.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        assert u is not None, "sampling at temperature > 0 needs one uniform per row"
        tok = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).squeeze(1)
        tok = tok.clamp_(max=cdf.shape[1] - 1)  # never a p=0 token
    return tok, logp.gather(1, tok[:, None]).squeeze(1)


def make_sample(
    tokenizer,
    name: str,
    prompt: list[int],
    toks: list[int],
    lps: list[float],
    reason: str,
    stop: tuple[str, ...],
    temperature: float,
    seed: int,
) -> Sample:
    """A `Sample` from sampled token ids, as every in-process backend writes it: the text decoded with `tokenizer`
    and cut before the first stop string (`finish_reason` "stop", `meta["stop"]` the string), the ids and logprobs
    kept whole (the token that completed a stop string or an EOS included)."""
    text = tokenizer.decode(toks, skip_special_tokens=True)
    matched = None
    if reason != "eos" and stop:
        hits = [(text.find(s), s) for s in stop if s in text]
        if hits:
            cut, matched = min(hits)
            text, reason = text[:cut], "stop"
    meta = {"model": name, "temperature": temperature, "seed": seed, "finish_reason": reason}
    if matched is not None:
        meta["stop"] = matched
    return Sample(problem_id="", text=text, token_ids=toks, logprobs=lps, prompt_ids=prompt, meta=meta)


class HFEngine:
    """Generator over a local transformers causal LM. See the module docstring."""

    def __init__(self, model, tokenizer, *, max_batch: int = 256, name: str | None = None, share_prefix: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.share_prefix = share_prefix
        self.name = name or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self.counts = TokenCounts()
        self.last_cache_bytes = 0  # KV-cache bytes the last generate call held at its peak
        self.decoder = fast.FastDecoder(model) if fast.supports(model) else None
        self.eos_ids = self._eos_ids()
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> HFEngine:
        from reasonloop.models import load_model

        model, tokenizer = load_model(path)
        return cls(model, tokenizer, name=str(path), **kwargs)

    # --- tokens -----------------------------------------------------------------
    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return [i for i in ids if i is not None]

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError("empty prompt: the engine needs at least one prompt token")
        return ids

    def _stop_table(self, stop: tuple[str, ...]) -> torch.Tensor:
        """(V,) bool: token ids whose text contains a stop string (or is an EOS); special tokens have no text."""
        if stop not in self._stop_tables:
            V = self.model.get_output_embeddings().weight.shape[0]
            table = torch.zeros(V, dtype=torch.bool)
            if stop:
                texts = self.tokenizer.convert_ids_to_tokens(list(range(min(V, len(self.tokenizer)))))
                special = set(self.tokenizer.all_special_ids)  # decoded as nothing: "<pad>" holds no "a"
                for i, t in enumerate(texts):
                    if t is not None and i not in special:
                        s = self.tokenizer.convert_tokens_to_string([t])
                        table[i] = any(x in s for x in stop)
            table[self.eos_ids] = True
            self._stop_tables[stop] = table
        return self._stop_tables[stop]

    # --- generate ----------------------------------------------------------------
    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        *,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int = 0,
        top_p: float = 1.0,
        progress: ProgressFn | None = None,
        seeds: list[int] | None = None,
    ) -> list[list[Sample]]:
        """`n` samples for each prompt; see the module docstring for the contract.

        `seeds` (one per prompt) keys each prompt's random streams; without it prompt i uses
        `derive_seed(seed, i)`. Each sample records its prompt's seed in `meta["seed"]`.
        """
        prompt_seeds = prompt_keys(prompts, n, max_new_tokens, seed, seeds)
        stop_t = tuple(s for s in (stop or []) if s)
        prompt_ids = [self.encode(p) for p in prompts]
        rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]

        def noise(take: list[int], length: int) -> torch.Tensor | None:
            """(len(take), length) uniforms of rows `take`, from each row's own stream (none when greedy)."""
            if temperature <= 0:
                return None
            return row_uniforms([derive_seed(prompt_seeds[rows[r][0]], rows[r][1]) for r in take], length)

        self.counts.calls += 1
        if self.decoder is not None:
            self.decoder.refresh()  # the model may have been trained since the last call
            decoder = RowDecoder(self.decoder, self.tokenizer.pad_token_id or 0, self.max_batch)
            results = decoder.run(
                [prompt_ids[i] for i, _ in rows],
                max_new_tokens,
                sample=lambda logits, u: _sample_tokens(logits, temperature, top_p, u),
                stops=self._stop_fn(stop_t),
                share_prefix=self.share_prefix,
                on_done=progress,
                noise=lambda take: noise(take, max_new_tokens),
            )
            self.counts.prefilled += decoder.prefilled
            self.counts.generated += decoder.generated
            self.last_cache_bytes = decoder.peak_cache_bytes
            for (i, j), res in zip(rows, results):
                reason = "eos" if res.reason == "stop" and res.tokens[-1] in self.eos_ids else res.reason
                args = (prompt_ids[i], res.tokens, res.logprobs, reason, stop_t, temperature, prompt_seeds[i])
                out[i][j] = make_sample(self.tokenizer, self.name, *args)
            return out  # type: ignore[return-value]
        for c in range(0, len(rows), self.max_batch):  # other architectures: transformers.generate per chunk
            chunk = rows[c : c + self.max_batch]
            toks, lps, reasons = self._run_chunk_hf(
                [prompt_ids[i] for i, _ in chunk],
                temperature,
                top_p,
                max_new_tokens,
                stop_t,
                noise(list(range(c, c + len(chunk))), max_new_tokens),
            )
            for (i, j), t, lp, why in zip(chunk, toks, lps, reasons):
                out[i][j] = make_sample(
                    self.tokenizer, self.name, prompt_ids[i], t, lp, why, stop_t, temperature, prompt_seeds[i]
                )
            if progress:
                progress(len(chunk))
        return out  # type: ignore[return-value]

    def _stop_fn(self, stop: tuple[str, ...]):
        """Which rows just finished: a token containing a stop string (or EOS), or decoded text ending in one."""
        table = self._stop_table(stop)
        text_stops = [s for s in stop if len(s) > 1]  # may span tokens: check the decoded tail
        window = 4 * max((len(s) for s in text_stops), default=0)

        def stops(tok: torch.Tensor, out_tok: torch.Tensor, ngen: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
            hit = table[tok]
            if text_stops:
                for b in live.tolist():
                    if not hit[b]:
                        k = int(ngen[b])
                        tail = self.tokenizer.decode(out_tok[b, max(0, k - window) : k], skip_special_tokens=True)
                        hit[b] = any(s in tail for s in text_stops)
            return hit

        return stops

    def _run_chunk_hf(self, prompts: list[list[int]], temperature, top_p, max_new, stop, uniforms):
        """Fallback for architectures the fast path does not cover: `transformers.generate`, greedy over logits that
        `_sample_tokens` has already decided (our sampler, with each row's own uniforms, so both paths draw alike)."""
        from transformers import LogitsProcessorList

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        l_max = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), l_max), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, l_max - len(p) :] = torch.tensor(p)
            mask[r, l_max - len(p) :] = 1

        def pick(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # (B, T), (B, V) -> (B, V)
            u = uniforms[:, input_ids.shape[1] - l_max] if uniforms is not None else None
            tok, _ = _sample_tokens(scores.float(), temperature, top_p, u)
            return torch.full_like(scores, float("-inf")).scatter_(1, tok[:, None], 0.0)

        with torch.inference_mode():
            res = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                eos_token_id=self.eos_ids,
                pad_token_id=pad,
                output_logits=True,
                return_dict_in_generate=True,
                do_sample=False,
                logits_processor=LogitsProcessorList([pick]),
            )
        self.counts.prefilled += sum(len(p) for p in prompts)
        new = res.sequences[:, l_max:]  # (B, T)
        logp = torch.log_softmax(torch.stack(res.logits, dim=1).float(), dim=-1)  # (B, T, V)
        stop_table = self._stop_table(stop)
        toks, lps, reasons = [], [], []
        for r in range(len(prompts)):
            row = new[r].tolist()
            end = next((t + 1 for t, x in enumerate(row) if stop_table[x]), len(row))
            reason = (
                "length"
                if end == len(row) and not stop_table[row[-1]]
                else ("eos" if row[end - 1] in self.eos_ids else "stop")
            )
            toks.append(row[:end])
            lps.append(logp[r, torch.arange(end), new[r, :end]].tolist())
            reasons.append(reason)
            self.counts.generated += end
        return toks, lps, reasons

    # --- scoring -----------------------------------------------------------------
    @torch.inference_mode()
    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Log-probability of each completion token given its prompt (completion tokenised on its own)."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        out: list[list[float]] = []
        for c in range(0, len(prompts), self.max_batch):
            ps = [self.encode(p) for p in prompts[c : c + self.max_batch]]
            cs = [self.tokenizer(x, add_special_tokens=False)["input_ids"] for x in completions[c : c + self.max_batch]]
            out.extend(self._score_chunk(ps, cs))
        return out

    @torch.inference_mode()
    def next_token_logprobs(self, segments: list[list[str]], token_ids: list[int]) -> list[list[list[float]]]:
        """Log-probabilities of `token_ids` as the next token after each segment of each row, one forward per row.

        A row is a prompt followed by segments that continue it; each segment is
        tokenised on its own (as `logprobs` tokenises a completion), so the token
        after segment i is the first token of segment i+1. Returns (rows, segments,
        len(token_ids)). Prompt tokens count as prefilled, the rest as scored.
        """
        out: list[list[list[float]]] = []
        ids = torch.tensor(token_ids, dtype=torch.long)
        for c in range(0, len(segments), self.max_batch):
            rows = segments[c : c + self.max_batch]
            pieces = [[self.encode(r[0])] + [self.tokenizer(x, add_special_tokens=False)["input_ids"] for x in r[1:]]
                      for r in rows]  # fmt: skip
            logp = self._forward_logprobs([sum(p, []) for p in pieces])  # (B, T, V)
            for r, p in enumerate(pieces):
                ends = torch.tensor([len(x) for x in p]).cumsum(0) - 1  # the last token of each segment
                out.append(logp[r, ends][:, ids].tolist())
                self.counts.prefilled += len(p[0])
                self.counts.scored += sum(len(x) for x in p[1:])
        return out

    def _forward_logprobs(self, full: list[list[int]]) -> torch.Tensor:
        """Log-softmax over the vocabulary at every position of right-padded rows: (B, T, V)."""
        pad = self.tokenizer.pad_token_id or 0
        l_max = max(len(f) for f in full)
        ids = torch.full((len(full), l_max), pad, dtype=torch.long)
        for r, f in enumerate(full):
            ids[r, : len(f)] = torch.tensor(f)
        if self.decoder is not None:
            self.decoder.refresh()
            cache = self.decoder.new_cache(len(full), l_max)
            logits = self.decoder.forward(ids, torch.zeros(len(full), dtype=torch.long), cache)  # (B, T, V)
        else:
            mask = (torch.arange(l_max)[None] < torch.tensor([len(f) for f in full])[:, None]).long()
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        return torch.log_softmax(logits, dim=-1)

    def _score_chunk(self, ps: list[list[int]], cs: list[list[int]]) -> list[list[float]]:
        logp = self._forward_logprobs([p + c for p, c in zip(ps, cs)])  # (B, T, V)
        out = []
        for r, (p, c) in enumerate(zip(ps, cs)):
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            out.append(logp[r, pos, torch.tensor(c, dtype=torch.long)].tolist())
            self.counts.scored += len(c)
            self.counts.prefilled += len(p)
        return out
