"""Quiet-STaR's model parts (Zelikman et al. 2024, "Quiet-STaR: Language Models Can Teach Themselves to Think Before
Speaking", arXiv 2403.09629) on any Hugging Face causal LM whose attention takes a custom 4-D mask (Llama, Qwen2,
Mistral, the nano model):

- learned `<|startthought|>` / `<|endthought|>` tokens added to the vocabulary (`add_thought_tokens`);
- a thought of `n_ahead` tokens after *every* position of a sequence, all positions at once, with a diagonal
  attention mask (`thought_attention_mask`, `QuietStarModel.sample_thoughts`);
- the mixing head, an MLP over [h_base; h_thought] giving a weight w in [0, 1] per position, and the mixed
  prediction  logits = base + w * (thought - base)  (`MixingHead`, `QuietStarModel.forward_with_thoughts`).

Layout of one forward pass with thoughts (T text positions, G = n_ahead + 1 + n_talk groups after the text)::

    group 0          x_0 ... x_{T-1}                  the text, causal
    group 1          <start> at every position t
    groups 2..n+1    thought token c_{t,1} .. c_{t,n}
    group n+2        <end>                            its output predicts x_{t+1}
    groups n+3..     x_{t+1} .. x_{t+n_talk-1}        teacher-forced: the outputs predict x_{t+2} .. x_{t+n_talk}

Slot (g, t) sits at index g*T + t and position t + g; it attends to the text up to x_t and to the slots (1..g, t) of
its own thought, nothing else (each thought sees its own context and itself). A thought token's output predicts the
next thought token, as in ordinary decoding, so thoughts sampled this way are exactly those sampled position by
position with ordinary forward passes (tested), at n_ahead forward passes of T tokens instead of T * n_ahead.

Departures from the paper and its reference code, which are ours to state:

- The thought tokens are rows of the embedding matrix (the vocabulary grows by two), initialised to the embedding of
  the first token of "---" (the paper's choice, a dash as writers use for a pause; the reference's
  `initial_start_token`), or to the mean embedding when the tokenizer has no such token. The reference's 100x gradient scale on
  these two embeddings is not reproduced.
- `n_ahead` counts the sampled thought tokens only; the reference's `n_ahead` also counts <start> and <end>.
- The mixing weight is w = clamp(z, 0, 1) of the MLP's output z, whose last layer starts at zero, so training starts
  exactly at the base model's predictions. The clamp's gradient is passed straight through (dw/dz = 1 everywhere):
  with the plain clamp, early thoughts (useless, so mixing them in hurts) drive z below 0 at every position within a
  few dozen steps, after which no gradient reaches the head again. Even so, on the nano model the head stays at
  w = 0 (and so every REINFORCE reward at 0) after ~40 steps (BENCHMARKS.md). The reference leaves z unbounded
  (`clamp_weight=False` here), and mixes hidden states before the LM head; here the logits are mixed, as the paper
  describes.
- Thought tokens never appear inside a thought or in a prediction of the text: their logits are the float32 minimum,
  so the mixed distribution is over the base vocabulary and equals the base model's when w = 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reasonloop.models.hf import load_model, save_model

START_THOUGHT = "<|startthought|>"
END_THOUGHT = "<|endthought|>"
THOUGHT_INIT_TEXT = "---"
HEAD_FILE = "mixing_head.safetensors"


def add_thought_tokens(lm, tokenizer, init_text: str = THOUGHT_INIT_TEXT) -> tuple[int, int]:
    """Add <|startthought|> and <|endthought|> to `tokenizer` and `lm` (resizing its embeddings); returns their ids.

    Both rows start at the input embedding of the first token of `init_text` ("---", the paper's choice), or at the
    mean input embedding when `init_text` encodes to nothing or to the unknown token. A tokenizer that has them already
    is left alone (a saved Quiet-STaR model). Tied output embeddings follow the input rows.
    """
    have = [tokenizer.convert_tokens_to_ids(t) for t in (START_THOUGHT, END_THOUGHT)]
    if all(i is not None and i != tokenizer.unk_token_id for i in have) and len(tokenizer) <= lm.config.vocab_size:
        return have[0], have[1]
    tokenizer.add_special_tokens({"additional_special_tokens": [START_THOUGHT, END_THOUGHT]})
    start_id, end_id = (tokenizer.convert_tokens_to_ids(t) for t in (START_THOUGHT, END_THOUGHT))
    old = lm.get_input_embeddings().weight.shape[0]
    if max(start_id, end_id) >= old:
        lm.resize_token_embeddings(max(len(tokenizer), max(start_id, end_id) + 1), mean_resizing=False)
    emb = lm.get_input_embeddings().weight
    init_ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        if init_ids and init_ids[0] != tokenizer.unk_token_id:
            row = emb[init_ids[0]].clone()
        else:
            row = emb[:old].mean(dim=0)
        emb[start_id] = row
        emb[end_id] = row
        out = lm.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[start_id] = out.weight[:old].mean(dim=0)  # untied head: never predicted (masked), keep it tame
            out.weight[end_id] = out.weight[:old].mean(dim=0)
    return start_id, end_id


def thought_attention_mask(T: int, n_groups: int) -> torch.Tensor:
    """(S, S) bool with S = T * (1 + n_groups), True where slot i may attend to slot j (see the module docstring).

    Group 0 is the text, causal; slot (g, t) of group g >= 1 attends to text slots (0, j <= t) and to its own
    thought's slots (h, t) for 1 <= h <= g: a diagonal in every block right of the text.

    >>> thought_attention_mask(2, 1).int().tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    """
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))  # (T, T)
    eye = torch.eye(T, dtype=torch.bool)  # (T, T)
    G = 1 + n_groups
    rows = []
    for g in range(G):
        blocks = [causal] + [eye if 1 <= h <= g else torch.zeros(T, T, dtype=torch.bool) for h in range(1, G)]
        rows.append(torch.cat(blocks, dim=1))  # (T, S)
    return torch.cat(rows, dim=0)  # (S, S)


def float_mask(allowed: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """(Q, K) or (B, Q, K) bool -> (B, 1, Q, K) additive float mask (0 where allowed, the dtype's minimum elsewhere),
    the form transformers passes unchanged to eager and SDPA attention."""
    m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    if m.dim() == 2:
        return m[None, None].expand(batch, 1, *m.shape)
    return m[:, None]


class MixingHead(nn.Module):
    """w = clamp(MLP([h_base; h_thought]), 0, 1): how much of the post-thought prediction to use at a position.

    Three layers with ReLUs (the reference's "complex talk head"); the last has no bias and starts at zero, so w = 0
    and the mixed prediction is the base model's until training moves it. The clamp is exact in the forward pass and
    transparent in the backward pass (a straight-through estimator), so a head pushed below 0 can come back.
    With `clamp=False`, w = z unbounded: the reference implementation's head (a departure from w in [0, 1]).
    """

    def __init__(self, hidden_size: int, clamp: bool = True):
        super().__init__()
        self.register_buffer("clamp", torch.tensor(float(clamp)))  # saved with the head: how to read its weights
        self.net = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, 1, bias=False),
        )
        nn.init.zeros_(self.net[-1].weight)

    def forward(self, h_base: torch.Tensor, h_thought: torch.Tensor) -> torch.Tensor:
        """(..., H), (..., H) -> (...,) weights in [0, 1]."""
        z = self.net(torch.cat([h_base, h_thought], dim=-1).to(self.net[0].weight.dtype)).squeeze(-1)
        if not self.clamp:
            return z
        return z.clamp(0.0, 1.0) + (z - z.detach())  # value: the clamp, exactly; gradient: dw/dz = 1


@dataclass
class ThoughtOutputs:
    """What one forward pass with thoughts gives (V: the vocabulary; the thought tokens' logits at the float minimum)."""

    base_logits: torch.Tensor  # (B, T, V) the model without thoughts; [:, t] predicts x_{t+1}
    thought_logits: torch.Tensor  # (B, T, n_ahead, V) [:, t, i] predicted thought token i after position t
    talk_logits: torch.Tensor  # (B, T, n_talk, V) after the thought: [:, t, k] predicts x_{t+1+k}
    weights: torch.Tensor  # (B, T, n_talk) mixing weight w for each talk prediction
    mixed_logits: torch.Tensor  # (B, T, n_talk, V) base (at t+k) + w * (talk - base)


class QuietStarModel(nn.Module):
    """A causal LM with thought tokens and a mixing head. Saved as the LM's own directory plus `mixing_head.safetensors`,
    so the trainer's checkpoints and `load_model` both read it."""

    def __init__(self, lm: nn.Module, tokenizer, *, init_text: str = THOUGHT_INIT_TEXT, clamp_weight: bool = True):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.start_id, self.end_id = add_thought_tokens(lm, tokenizer, init_text)
        self.mixing_head = MixingHead(lm.config.hidden_size, clamp=clamp_weight)

    @property
    def config(self):
        return self.lm.config

    # --- pieces of the LM -------------------------------------------------------------------------------------------
    def _body(self):
        return getattr(self.lm, self.lm.base_model_prefix)

    def hidden_and_logits(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask4d: torch.Tensor | None, cache=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states (B, L, H) and float32 logits (B, L, V), the two thought tokens' logits at the float32
        minimum (finite, so mixing two such rows stays exact: base + w * (talk - base) with talk - base = 0 there)."""
        out = self._body()(
            input_ids=input_ids, position_ids=position_ids, attention_mask=mask4d, cache=cache, use_cache=cache is not None
        )  # fmt: skip
        h = out.last_hidden_state  # (B, L, H)
        logits = self.lm.get_output_embeddings()(h).float()  # (B, L, V)
        logits[..., [self.start_id, self.end_id]] = torch.finfo(torch.float32).min
        return h, logits

    def _mask(self, allowed: torch.Tensor, batch: int) -> torch.Tensor:
        return float_mask(allowed, batch, self.lm.get_input_embeddings().weight.dtype)

    # --- thoughts ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_thoughts(
        self,
        input_ids: torch.Tensor,  # (B, T)
        n_ahead: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A thought of `n_ahead` tokens after every position, all positions at once: (B, T, n_ahead).

        One forward pass over the text, then one per thought token over the T newest slots, each against the KV
        cache of everything before with the rows of `thought_attention_mask` for its group. Greedy at temperature 0.
        """
        from transformers import DynamicCache

        B, T = input_ids.shape
        dev = input_ids.device
        allowed = thought_attention_mask(T, n_ahead).to(dev)  # (S, S); groups 0..n_ahead are fed
        pos = torch.arange(T, device=dev)[None].expand(B, T)
        cache = DynamicCache()
        self.hidden_and_logits(input_ids, pos, self._mask(allowed[:T, :T], B), cache)
        tokens = torch.full((B, T), self.start_id, dtype=torch.long, device=dev)  # group 1: <start> at every position
        out = []
        for g in range(1, n_ahead + 1):
            rows = allowed[g * T : (g + 1) * T, : (g + 1) * T]  # (T, (g+1)T)
            _, logits = self.hidden_and_logits(tokens, pos + g, self._mask(rows, B), cache)  # (B, T, V)
            tokens = pick(logits, temperature, generator)  # (B, T)
            out.append(tokens)
        return torch.stack(out, dim=-1)  # (B, T, n_ahead)

    @torch.no_grad()
    def sample_thoughts_sequential(
        self,
        input_ids: torch.Tensor,
        n_ahead: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The same thoughts, position by position with ordinary causal forward passes and a KV cache per position
        (the reference implementation's cost, T * n_ahead passes): the check and the baseline for `sample_thoughts`.
        Draws from `generator` in a different order than `sample_thoughts`, so only greedy thoughts agree exactly."""
        from transformers import DynamicCache

        B, T = input_ids.shape
        dev = input_ids.device
        out = torch.empty(B, T, n_ahead, dtype=torch.long, device=dev)
        for t in range(T):
            ids = torch.cat([input_ids[:, : t + 1], torch.full((B, 1), self.start_id, device=dev)], dim=1)  # (B, t+2)
            cache = DynamicCache()
            pos = torch.arange(ids.shape[1], device=dev)[None].expand(B, -1)
            for i in range(n_ahead):
                _, logits = self.hidden_and_logits(ids, pos, None, cache)
                tok = pick(logits[:, -1:], temperature, generator)  # (B, 1)
                out[:, t, i] = tok[:, 0]
                ids, pos = tok, pos[:, -1:] + 1
        return out

    def forward_with_thoughts(self, input_ids: torch.Tensor, thoughts: torch.Tensor, n_talk: int) -> ThoughtOutputs:
        """One forward pass over the text and all its thoughts (with gradients): see `ThoughtOutputs`.

        input_ids (B, T), thoughts (B, T, n_ahead). The teacher-forced tokens past the end of the text are padding
        (their predictions are masked out by the losses).
        """
        B, T = input_ids.shape
        n_ahead = thoughts.shape[-1]
        G = 1 + n_ahead + 1 + (n_talk - 1)  # groups after the text: <start>, thought, <end>, teacher-forced
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dev = input_ids.device
        shifted = [torch.cat([input_ids[:, k:], torch.full((B, k), pad, device=dev)], dim=1) for k in range(1, n_talk)]
        groups = [
            input_ids,
            torch.full((B, T), self.start_id, device=dev),
            *thoughts.unbind(-1),
            torch.full((B, T), self.end_id, device=dev),
            *shifted,
        ]
        ids = torch.cat(groups, dim=1)  # (B, (1+G) T)
        pos = torch.cat([torch.arange(T, device=dev) + g for g in range(1 + G)])[None].expand(B, -1)
        h, logits = self.hidden_and_logits(ids, pos, self._mask(thought_attention_mask(T, G).to(dev), B))
        h = h.view(B, 1 + G, T, -1)  # (B, 1+G, T, H)
        logits = logits.view(B, 1 + G, T, -1)  # (B, 1+G, T, V)
        base_h, base_logits = h[:, 0], logits[:, 0]  # (B, T, H), (B, T, V)
        thought_logits = logits[:, 1 : 1 + n_ahead].transpose(1, 2)  # (B, T, n_ahead, V)
        end = 1 + n_ahead + 1  # the <end> group
        talk_h = h[:, end : end + n_talk].transpose(1, 2)  # (B, T, n_talk, H)
        talk_logits = logits[:, end : end + n_talk].transpose(1, 2)  # (B, T, n_talk, V)
        # the base prediction of x_{t+1+k} is the text's own at position t+k (clamped past the end: masked anyway)
        idx = (torch.arange(T, device=dev)[:, None] + torch.arange(n_talk, device=dev)[None]).clamp(max=T - 1)
        base_at = base_logits[:, idx]  # (B, T, n_talk, V)
        weights = self.mixing_head(base_h[:, idx], talk_h)  # (B, T, n_talk)
        mixed = base_at + weights[..., None] * (talk_logits - base_at)  # (B, T, n_talk, V); w = 0 gives base exactly
        return ThoughtOutputs(base_logits, thought_logits, talk_logits, weights, mixed)

    # --- saving -----------------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, **_: object) -> Path:
        """The LM and tokenizer (thought tokens included) as a Hugging Face directory, plus the mixing head."""
        from safetensors.torch import save_file

        p = save_model(self.lm, self.tokenizer, path)
        head = {f"mixing_head.{k}": v.contiguous() for k, v in self.mixing_head.state_dict().items()}
        save_file(head, str(p / HEAD_FILE))
        return p

    def load_saved_weights(self, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load tensors read from a saved directory (LM keys, then `mixing_head.*`); (missing, unexpected) keys."""
        prefix = "mixing_head."
        head = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = self.lm.load_state_dict(
            {k: v for k, v in weights.items() if not k.startswith(prefix)}, strict=False
        )
        if head:
            head.setdefault("clamp", self.mixing_head.clamp)  # saved before the flag existed: a clamped head
            self.mixing_head.load_state_dict(head)
        else:
            missing = [*missing, "mixing_head.net.0.weight"]
        return list(missing), list(unexpected)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, clamp_weight: bool = True) -> QuietStarModel:
        """Any saved causal LM (thought tokens added if it has none); the mixing head if the directory has one (its
        saved `clamp` then wins over `clamp_weight`)."""
        from safetensors.torch import load_file

        lm, tokenizer = load_model(path)
        model = cls(lm, tokenizer, clamp_weight=clamp_weight)
        head_path = Path(path).expanduser() / HEAD_FILE
        if head_path.exists():
            model.load_saved_weights(load_file(str(head_path)))
        return model.eval()


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """(..., V) -> (...,) token ids: argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is not None and generator.device != flat.device:
        flat = flat.cpu()  # a CPU generator draws the same numbers whatever device the model is on
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1]).to(logits.device)
