import pytest
import torch

from reasonloop.core import derive_seed
from reasonloop.engine import HFEngine
from reasonloop.engine.fast import FastDecoder
from reasonloop.models import load_model

from .conftest import assert_stops_only_on_text, tiny_model

PROMPTS = ["Q: 1+2\n", "Q: 33*4-2\n", "Q: 7\n"]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_fast_forward_matches_transformers(kind, char_tokenizer):
    model = tiny_model(kind, char_tokenizer)
    ids = torch.randint(4, len(char_tokenizer), (3, 12))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    dec = FastDecoder(model)
    full = dec.forward(ids, torch.zeros(3, dtype=torch.long), dec.new_cache(3, 12))
    assert torch.allclose(full, ref, atol=1e-5)
    # prefill 5 tokens, then one token at a time: same logits as the full pass
    cache = dec.new_cache(3, 12)
    parts = [dec.forward(ids[:, :5], torch.zeros(3, dtype=torch.long), cache)]
    for t in range(5, 12):
        parts.append(dec.forward(ids[:, t : t + 1], torch.full((3,), t), cache))
    assert torch.allclose(torch.cat(parts, 1), ref, atol=1e-5)


def test_rows_at_different_positions(char_tokenizer):
    """Rows of different lengths decode together and match each row decoded alone."""
    model = tiny_model("llama", char_tokenizer)
    dec = FastDecoder(model)
    a, b = torch.randint(4, 90, (1, 9)), torch.randint(4, 90, (1, 4))
    with torch.no_grad():
        ref_a, ref_b = model(input_ids=a).logits[0, -1], model(input_ids=b).logits[0, -1]
    cache = dec.new_cache(2, 10)
    batch = torch.zeros(2, 8, dtype=torch.long)
    batch[0], batch[1, :3] = a[0, :8], b[0, :3]
    dec.forward(batch, torch.zeros(2, dtype=torch.long), cache)
    last = dec.forward(
        torch.tensor([[a[0, 8]], [b[0, 3]]]), torch.tensor([8, 3]), cache, logits_at=torch.zeros(2, dtype=torch.long)
    )
    assert torch.allclose(last[0], ref_a, atol=1e-5) and torch.allclose(last[1], ref_b, atol=1e-5)


def test_saved_llama_and_qwen2_generate_through_the_fast_path(tiny_model_dir):
    engine = HFEngine.from_pretrained(tiny_model_dir)
    assert engine.decoder is not None  # same code path as the nano model
    out = engine.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=12, seed=0)
    assert [len(o) for o in out] == [3, 3, 3]
    for samples in out:
        for s in samples:
            assert len(s.token_ids) == len(s.logprobs) <= 12
            assert s.meta["finish_reason"] in ("eos", "length")
            assert all(lp <= 0 for lp in s.logprobs)


def test_seeded_sampling_is_reproducible(tiny_model_dir):
    engine = HFEngine.from_pretrained(tiny_model_dir, max_batch=4)
    a = engine.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=16, seed=11)
    b = engine.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=16, seed=11)
    c = engine.generate(PROMPTS, n=4, temperature=1.0, max_new_tokens=16, seed=12)
    ids = lambda r: [s.token_ids for ss in r for s in ss]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def _ids(out):
    return [[s.token_ids for s in ss] for ss in out]


def test_a_sample_is_drawn_from_its_own_stream_whatever_its_batch(tiny_model_dir):
    """Sample j of a prompt draws from (its prompt's seed, j) alone: generated with other prompts, alone, a row at
    a time, or as the first 2 of 4, it is the same sample (issue 16: a resumed run must redraw what it lost)."""
    model, tok = load_model(tiny_model_dir)
    kw = dict(temperature=1.0, max_new_tokens=16)
    seeds = [101, 202, 303]
    together = HFEngine(model, tok, max_batch=256).generate(PROMPTS, n=4, seeds=seeds, **kw)
    for max_batch in (1, 3):
        engine = HFEngine(model, tok, max_batch=max_batch)
        alone = [engine.generate([p], n=4, seeds=[s], **kw)[0] for p, s in reversed(list(zip(PROMPTS, seeds)))][::-1]
        assert _ids(alone) == _ids(together)
        for a, b in zip(alone, together):  # same draws; the logprobs equal to float rounding of other batch shapes
            assert [s.logprobs for s in a] == [pytest.approx(s.logprobs, abs=1e-5) for s in b]
    first_two = HFEngine(model, tok).generate(PROMPTS, n=2, seeds=seeds, **kw)
    assert _ids(first_two) == [ids[:2] for ids in _ids(together)]
    assert [s.meta["seed"] for ss in together for s in ss] == [s for s in seeds for _ in range(4)]
    # without `seeds`, prompt i of a call has the seed derive_seed(seed, i)
    engine = HFEngine(model, tok)
    by_position = engine.generate(PROMPTS, n=4, seeds=[derive_seed(7, i) for i in range(3)], **kw)
    assert _ids(engine.generate(PROMPTS, n=4, seed=7, **kw)) == _ids(by_position) != _ids(together)
    with pytest.raises(ValueError, match="seeds has 2 entries for 3 prompts"):
        engine.generate(PROMPTS, n=1, seeds=[1, 2], **kw)


