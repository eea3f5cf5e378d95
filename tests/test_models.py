import pytest
import torch

from reasonloop.core import ReasonloopError
from reasonloop.models import ValueHeadModel, load_model, save_model

from .conftest import tiny_model


def test_value_head_gathers_positions_and_round_trips(tmp_path, char_tokenizer):
    vm = ValueHeadModel(tiny_model("qwen2", char_tokenizer), char_tokenizer)
    ids = torch.randint(4, len(char_tokenizer), (2, 7))
    with torch.no_grad():
        values = vm(ids)  # (B, T)
        picked = vm(ids, positions=torch.tensor([[6, 2], [0, 3]]))  # (B, K)
    assert values.shape == (2, 7)
    assert torch.equal(picked, torch.stack([values[0, [6, 2]], values[1, [0, 3]]]))
    # the head reads the backbone's last hidden state
    hidden = vm.backbone(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(values, vm.head(hidden).squeeze(-1), atol=1e-6)
    vm.save_pretrained(tmp_path / "vh")
    again = ValueHeadModel.from_pretrained(tmp_path / "vh")
    with torch.no_grad():
        assert torch.allclose(again(ids), values, atol=1e-6)


def test_value_head_trains(char_tokenizer):
    vm = ValueHeadModel(tiny_model("llama", char_tokenizer), char_tokenizer)
    ids = torch.randint(4, len(char_tokenizer), (4, 5))
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    opt = torch.optim.Adam(vm.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(vm(ids)[:, -1], target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_load_errors_are_clear(tmp_path, char_tokenizer):
    with pytest.raises(ReasonloopError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReasonloopError, match="no config.json"):
        load_model(tmp_path / "empty")
    save_model(tiny_model("llama", char_tokenizer), char_tokenizer, tmp_path / "m")
    model, tok = load_model(tmp_path / "m")
    assert model.config.model_type == "llama" and tok.eos_token_id == char_tokenizer.eos_token_id
