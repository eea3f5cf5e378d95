import pytest
import torch

from reasonloop.train import encode_pairs, sft_loss
from reasonloop.train.loop import TrainConfig, train_loop

from .conftest import tiny_model


def test_lora_trains_only_adapters_and_merges(tmp_path, char_tokenizer):
    pytest.importorskip("peft")
    from reasonloop.models import load_model, save_model
    from reasonloop.train.lora import LoraSettings, add_lora, merge_lora

    base = tiny_model("qwen2", char_tokenizer)
    frozen = {n: p.clone() for n, p in base.named_parameters()}
    model = add_lora(base, LoraSettings(r=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = encode_pairs(char_tokenizer, ["Q: 1+2\n", "Q: 3*3\n"], ["1+2=3\nA: 3", "3*3=9\nA: 9"])

    def sft(m, b):
        return sft_loss(
            m(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.input_ids, b.completion_mask
        )

    state = train_loop(model, None, lambda i: batch, sft, TrainConfig(steps=30, lr=1e-2, warmup=2))
    # a random frozen embedding and head cap what adapters alone can fit; the loss must still fall
    assert state["history"][-1]["sft_nll"] < 0.9 * state["history"][0]["sft_nll"]
    base_now = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()}
    assert all(torch.equal(frozen[n], base_now[n]) for n in frozen)  # base weights untouched until merged
    merged = merge_lora(model)
    assert any(not torch.equal(frozen[n], p) for n, p in merged.named_parameters())
    save_model(merged, char_tokenizer, tmp_path / "m")
    again, _ = load_model(tmp_path / "m")
    with torch.no_grad():
        a = merged(input_ids=batch.input_ids).logits
        b = again(input_ids=batch.input_ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_current_weights_fold_the_adapters_in_under_the_plain_names(char_tokenizer):
    import copy

    from reasonloop.train.lora import LoraSettings, add_lora, current_weights

    plain = tiny_model("llama", char_tokenizer)
    names = sorted(plain.state_dict())
    assert current_weights(plain) is not None and sorted(current_weights(plain)) == names
    model = add_lora(plain, LoraSettings(r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # adapters that change the output (lora_B starts at zero)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = current_weights(model)
    merged = copy.deepcopy(model).merge_and_unload()
    assert sorted(weights) == names
    assert all(torch.allclose(weights[k], v, atol=1e-6) for k, v in merged.state_dict().items())
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], before[
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])  # fmt: skip
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model keeps its adapters
