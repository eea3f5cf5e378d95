"""A `Generator` that thinks before every token it writes (Quiet-STaR inference), and returns only the text.

    engine = QuietStarEngine.from_pretrained("runs/qs/checkpoints/final", n_ahead=4)
    engine.generate(["Q: 9*3-5\\n"], temperature=0.0, max_new_tokens=40)    # hidden thoughts, visible text

Before each generated token the model writes a thought after the text so far,
``<|startthought|> c_1 .. c_n <|endthought|>`` (greedy by default, `thought_temperature` to sample), and the next
token is drawn from the mixed prediction base + w * (post-thought - base) of `QuietStarModel`. The thought is then
dropped: it is neither returned nor kept in the context of later tokens. `n_ahead=0` gives the same model without
thoughts, so comparisons use one engine.

Compute: `counts.generated` counts every token the model wrote, thoughts included (n_ahead + 2 per visible token:
the thought and its two markers), so a comparison at equal compute can charge thinking its price. `logprobs` scores a
completion under the mixed prediction with one greedy thought per scored position (all positions at once, the
diagonal mask); its thought tokens count as generated too.

Simple rather than fast: each thought token is a forward pass over the whole row (no KV cache), and rows are left
padded and decoded together. Sampling follows the `hf` backend's contract: row j of prompt i draws its uniforms from
its own stream `derive_seed(seeds[i], j)`, so a sample does not depend on the rows it shares a batch with.
"""

from __future__ import annotations

import os

import torch

from reasonloop.core import Sample, TokenCounts, derive_seed, prompt_keys
from reasonloop.engine.hf import _sample_tokens, make_sample, row_uniforms
from reasonloop.models.quiet_star import QuietStarModel, float_mask


