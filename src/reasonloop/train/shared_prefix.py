"""A training forward for Llama-family models in which the G completions of one prompt share its encoding.

GRPO-style batches hold G completions of each prompt. A plain forward pass
encodes the prompt G times; here each distinct prompt goes through the layers
once (a "prompt stream", U rows) and every completion (B rows) attends to its
prompt's keys and values, then to its own earlier tokens. Gradients from the G
completions meet in the prompt stream (autograd sums them through the index),
so the result, values and gradients, equals the plain forward's to float
precision (tested), with the prompt's projections and MLPs computed U instead
of B times: with GSM8K-length prompts and G = 8, most of the prompt work.

Only attention is written here (as in `engine/fast.py`, whose support rules
and norm / rotary helpers it shares); projections, norms, MLPs and the LM head
are the model's own modules, so LoRA adapters (and `disable_adapter()`) act as
usual. Models the fast path does not cover go through transformers instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reasonloop.engine import fast


def supports(model) -> bool:
    """Llama-family models `engine.fast` covers, without attention dropout."""
    return fast.supports(model) and not getattr(fast.unwrap(model).config, "attention_dropout", 0.0)


def _heads(x: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """(N, L, n*d) -> (N, L, n, d)."""
    return x.view(x.shape[0], x.shape[1], n, d)


def _qkv(layer, x, cos, sin, H: int, Hkv: int, D: int):
    """Queries, keys (both rotated) and values of `x` (N, L, C) for one layer. -> each (N, heads, L, D)"""
    a = layer.self_attn
    h = fast.rms_norm(layer.input_layernorm, x)
    q, k, v = _heads(a.q_proj(h), H, D), _heads(a.k_proj(h), Hkv, D), _heads(a.v_proj(h), Hkv, D)
    if hasattr(a, "q_norm"):  # qwen3 normalises each head before rotary
        q, k = fast.rms_norm(a.q_norm, q), fast.rms_norm(a.k_norm, k)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    return q * cos + fast.rotate_half(q) * sin, k * cos + fast.rotate_half(k) * sin, v


def _finish(layer, x, o, H: int, D: int):
    """The rest of one layer after attention: output projection, residual, MLP, residual."""
    a, mlp = layer.self_attn, layer.mlp
    x = x + a.o_proj(o.transpose(1, 2).reshape(x.shape[0], x.shape[1], H * D))
    h = fast.rms_norm(layer.post_attention_layernorm, x)
    return x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))


def completion_hidden(
    model,
    prompts: torch.Tensor,  # (U, P) distinct prompts, left-padded
    prompt_mask: torch.Tensor,  # (U, P) 1 on real prompt tokens
    completions: torch.Tensor,  # (B, T) completion tokens, right-padded
    group: torch.Tensor,  # (B,) the prompt of each completion
) -> torch.Tensor:
    """Final (normed) hidden states at the positions that predict each completion token. -> (B, T, C)

    Position t of the result is the state after completion token t - 1 (after the
    prompt's last token for t = 0): what the LM head turns into the logits of
    token t, and what a value head reads as V(s_t).
    """
    m = fast.unwrap(model)
    base, cfg = m.model, m.config
    H = cfg.num_attention_heads
    Hkv = getattr(cfg, "num_key_value_heads", None) or H
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    P, (B, T) = prompts.shape[1], completions.shape
    dev = prompts.device
    keep = prompt_mask.bool()  # (U, P)
    pos_p = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # (U, P)
    pos_c = prompt_mask.sum(1)[group][:, None] + torch.arange(T, device=dev)[None]  # (B, T)
    # prompt rows: causal over real tokens (a padding query sees itself, so no row is empty)
    mask_p = torch.tril(torch.ones(P, P, dtype=torch.bool, device=dev))[None] & keep[:, None, :]
    mask_p = (mask_p | torch.eye(P, dtype=torch.bool, device=dev)[None])[:, None]  # (U, 1, P, P)
    # completion rows: the whole real prompt, then causal over the completion
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=dev))
    mask_c = torch.cat([keep[group][:, None, :].expand(B, T, P), causal[None].expand(B, T, T)], dim=2)[:, None]

    xp, xc = base.embed_tokens(prompts), base.embed_tokens(completions)  # (U, P, C), (B, T, C)
    cos_p, sin_p = (t[:, None] for t in base.rotary_emb(xp, pos_p))  # (U, 1, P, D)
    cos_c, sin_c = (t[:, None] for t in base.rotary_emb(xc, pos_c))  # (B, 1, T, D)

    for layer in base.layers:
        scale = layer.self_attn.scaling
        qp, kp, vp = _qkv(layer, xp, cos_p, sin_p, H, Hkv, D)
        qc, kc, vc = _qkv(layer, xc, cos_c, sin_c, H, Hkv, D)
        op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask_p, scale=scale, enable_gqa=Hkv != H)
        keys, values = torch.cat([kp[group], kc], dim=2), torch.cat([vp[group], vc], dim=2)  # (B, Hkv, P + T, D)
        oc = F.scaled_dot_product_attention(qc, keys, values, attn_mask=mask_c, scale=scale, enable_gqa=Hkv != H)
        xp, xc = _finish(layer, xp, op, H, D), _finish(layer, xc, oc, H, D)
    x = torch.cat([xp[group][:, -1:], xc[:, :-1]], dim=1)  # (B, T, C): prompt's last token, then tokens 0..T-2
    return fast.rms_norm(base.norm, x)


def packed_hidden(
    model,
    contexts: list[list[int]],  # U distinct contexts (prompts, or prompt + shared prefix)
    continuations: list[list[int]],  # B continuations, each of one context
    group: list[int],  # (B,) the context of each continuation
) -> tuple[torch.Tensor, torch.Tensor]:
    """`completion_hidden` without padding: every context and every continuation packed into one row each.

    The U contexts are laid end to end (N_p tokens) and attend causally within their own block; the B
    continuations are laid end to end (N_c tokens) and attend to their whole context, then causally within
    their own block; positions restart at every context and continue into its continuations. The layers then
    run on exactly the real tokens, where the padded form computes max length times rows. Returns the final
    (normed) hidden states predicting each continuation token, in packed order, (N_c, C), and the continuation
    each packed token belongs to, (N_c,).
    """
    m = fast.unwrap(model)
    base, cfg = m.model, m.config
    H = cfg.num_attention_heads
    Hkv = getattr(cfg, "num_key_value_heads", None) or H
    D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    dev = base.embed_tokens.weight.device
    lp = torch.tensor([len(c) for c in contexts], device=dev)  # (U,)
    lc = torch.tensor([len(c) for c in continuations], device=dev)  # (B,)
    seg_p = torch.repeat_interleave(torch.arange(len(contexts), device=dev), lp)  # (N_p,) context of each token
    seg_c = torch.repeat_interleave(torch.arange(len(continuations), device=dev), lc)  # (N_c,)
    pos_p = torch.arange(len(seg_p), device=dev) - (lp.cumsum(0) - lp)[seg_p]  # position within its context
    t_c = torch.arange(len(seg_c), device=dev) - (lc.cumsum(0) - lc)[seg_c]  # index within its continuation
    ctx_c = torch.tensor(group, device=dev)[seg_c]  # (N_c,) the context each continuation token follows
    pos_c = lp[ctx_c] + t_c
    mask_p = (seg_p[:, None] == seg_p[None, :]) & (pos_p[:, None] >= pos_p[None, :])  # (N_p, N_p)
    mask_c = torch.cat(
        [ctx_c[:, None] == seg_p[None, :], (seg_c[:, None] == seg_c[None, :]) & (t_c[:, None] >= t_c[None, :])], dim=1
    )  # (N_c, N_p + N_c)
    ids_p = torch.tensor([t for c in contexts for t in c], device=dev)[None]
    ids_c = torch.tensor([t for c in continuations for t in c], device=dev)[None]
    xp, xc = base.embed_tokens(ids_p), base.embed_tokens(ids_c)  # (1, N_p, C), (1, N_c, C)
    cos_p, sin_p = (t[:, None] for t in base.rotary_emb(xp, pos_p[None]))  # (1, 1, N_p, D)
    cos_c, sin_c = (t[:, None] for t in base.rotary_emb(xc, pos_c[None]))
    mask_p, mask_c = mask_p[None, None], mask_c[None, None]
    for layer in base.layers:
        scale = layer.self_attn.scaling
        qp, kp, vp = _qkv(layer, xp, cos_p, sin_p, H, Hkv, D)
        qc, kc, vc = _qkv(layer, xc, cos_c, sin_c, H, Hkv, D)
        op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask_p, scale=scale, enable_gqa=Hkv != H)
        keys, values = torch.cat([kp, kc], dim=2), torch.cat([vp, vc], dim=2)
        oc = F.scaled_dot_product_attention(qc, keys, values, attn_mask=mask_c, scale=scale, enable_gqa=Hkv != H)
        xp, xc = _finish(layer, xp, op, H, D), _finish(layer, xc, oc, H, D)
    # token t of a continuation is predicted by its token t - 1, the first one by its context's last token
    last_p = lp.cumsum(0) - 1  # (U,)
    x = torch.where((t_c == 0)[:, None], xp[0, last_p[ctx_c]], xc[0].roll(1, dims=0))  # (N_c, C)
    return fast.rms_norm(base.norm, x), seg_c
