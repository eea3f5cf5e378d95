"""The nano model's architecture and tokenizer: a character-level Llama small enough to train from scratch on a CPU.

Training it on a built-in world is a recipe (`reasonloop.recipes.nano`, run by
``reasonloop init``); this module only builds the untrained model and the
tokenizer, so every layer can make one without the engine or a training loop.
"""

from __future__ import annotations

import torch

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = (
    list("0123456789+-*/=:() \n")
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + list(".,;?!#%$'\"_<>[]{}^&|~@\\`")
)


def build_tokenizer():
    """A character-level fast tokenizer built with the `tokenizers` library (BPE with no merges)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def build_model(tokenizer, *, hidden_size: int, n_layers: int, n_heads: int, n_kv_heads: int, mlp_size: int, seed: int):
    """An untrained nano Llama (tied embeddings, grouped-query attention) over `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=mlp_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
