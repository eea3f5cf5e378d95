"""A decoding forward pass for Llama-family models with a per-row static KV cache.

Transformers' `generate()` keeps one cache length for the whole batch, grows it
with a `torch.cat` per layer per token, and keeps finished rows in the batch.
Here each row has its own write position in a preallocated cache, so the engine
can (1) encode a shared prompt once and copy its cache to many rows, (2) drop
finished rows from the batch, and (3) write new keys in place.

Only the attention and the cache are written here; embeddings, norms, rotary
tables, MLPs and the LM head are the model's own modules, so numerics match
transformers (checked in tests for Llama, Qwen2 and the nano model). Supported:
`llama`, `mistral` (without a sliding window), `qwen2`, `qwen3`, and any of them
wrapped by peft with LoRA adapters (`unwrap` finds the transformers model; the
fused weights include the active adapters' deltas, so sampling follows a LoRA
policy as it trains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")

Cache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: K, V of shape (B, H_kv, T, D)


def unwrap(model):
    """The transformers model inside a peft wrapper (the adapters stay injected in its layers), else `model`."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def effective_weight(linear) -> torch.Tensor:
    """The weight a linear layer applies: its own, or for a peft LoRA layer its base weight plus the active
    adapters' deltas (B @ A * scaling), unless the adapters are disabled or already merged in."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear.weight
    w = base.weight
    if getattr(linear, "disable_adapters", False) or getattr(linear, "merged", False):
        return w
    for name in linear.active_adapters:
        if name in linear.lora_A:
            w = w + linear.get_delta_weight(name)
    return w


def supports(model) -> bool:
    model = unwrap(model)
    cfg = model.config
    if cfg.model_type not in SUPPORTED:
        return False
    if getattr(cfg, "use_sliding_window", False) or (
        cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None)
    ):
        return False
    if not (hasattr(model, "model") and hasattr(model.model, "rotary_emb")):
        return False
    layer = model.model.layers[0]
    return all(hasattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")) and hasattr(
        layer.input_layernorm, "variance_epsilon"
    )


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class FastDecoder:
    """`forward(ids, start, cache)` for rows that each sit at their own position."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError(f"fast path does not support model_type '{model.config.model_type}'")
        model = unwrap(model)
        self.model = model
        self.base = model.model
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        # dynamic scaling depends on the sequence length: no table, compute per call
        self._rope_table = "dynamic" not in str(rope.get("rope_type", rope.get("type", "")))
        self._cos = self._sin = None
        self._slots: Cache | None = None
        self._fused: dict[int, tuple] = {}
        self._checked: set[int] = set()  # layers whose fused weights were checked since the last `refresh`

    def _rotary(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, L, D) for positions `pos` (B, L), from a table grown on demand."""
        if not self._rope_table:
            return self.base.rotary_emb(x, pos)
        need = int(pos.max()) + 1
        if self._cos is None or self._cos.shape[0] < need:
            n = max(256, 1 << (need - 1).bit_length())
            cos, sin = self.base.rotary_emb(x, torch.arange(n, device=x.device)[None])  # (1, n, D)
            self._cos, self._sin = cos[0], sin[0]
        return self._cos[pos], self._sin[pos]

    def slot_cache(self, batch: int, length: int) -> Cache:
        """A cache for decoding slots, reusing the previous call's buffer when it is big enough.

        Stale entries are finite values from earlier rows; a row never attends past
        its own position, so they are never read.
        """
        if self._slots is None or self._slots[0][0].shape[0] < batch or self._slots[0][0].shape[2] < length:
            self._slots = self.new_cache(batch, length)
        return [(k[:batch, :, :length], v[:batch, :, :length]) for k, v in self._slots]

    def release(self) -> None:
        """Free the reusable slot cache."""
        self._slots = None

    def new_cache(self, batch: int, length: int) -> Cache:
        shape = (batch, self.n_kv, length, self.head_dim)
        return [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in self.base.layers
        ]

    @staticmethod
    def select(cache: Cache, rows: torch.Tensor, length: int | None = None) -> Cache:
        """Keep cache rows `rows` (with repeats: this is how one prompt's cache feeds many samples)."""
        return [(k[rows, :, :length], v[rows, :, :length]) for k, v in cache]

    def refresh(self) -> None:
        """Check every layer's fused weights against the model again at its next use (the engine calls this at
        the start of every generate or scoring call; within one call the weights cannot change)."""
        self._checked.clear()

    def _layer_weights(self, i: int, layer) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Fused q|k|v and gate|up weights of layer i: one matmul instead of three, and two.

        Rebuilt whenever a source tensor is replaced, given new storage (`p.data = ...`
        restarts its version counter) or changed in place (its version counter moves),
        so an engine over a model being trained stays right; checked once per layer
        after each `refresh`.
        """
        cached = self._fused.get(i)
        if cached is not None and i in self._checked:
            return cached[1], cached[2], cached[3]
        a, m = layer.self_attn, layer.mlp
        linears = [a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj]
        biases = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
        tensors = [t for lin in linears for t in lin.parameters()]  # LoRA A and B included
        key = tuple((id(t), t.data_ptr(), t._version) for t in tensors) + tuple(
            bool(getattr(lin, "disable_adapters", False)) for lin in linears
        )
        self._checked.add(i)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                srcs = [effective_weight(lin) for lin in linears]
            w_qkv = torch.cat(srcs[:3]).detach()
            b_qkv = torch.cat(biases).detach() if biases[0] is not None else None
            w_gu = torch.cat(srcs[3:]).detach()
            cached = self._fused[i] = (key, w_qkv, b_qkv, w_gu)
        return cached[1], cached[2], cached[3]

    @torch.inference_mode()
    def forward(
        self,
        ids: torch.Tensor,  # (B, L) tokens; row b sits at positions start[b] .. start[b]+L-1
        start: torch.Tensor,  # (B,) where each row's tokens go in the cache
        cache: Cache,
        logits_at: torch.Tensor | None = None,  # (B,) one position per row, or None for all
    ) -> torch.Tensor:
        """Write the rows' keys/values into `cache` and return logits, (B, V) or (B, L, V).

        Row b attends to its cache slots 0 .. start[b]+i, which must hold its own
        earlier tokens: slots past a row's length may hold anything finite.
        """
        B, L = ids.shape
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        G = H // Hkv  # query heads per key/value head
        pos = start[:, None] + torch.arange(L, device=ids.device)  # (B, L)
        t_k = int(start.max()) + L
        x = self.base.embed_tokens(ids)  # (B, L, C)
        cos, sin = self._rotary(x, pos)  # (B, L, D)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, D)
        mask = (torch.arange(t_k, device=ids.device)[None, None, :] <= pos[:, :, None])[:, None]  # (B, 1, L, Tk)
        rows = torch.arange(B, device=ids.device)[:, None]  # (B, 1)
        for i, (layer, (K, V)) in enumerate(zip(self.base.layers, cache)):
            attn, mlp = layer.self_attn, layer.mlp
            w_qkv, b_qkv, w_gu = self._layer_weights(i, layer)
            h = rms_norm(layer.input_layernorm, x)
            q, k, v = F.linear(h, w_qkv, b_qkv).split([H * D, Hkv * D, Hkv * D], dim=-1)
            q, k, v = q.view(B, L, H, D), k.view(B, L, Hkv, D), v.view(B, L, Hkv, D)
            if hasattr(attn, "q_norm"):  # qwen3 normalises each head before rotary
                q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            K[rows, :, pos] = k.transpose(1, 2)  # (B, L, H_kv, D) into slots pos
            V[rows, :, pos] = v.transpose(1, 2)
            if L == 1:  # decoding: grouped heads share their key/value head, no copy of K or V
                keys = K[:, :, :t_k].reshape(B * Hkv, t_k, D)
                vals = V[:, :, :t_k].reshape(B * Hkv, t_k, D)
                scores = torch.bmm(q.reshape(B * Hkv, G, D), keys.transpose(1, 2)) * attn.scaling  # (B*Hkv, G, Tk)
                scores = scores.view(B, Hkv, G, t_k).masked_fill_(~mask, float("-inf"))
                o = torch.bmm(scores.softmax(-1).view(B * Hkv, G, t_k), vals).view(B, H, 1, D)
            else:
                o = F.scaled_dot_product_attention(
                    q, K[:, :, :t_k], V[:, :, :t_k], attn_mask=mask, scale=attn.scaling, enable_gqa=Hkv != H
                )  # (B, H, L, D)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(B, L, H * D))
            gate, up = F.linear(rms_norm(layer.post_attention_layernorm, x), w_gu).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        if logits_at is not None:
            x = x[torch.arange(B, device=ids.device), logits_at]  # (B, C)
        return self.model.lm_head(rms_norm(self.base.norm, x)).float()


def rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm module as one fused op (computed in float32, like transformers)."""
    return F.rms_norm(x.float(), (x.shape[-1],), norm.weight.float(), norm.variance_epsilon).to(x.dtype)