def test_the_transformers_fallback_draws_what_the_fast_path_draws(tiny_model_dir):
    """Both paths sample with `_sample_tokens` from each row's own uniforms, so on a model both can run (the
    fallback forced by dropping the fast decoder) they draw the same tokens, top-p included."""
    model, tok = load_model(tiny_model_dir)
    fast, slow = HFEngine(model, tok, max_batch=5), HFEngine(model, tok, max_batch=5)
    slow.decoder = None
    for top_p in (1.0, 0.7):
        kw = dict(temperature=1.0, top_p=top_p, max_new_tokens=12, seeds=[5, 6, 7])
        a, b = fast.generate(PROMPTS, n=3, **kw), slow.generate(PROMPTS, n=3, **kw)
        assert _ids(a) == _ids(b)
        assert [s.logprobs for ss in a for s in ss] == [pytest.approx(s.logprobs, abs=1e-4) for ss in b for s in ss]


def test_logprobs_match_scoring(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    engine = HFEngine(model, tok)
    samples = engine.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=3)
    special = set(tok.all_special_ids)
    # text round-trips only for samples without special tokens
    flat = [(PROMPTS[i], s) for i, ss in enumerate(samples) for s in ss if not special & set(s.token_ids)]
    assert flat
    scored = engine.logprobs([p for p, _ in flat], [tok.decode(s.token_ids) for _, s in flat])
    for (_, s), lp in zip(flat, scored):
        assert lp == pytest.approx(s.logprobs, abs=1e-4)
    # and against a plain transformers forward pass
    ids = torch.tensor([tok(PROMPTS[0])["input_ids"] + tok("12+3", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    n_prompt = len(tok(PROMPTS[0])["input_ids"])
    expected = [logp[n_prompt - 1 + i, ids[0, n_prompt + i]].item() for i in range(4)]
    assert engine.logprobs([PROMPTS[0]], ["12+3"])[0] == pytest.approx(expected, abs=1e-5)


def test_greedy_prefix_sharing_changes_nothing_but_cost(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    shared, plain = HFEngine(model, tok, share_prefix=True), HFEngine(model, tok, share_prefix=False)
    prefix = "Q: 12+7*3-5\n12+7=19\n"
    a = shared.generate([prefix], n=8, temperature=0.0, max_new_tokens=10)
    b = plain.generate([prefix] * 8, n=1, temperature=0.0, max_new_tokens=10)
    assert [s.token_ids for s in a[0]] == [ss[0].token_ids for ss in b]
    n_prefix = len(tok(prefix)["input_ids"])
    assert shared.counts.prefilled == n_prefix
    assert plain.counts.prefilled == 8 * n_prefix
    assert shared.counts.generated == plain.counts.generated


def test_stop_at_step(solver_tiny_dir):
    """With a stop string, generation ends where the stop-free output has it: `text` is cut before it, `token_ids`
    include it. Checked against the model's own greedy output, so every assertion runs (an earlier version
    asserted inside an `if` that its seed never entered)."""
    from reasonloop.tasks import ArithTask

    engine = HFEngine.from_pretrained(solver_tiny_dir)
    problems = ArithTask().problems("train", 20, seed=100)
    full = [o[0].text for o in engine.generate([p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=40)]
    # one step at a time: the first line of the greedy solution, cut before the delimiter
    out = engine.generate([p.prompt for p in problems], 1, temperature=0.0, max_new_tokens=40, stop=["\n"])
    multi = [(p, f, o[0]) for p, f, o in zip(problems, full, out) if "\n" in f]
    assert len(multi) >= 10, "the solver writes multi-step solutions"
    for _, f, s in multi:
        assert s.text == f.split("\n")[0] and s.meta["finish_reason"] == "stop" and s.meta["stop"] == "\n"
        assert engine.tokenizer.decode(s.token_ids) == s.text + "\n"
    # a multi-character stop string spans tokens (one per character here)
    with_stop = [(p, f) for p, f in zip(problems, full) if "=1" in f]
    assert with_stop, "some greedy solution writes '=1'"
    out = engine.generate([p.prompt for p, _ in with_stop], 1, temperature=0.0, max_new_tokens=40, stop=["=1"])
    for (_, f), (s,) in zip(with_stop, out):
        cut = f.index("=1")
        assert s.meta["finish_reason"] == "stop" and s.text == f[:cut]
        assert engine.tokenizer.decode(s.token_ids, skip_special_tokens=True) == f[: cut + 2]
    # sampled rows stop too: no sampled step holds the delimiter, and the ones that stopped end with it
    sampled = engine.generate(["Q: 12+7*3-5\n"], n=8, temperature=1.0, max_new_tokens=40, stop=["\n"], seed=0)[0]
    assert all("\n" not in s.text for s in sampled)
    assert all(
        engine.tokenizer.decode(s.token_ids).endswith("\n") for s in sampled if s.meta["finish_reason"] == "stop"
    )


def test_a_special_token_is_not_text_for_a_stop_string(tiny_model_dir):
    """A random model samples special tokens; "<bos>" holds "os" by name but decodes to nothing, so it must not end
    a sample as a stop (it did, through the decoded tail of multi-character stop strings)."""
    engine = HFEngine.from_pretrained(tiny_model_dir)
    out = engine.generate(["Q: 1+2\n"] * 4, n=16, temperature=1.0, max_new_tokens=40, stop=["os"], seed=0)
    assert_stops_only_on_text(engine.tokenizer, out, "os", exercised=8)


def test_kv_cache_bounded_by_batch_not_by_n(tiny_model_dir):
    engine = HFEngine.from_pretrained(tiny_model_dir, max_batch=4)
    sizes = []
    original = engine.decoder.new_cache

    def spy(batch, length):
        sizes.append(batch)
        return original(batch, length)

    engine.decoder.new_cache = spy
    out = engine.generate(["Q: 5\n"], n=37, temperature=1.0, max_new_tokens=8, seed=0)
    assert len(out[0]) == 37
    assert max(sizes) <= 4


def test_top_p_keeps_only_the_nucleus():
    from reasonloop.engine.hf import _sample_tokens

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).repeat(500, 1)
    tok, _ = _sample_tokens(logits, 1.0, 0.8, torch.rand(500, generator=torch.Generator().manual_seed(0)))
    assert set(tok.tolist()) == {0, 1}
    tok, lp = _sample_tokens(logits, 0.0, 1.0, None)
    assert set(tok.tolist()) == {0} and lp[0].item() == pytest.approx(torch.log(torch.tensor(0.6)).item())


def test_other_architectures_use_transformers_generate(char_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(char_tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        eos_token_id=char_tokenizer.eos_token_id,
        bos_token_id=1,
    )
    engine = HFEngine(GPT2LMHeadModel(cfg).eval(), char_tokenizer)
    assert engine.decoder is None
    out = engine.generate(["Q: 1+2\n"], n=3, temperature=1.0, max_new_tokens=10, seed=0)
    for s in out[0]:
        assert len(s.token_ids) == len(s.logprobs) <= 10
    assert engine.counts.generated == sum(len(s.token_ids) for s in out[0])


def test_saved_tokenizer_round_trips_whitespace(tiny_model_dir, char_tokenizer):
    """Regression: transformers 5 loaded the nano tokenizer as Qwen2Tokenizer and dropped spaces/newlines."""
    _, tok = load_model(tiny_model_dir)
    text = "Q: 12+7 *3\n\nA: 5"
    assert tok(text)["input_ids"] == char_tokenizer(text)["input_ids"]
    assert tok.decode(tok(text)["input_ids"]) == text


def test_sampling_follows_the_tempered_distribution():
    from reasonloop.engine.hf import _sample_tokens

    logits = torch.log(torch.tensor([[0.0, 0.5, 0.3, 0.0, 0.2]])).repeat(50000, 1)
    for temperature in (1.0, 0.5):
        tok, lp = _sample_tokens(
            logits, temperature, 1.0, torch.rand(50000, generator=torch.Generator().manual_seed(1))
        )
        freq = torch.bincount(tok, minlength=5) / len(tok)
        expected = torch.softmax(logits[0] / temperature, -1)
        assert torch.allclose(freq, expected, atol=0.01)
        assert freq[0] == 0 and freq[3] == 0  # zero-probability tokens are never drawn
        assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(1, tok[:, None]).squeeze(1))


def test_reported_cache_memory_does_not_grow_with_n(tiny_model_dir):
    engine = HFEngine.from_pretrained(tiny_model_dir, max_batch=8)
    engine.generate(["Q: 5\n"], n=8, max_new_tokens=8)
    small = engine.last_cache_bytes
    engine.generate(["Q: 5\n"], n=200, max_new_tokens=8)
    assert engine.last_cache_bytes == small > 0