class QuietStarEngine:
    """Generator over a `QuietStarModel` with hidden thoughts. See the module docstring."""

    def __init__(
        self,
        model: QuietStarModel,
        *,
        n_ahead: int,
        thought_temperature: float = 0.0,
        max_batch: int = 64,
        name: str | None = None,
    ):
        if n_ahead < 0:
            raise ValueError(f"n_ahead must be >= 0, got {n_ahead}")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.n_ahead = n_ahead
        self.thought_temperature = thought_temperature
        self.max_batch = max_batch
        self.name = name or f"quiet-star(n_ahead={n_ahead})"
        self.counts = TokenCounts()
        self.device = next(model.parameters()).device
        eos = model.lm.generation_config.eos_token_id if model.lm.generation_config else None
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = [i for i in (eos if isinstance(eos, list) else [eos]) if i is not None]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> QuietStarEngine:
        return cls(QuietStarModel.from_pretrained(path), name=str(path), **kwargs)

    # --- one decoding step ------------------------------------------------------------------------------------------
    def _forward_last(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state (R, H) and logits (R, V) at the last token of each left-padded row."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        L, dev = max(len(r) for r in rows), self.device
        ids = torch.tensor([[pad] * (L - len(r)) + r for r in rows], device=dev)  # (R, L)
        real = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows], dtype=torch.bool, device=dev)  # (R, L)
        pos = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (R, L)
        allowed = torch.tril(torch.ones(L, L, dtype=torch.bool, device=dev))[None] & real[:, None, :]  # (R, L, L)
        mask = float_mask(allowed, len(rows), self.model.lm.get_input_embeddings().weight.dtype)
        h, logits = self.model.hidden_and_logits(ids, pos, mask)
        return h[:, -1], logits[:, -1]

    def _next_logits(self, rows: list[list[int]], thought_u: torch.Tensor | None) -> torch.Tensor:
        """(R, V) logits of the next visible token: the base model's, or mixed with a hidden thought per row."""
        h_base, base = self._forward_last(rows)
        if self.n_ahead == 0:
            return base
        m = self.model
        thoughts = [[*r, m.start_id] for r in rows]
        for i in range(self.n_ahead):
            _, logits = self._forward_last(thoughts)  # (R, V)
            u = None if thought_u is None else thought_u[:, i]
            tok, _ = _sample_tokens(logits.cpu(), self.thought_temperature, 1.0, u)
            thoughts = [[*t, int(x)] for t, x in zip(thoughts, tok)]
        h_thought, talk = self._forward_last([[*t, m.end_id] for t in thoughts])
        w = m.mixing_head(h_base, h_thought)[:, None]  # (R, 1)
        self.counts.generated += len(rows) * (self.n_ahead + 2)
        return base + w * (talk - base)

    # --- the protocol -----------------------------------------------------------------------------------------------
    @torch.no_grad()
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
        seeds: list[int] | None = None,
    ) -> list[list[Sample]]:
        """`n` samples per prompt with hidden thoughts; see the module docstring."""
        prompt_seeds = prompt_keys(prompts, n, max_new_tokens, seed, seeds)
        stop_t = [s for s in (stop or []) if s]
        prompt_ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        self.counts.calls += 1
        for c in range(0, len(rows), self.max_batch):
            chunk = rows[c : c + self.max_batch]
            row_seeds = [derive_seed(prompt_seeds[i], j) for i, j in chunk]
            u = row_uniforms(row_seeds, max_new_tokens) if temperature > 0 else None  # (R, max_new)
            tu = None
            if self.thought_temperature > 0 and self.n_ahead:
                tu = row_uniforms([derive_seed(s, "thought") for s in row_seeds], max_new_tokens * self.n_ahead)
                tu = tu.view(len(chunk), max_new_tokens, self.n_ahead)
            toks: list[list[int]] = [[] for _ in chunk]
            lps: list[list[float]] = [[] for _ in chunk]
            reason = ["length"] * len(chunk)
            live = list(range(len(chunk)))
            self.counts.prefilled += sum(len(prompt_ids[i]) for i, _ in chunk)
            for s in range(max_new_tokens):
                seqs = [prompt_ids[chunk[r][0]] + toks[r] for r in live]
                logits = self._next_logits(seqs, None if tu is None else tu[live, s])
                tok, lp = _sample_tokens(logits.cpu(), temperature, top_p, None if u is None else u[live, s])
                still = []
                for r, t, p in zip(live, tok.tolist(), lp.tolist()):
                    toks[r].append(t)
                    lps[r].append(p)
                    self.counts.generated += 1
                    if t in self.eos_ids:
                        reason[r] = "eos"
                    elif stop_t and any(
                        x in self.tokenizer.decode(toks[r][-16:], skip_special_tokens=True) for x in stop_t
                    ):
                        reason[r] = "stop"
                    else:
                        still.append(r)
                live = still
                if not live:
                    break
            for r, (i, j) in enumerate(chunk):
                args = (prompt_ids[i], toks[r], lps[r], reason[r], tuple(stop_t), temperature, prompt_seeds[i])
                out[i][j] = make_sample(self.tokenizer, self.name, *args)
                out[i][j].meta["n_ahead"] = self.n_ahead
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Log-probability of each completion token under the mixed prediction (one greedy thought per position)."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        out: list[list[float]] = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for c in range(0, len(prompts), self.max_batch):
            ps = [self.tokenizer(p)["input_ids"] for p in prompts[c : c + self.max_batch]]
            cs = [self.tokenizer(x, add_special_tokens=False)["input_ids"] for x in completions[c : c + self.max_batch]]
            full = [p + x for p, x in zip(ps, cs)]
            T = max(len(f) for f in full)
            ids = torch.tensor([f + [pad] * (T - len(f)) for f in full], device=self.device)  # (B, T) right-padded
            if self.n_ahead:
                thoughts = self.model.sample_thoughts(ids, self.n_ahead, temperature=0.0)
                logits = self.model.forward_with_thoughts(ids, thoughts, 1).mixed_logits[:, :, 0]  # (B, T, V)
            else:
                logits = self.model.hidden_and_logits(
                    ids, torch.arange(T, device=ids.device)[None].expand_as(ids), None
                )[1]
            logp = torch.log_softmax(logits, dim=-1).cpu()
            for r, (p, x) in enumerate(zip(ps, cs)):
                pos = torch.arange(len(p) - 1, len(p) + len(x) - 1)
                out.append(logp[r, pos, torch.tensor(x, dtype=torch.long)].tolist())
                self.counts.prefilled += len(p)
                self.counts.scored += len(x)
                self.counts.generated += len(x) * (self.n_ahead + 2) if self.n_ahead else 0
        return out
