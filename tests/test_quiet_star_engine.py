"""Inference with hidden thoughts through the `Generator` protocol: thoughts are made and used but not returned, they
are counted, and the sequential decoding path agrees with the parallel scoring path."""

from __future__ import annotations

import copy

import pytest
import torch

from reasonloop.core import Generator
from reasonloop.engine import HFEngine
from reasonloop.engine.quiet_star import QuietStarEngine
from reasonloop.models.nano import build_tokenizer
from reasonloop.models.quiet_star import QuietStarModel
from tests.conftest import assert_stops_only_on_text, tiny_model

PROMPTS = ["Q: 9*3-5\n", "Q: 2+6-6+2*2\n"]


@pytest.fixture(scope="module")
def pair():
    tok = build_tokenizer()
    base = tiny_model("llama", tok)
    base_tok = copy.deepcopy(tok)
    return QuietStarModel(copy.deepcopy(base), tok).eval(), base, base_tok


def test_without_thoughts_or_at_weight_zero_it_writes_what_the_base_model_writes(pair):
    model, base, base_tok = pair
    want = [s[0].text for s in HFEngine(base, base_tok).generate(PROMPTS, temperature=0.0, max_new_tokens=12)]
    plain = QuietStarEngine(model, n_ahead=0)
    assert isinstance(plain, Generator)
    assert [s[0].text for s in plain.generate(PROMPTS, temperature=0.0, max_new_tokens=12)] == want
    thinking = QuietStarEngine(model, n_ahead=3)
    out = thinking.generate(PROMPTS, temperature=0.0, max_new_tokens=12)
    assert [s[0].text for s in out] == want  # the mixing head starts at w = 0
    visible = sum(len(s[0].token_ids) for s in out)
    assert thinking.counts.generated == visible * (1 + 3 + 2)  # each visible token cost a thought and its markers
    assert plain.counts.generated == visible


def test_thoughts_change_the_next_token_as_the_mixed_prediction_says_and_are_not_returned(pair):
    model = copy.deepcopy(pair[0])
    with torch.no_grad():
        model.mixing_head.net[-1].weight.copy_(torch.rand_like(model.mixing_head.net[-1].weight) + 0.5)
    engine = QuietStarEngine(model, n_ahead=2)
    (sample,) = engine.generate(PROMPTS[:1], temperature=0.0, max_new_tokens=6)[0]
    assert not {model.start_id, model.end_id} & set(sample.token_ids)
    # the first token by hand: prompt, <start>, two greedy thought tokens, <end>; mix with the base at the prompt's end
    ids = model.tokenizer(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        seq = [*ids, model.start_id]
        for _ in range(2):
            _, logits = model.hidden_and_logits(torch.tensor([seq]), torch.arange(len(seq))[None], None)
            seq.append(int(logits[0, -1].argmax()))
        seq.append(model.end_id)
        h, logits = model.hidden_and_logits(torch.tensor([seq]), torch.arange(len(seq))[None], None)
        n = len(ids)
        w = model.mixing_head(h[0, n - 1], h[0, -1])
        assert w > 0
        mixed = logits[0, n - 1] + w * (logits[0, -1] - logits[0, n - 1])
    assert sample.token_ids[0] == int(mixed.argmax())
    assert sample.logprobs[0] == pytest.approx(torch.log_softmax(mixed, -1)[sample.token_ids[0]].item(), abs=1e-5)
    # scoring the same text (parallel thoughts, diagonal mask) gives the decoder's (sequential) log-probabilities
    scored = engine.logprobs(PROMPTS[:1], [sample.text])[0]
    assert scored == pytest.approx(sample.logprobs[: len(scored)], abs=1e-4)


def test_sampling_is_keyed_per_row(pair):
    engine = QuietStarEngine(pair[0], n_ahead=1, thought_temperature=1.0)
    both = engine.generate(PROMPTS, 2, temperature=1.0, max_new_tokens=5, seed=3)
    alone = engine.generate(PROMPTS[1:], 2, temperature=1.0, max_new_tokens=5, seeds=[both[1][0].meta["seed"]])
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in both[1]]


def test_a_special_token_is_not_text_for_a_stop_string(pair):
    """As for the hf engine: "<bos>" holds "os" by name, decodes to nothing, and must not end a sample as a stop."""
    engine = QuietStarEngine(pair[0], n_ahead=1)
    out = engine.generate(PROMPTS, 16, temperature=1.0, max_new_tokens=30, stop=["os"], seed=0)
    assert_stops_only_on_text(engine.tokenizer, out, "os", exercised=4)
