"""OpenAI grader objects load as they are, and every text metric is the reference library's own value.

The grader objects are the ones in examples/graders/openai/, written as in the schema's documentation
(the graders guide's string check, text similarity, score model, python and multigrader examples; the API
reference's label model). Expected metric values are computed here by calling sacrebleu, nltk, rouge-score and
rapidfuzz directly on the same strings; judge and formula values are worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reasonloop.core import ConfigError, DataError, Problem, Sample
from reasonloop.graders import grader_from_config, load_grader
from reasonloop.graders import similarity as sim
from reasonloop.graders.batch import safe_grade

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "graders" / "openai"
TEXT_METRICS = [
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]
PAIRS = [  # (model output, reference answer)
    ("The cat sat on the mat.", "The cat is on the mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("He was glad about the quick results", "He was happy with the fast results"),
    ("completely unrelated words", "The cat is on the mat."),
    ("Same text here.", "Same text here."),
]


def schema(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def item(reference: str, **meta) -> Problem:
    return Problem("i", "prompt", "", {"reference_answer": reference, **meta})


class NoSynonyms:
    def synsets(self, *args, **kwargs):
        return []


def library_value(metric: str, hyp: str, ref: str) -> float:
    """The metric as its library computes it, called here directly."""
    import sacrebleu
    from nltk.translate.gleu_score import sentence_gleu
    from nltk.translate.meteor_score import meteor_score
    from rapidfuzz import fuzz
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    if metric == "fuzzy_match":
        return fuzz.ratio(hyp, ref) / 100
    if metric == "bleu":
        return sacrebleu.sentence_bleu(hyp, [ref]).score / 100
    if metric == "gleu":
        return sentence_gleu([tok(ref).split()], tok(hyp).split())
    if metric == "meteor":
        return meteor_score([tok(ref).split()], tok(hyp).split(), wordnet=sim.meteor_wordnet() or NoSynonyms())
    key = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return RougeScorer([key]).score(ref, hyp)[key].fmeasure


class Judge:
    """A Generator that replies from a list and records what it was asked."""

    def __init__(self, replies: list[str], tokenizer=None):
        self.replies, self.calls, self.tokenizer = replies, [], tokenizer

    def generate(self, prompts, n=1, *, temperature=1.0, max_new_tokens=256, stop=None, seed=0, top_p=1.0):
        self.calls.append(
            (prompts, dict(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, top_p=top_p))
        )
        reply = self.replies[(len(self.calls) - 1) % len(self.replies)]
        return [[Sample(problem_id="j", text=reply)] for _ in prompts]


# --- 1. the schema's objects load unchanged and grade like the libraries ---------------------------------------


@pytest.mark.parametrize("operation", ["eq", "ne", "like", "ilike"])
def test_string_check_object_from_the_schema(operation):
    g = grader_from_config({**schema("string_check"), "operation": operation})
    # input "Paris is lovely" against reference "paris": eq and like are case-sensitive, ilike is not
    want = {"eq": 0.0, "ne": 1.0, "like": 0.0, "ilike": 1.0}[operation]
    assert g(item("paris"), "Paris is lovely").score == want
    assert g(item("Paris is lovely"), "Paris is lovely").score == (0.0 if operation == "ne" else 1.0)


@pytest.mark.parametrize("metric", TEXT_METRICS)
def test_text_similarity_object_from_the_schema_equals_the_library(metric):
    g = grader_from_config({**schema("text_similarity"), "evaluation_metric": metric})
    for hyp, ref in PAIRS:
        grade = g(item(ref), hyp)
        want = library_value(metric, hyp, ref)
        assert abs(grade.score - min(1.0, want)) <= 1e-9, (metric, hyp, grade.score, want)
        assert grade.details[metric] == grade.score and grade.details["passed"] == (grade.score >= 0.5)


def test_score_model_object_from_the_schema():
    g_cfg = schema("score_model")
    judge = Judge(['{"steps": [{"description": "compare", "conclusion": "close"}], "result": 0.9}'])
    g = grader_from_config(g_cfg, generator=judge)
    grade = g(Problem("i", "q", "", {"reference_answer": 1.0}), "0.9")
    assert (grade.score, grade.details["value"], grade.details["passed"]) == (0.9, 0.9, True)
    prompt, params = judge.calls[0]
    # no chat template on this judge: the two messages' contents, joined by a blank line, templates filled
    assert prompt == [g_cfg["input"][0]["content"] + "\n\nReference: 1.0. Model answer: 0.9"]
    assert params == {"temperature": 0.0, "max_new_tokens": 32768, "seed": 0, "top_p": 1.0}
    # the reply is clipped into the range; no number counts as 0
    grade = grader_from_config(g_cfg, generator=Judge(["I'd give it 7"]))(item("x"), "y")
    assert (grade.score, grade.reason) == (1.0, "judge: 1 in [0, 1] (clipped from 7) pass (threshold 0.5)")
    grade = grader_from_config(g_cfg, generator=Judge(["no idea"]))(item("x"), "y")
    assert (grade.score, grade.details["passed"]) == (0.0, False) and "no number" in grade.reason
    # a range of [0, 10]: a 7 is 0.7 of the way
    g10 = grader_from_config({**g_cfg, "range": [0, 10], "pass_threshold": 8}, generator=Judge(["7"]))
    grade = g10(item("x"), "y")
    assert grade.score == pytest.approx(0.7) and grade.details == {
        "value": 7.0,
        "judge_replies": ["7"],
        "passed": False,
    }
    # "7/10" at the end of a reply means 7 out of 10, not 10
    g10 = grader_from_config({**g_cfg, "range": [0, 10]}, generator=Judge(["Score: 7/10."]))
    assert g10(item("x"), "y").score == pytest.approx(0.7)


def test_score_model_sampling_params_reach_the_generator():
    sp = {"seed": 5, "top_p": 0.9, "temperature": 0.7, "max_completions_tokens": 12}
    judge = Judge(["1"])
    grader_from_config({**schema("score_model"), "sampling_params": sp}, generator=judge)(item("x"), "y")
    assert judge.calls[0][1] == {"temperature": 0.7, "max_new_tokens": 12, "seed": 5, "top_p": 0.9}


def test_model_graders_use_the_judge_chat_template_when_it_has_one():
    seen = []

    def apply_chat_template(messages, tokenize, add_generation_prompt):
        seen.append((messages, tokenize, add_generation_prompt))
        return "<chat>"

    tokenizer = SimpleNamespace(chat_template="{{ messages }}", apply_chat_template=apply_chat_template)
    judge = Judge(["negative"], tokenizer=tokenizer)
    g = grader_from_config(schema("label_model"), generator=judge)
    assert g(item("x", response="I hate Mondays"), "unused").score == 0.0
    assert judge.calls[0][0] == ["<chat>"]
    system = "Classify the sentiment of the following statement as one of positive, neutral, or negative"
    assert seen == [
        ([{"role": "system", "content": system}, {"role": "user", "content": "Statement: I hate Mondays"}], False, True)
    ]


def test_label_model_object_from_the_schema():
    def label(reply: str):
        return grader_from_config(schema("label_model"), generator=Judge([reply]))(item("x", response="ok"), "")

    assert (label("positive").score, label("positive").parsed) == (1.0, "positive")
    assert label("Neutral.").score == 0.0 and label("Neutral.").parsed == "neutral"
    assert label("not positive at all; verdict: negative").parsed == "negative"  # the label named last
    g = label("dunno")
    assert (g.score, g.parsed, g.reason) == (0.0, None, "judge: ? (no label in the judge's reply)")


def test_python_object_from_the_schema():
    from rapidfuzz import fuzz, utils

    g = load_grader(EXAMPLES / "python.json")
    grade = g(item("fuzzy wuzzy had no hair"), "fuzzy wuzzy was a bear")
    want = fuzz.WRatio("fuzzy wuzzy was a bear", "fuzzy wuzzy had no hair", processor=utils.default_process) / 100
    assert grade.score == pytest.approx(want, abs=1e-12) and 0 < want < 1


def test_multi_object_from_the_schema():
    g = load_grader(EXAMPLES / "multi.json")
    p = Problem("i", "q", "", {"name": "John Doe", "email": "john.doe@gmail.com"})
    # name: fuzzy "Jon Doe" vs "John Doe": one insertion over 15 characters -> 14/15 (the threshold 0.9 only marks
    # a pass, the value stays); email: eq -> 1; (14/15 + 1) / 2
    grade = g(p, '{"name": "Jon Doe", "email": "john.doe@gmail.com"}')
    assert grade.score == pytest.approx((14 / 15 + 1) / 2, abs=1e-12)
    assert grade.details["name"]["score"] == pytest.approx(14 / 15)
    assert g(p, '{"name": "John Doe", "email": "jd@gmail.com"}').score == pytest.approx(0.5)


def test_multi_formula_sees_raw_values_of_score_models_and_python_graders():
    # judge says 80 on [0, 100]; the python grader passes the item's 70 through: (100 - |70 - 80|) / 100 = 0.9
    g = grader_from_config(schema("multi_judge"), generator=Judge(["80"]))
    grade = g(Problem("i", "q", "", {"conversation": "hi", "expected_judge_score": 70}), "hello")
    assert grade.score == pytest.approx(0.9, abs=1e-12)
    assert grade.details["actual_score"]["score"] == pytest.approx(0.8)  # alone, the judge's grade is 80 / 100


def test_a_dozen_schema_objects_grade_a_fixed_set():
    """Every example object loads from its JSON file as it is, and grades a small fixed set."""
    judge = Judge(["0.5"])
    loaded = {path.stem: load_grader(path, generator=judge) for path in sorted(EXAMPLES.glob("*.json"))}
    assert sorted(loaded) == sorted(
        ["label_model", "multi", "multi_judge", "python", "score_model", "string_check", "text_similarity"]
    )
    for hyp, ref in PAIRS:
        p = Problem("i", "q", "", {"reference_answer": ref, "response": hyp, "conversation": hyp})
        p.meta.update(name="Ada", email="a@b.c", expected_judge_score=50)
        for name in ["string_check", "text_similarity", "score_model", "python"]:
            assert 0.0 <= loaded[name](p, hyp).score <= 1.0
        assert loaded["text_similarity"](p, hyp).score == pytest.approx(min(1.0, library_value("bleu", hyp, ref)))
        assert loaded["string_check"](p, hyp).score == float(hyp == ref)
        # the judge's 0.5 on [0, 100] against the expected 50: (100 - |50 - 0.5|) / 100
        assert loaded["multi_judge"](p, hyp).score == pytest.approx(0.505, abs=1e-12)
    # score model of the guide: a reply of 0.5 on [0, 1] passes its threshold of 0.5
    assert loaded["score_model"](item("a"), "b").details["passed"] is True


def test_score_model_over_a_real_generator(char_tokenizer):
    """A tiny causal LM (char tokenizer, no chat template) judges: the grade is whatever it says, read and clipped."""
    from reasonloop.engine import HFEngine

    from .conftest import tiny_model

    engine = HFEngine(tiny_model("llama", char_tokenizer), char_tokenizer)
    cfg = {**schema("score_model"), "sampling_params": {"max_completions_tokens": 6, "seed": 1}}
    g = grader_from_config(cfg, generator=engine)
    grade = g(item("4"), "4")
    reply = grade.details["judge_replies"][0]
    assert len(engine.tokenizer(reply)["input_ids"]) <= 6 + 1  # the budget reached the engine (+ a start token)
    assert grade.score == grade.details["value"] and 0.0 <= grade.score <= 1.0  # range [0, 1]: the value is the grade


# --- METEOR's WordNet ------------------------------------------------------------------------------------------


def test_meteor_credits_wordnet_synonyms():
    """Words "sick" and "ill" share a WordNet synset (and Porter leaves both alone: nltk looks synonyms up for
    stems). Hand-worked: 3 matches in one chunk, P = R = 1, penalty 0.5 * (1/3) ** 3; without synonyms:
    2 matches, P = R = 2/3, penalty 0.5 * (1/2) ** 3 -> 2/3 * 15/16."""
    if sim.meteor_wordnet() is None:  # skip on a developer's machine without it, fail under CI (it installs it)
        import os

        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("no WordNet under CI: .ci/run installs wordnet-base")
        pytest.skip("no WordNet here (apt-get install wordnet-base, or nltk.download('wordnet'))")
    assert sim.meteor("He is sick", "He is ill") == pytest.approx(1 - 0.5 / 27, abs=1e-12)
    g = grader_from_config({"type": "text_similarity", "metric": "meteor"})
    assert g(Problem("i", "q", "He is ill"), "He is sick").reason == "meteor 0.981"


def test_meteor_without_wordnet_runs_on_exact_and_stem_matches_and_says_so(monkeypatch):
    monkeypatch.setattr(sim, "meteor_wordnet", lambda: None)
    assert sim.meteor("He is sick", "He is ill") == pytest.approx(2 / 3 * 15 / 16, abs=1e-12)
    g = grader_from_config({"type": "text_similarity", "metric": "meteor"})(
        Problem("i", "q", "He is ill"), "He is sick"
    )
    assert g.reason == "meteor 0.625 (no WordNet: exact and stem matches only)"


# --- cosine over a local encoder -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder with a word-piece vocabulary, saved like any HF checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("encoder")
    words = "the cat sat is on mat paris capital of france he was glad happy quick fast results".split()
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words) + 6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    return path


def test_cosine_is_the_cosine_of_mean_pooled_embeddings(encoder_dir):
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(encoder_dir), AutoModel.from_pretrained(encoder_dir).eval()

    def embed(text: str) -> np.ndarray:  # one text at a time: no padding, every token counts
        with torch.no_grad():
            return model(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0).numpy().astype(np.float64)

    g = grader_from_config(
        {**schema("text_similarity"), "evaluation_metric": "cosine", "embedding_model": str(encoder_dir)}
    )
    for hyp, ref in PAIRS[:3] + [("the cat", "the cat sat on the mat . he was glad")]:  # unequal lengths: padding
        a, b = embed(hyp), embed(ref)
        want = max(0.0, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
        assert g(item(ref), hyp).score == pytest.approx(want, abs=1e-5)
    assert g(item("the cat"), "the cat").score == pytest.approx(1.0, abs=1e-6)


def test_cosine_needs_an_encoder_directory(tmp_path):
    base = {**schema("text_similarity"), "evaluation_metric": "cosine"}
    cases = [
        (base, "key 'evaluation_metric': cosine needs key 'embedding_model' (a local Hugging Face encoder directory)"),
        ({**base, "embedding_model": str(tmp_path / "none")}, f"key 'embedding_model': '{tmp_path / 'none'}' is not a directory"),
        ({**base, "embedding_model": str(tmp_path)}, "has no config.json (a Hugging Face model directory is expected)"),
    ]  # fmt: skip
    for cfg, msg in cases:
        with pytest.raises(ConfigError) as e:
            grader_from_config(cfg)
        assert str(e.value).startswith("grader 'text_similarity': ") and str(e.value).endswith(msg)
        assert "\n" not in str(e.value)


# --- 3. bad configs: one line naming the key --------------------------------------------------------------------


def test_bad_configs_are_one_line_naming_the_key():
    label, score, ts = schema("label_model"), schema("score_model"), schema("text_similarity")
    cases = [
        ({**ts, "evaluation_metric": "blue"}, "grader 'text_similarity': key 'evaluation_metric': 'blue' is not one of fuzzy_match, bleu, gleu, meteor, rouge_1, rouge_2, rouge_3, rouge_4, rouge_5, rouge_l, cosine (did you mean 'bleu'?)"),
        ({**ts, "evaluation_metrics": "bleu"}, "grader 'text_similarity': unknown key 'evaluation_metrics' (did you mean 'evaluation_metric'?)"),
        ({**label, "passing_labels": ["maybe"]}, "grader 'label_model': key 'passing_labels': 'maybe' is not one of labels (positive, neutral, negative)"),
        ({**label, "passing_labels": []}, "grader 'label_model': key 'passing_labels': give at least one of the labels"),
        ({**score, "range": [10, 0]}, "grader 'score_model': key 'range' must be [low, high] with low < high, got [10.0, 0.0]"),
        ({**score, "input": [{"role": "robot", "content": "hi"}]}, "grader 'score_model': key 'input[0]': role 'robot' is not one of system, developer, user, assistant"),
        ({**score, "input": [{"role": "user", "content": "{{sample.output_txt}}"}]}, "grader 'score_model': key 'input[0]': template field 'sample.output_txt' is not valid (use item.<field>, sample.output_text or sample.output_json.<field>)"),
        ({**ts, "reference": "{{answer}}"}, "grader 'text_similarity': key 'reference': template field 'answer' is not valid (use item.<field>, sample.output_text or sample.output_json.<field>)"),
        ({**score, "sampling_params": {"top_p": 0}}, "grader 'score_model': config key 'sampling_params': key 'top_p' must be in (0, 1], got 0.0"),
        ({**schema("multi"), "calculate_output": "(name + mail) / 2"}, "grader 'multi': key 'calculate_output': formula '(name + mail) / 2': unknown grader name(s) 'mail' (graders: email, name)"),
    ]  # fmt: skip
    for cfg, msg in cases:
        with pytest.raises(ConfigError) as e:
            grader_from_config(cfg, generator=Judge(["1"]))
        assert str(e.value) == msg


def test_a_template_naming_a_missing_item_field_names_the_key():
    g = grader_from_config({**schema("text_similarity"), "reference": "{{item.reference_answr}}"})
    with pytest.raises(DataError) as e:
        g(item("x"), "y")
    msg = "key 'reference': template field 'item.reference_answr' not found (item fields: answer, id, prompt, reference_answer)"
    assert str(e.value) == msg
    assert safe_grade(g, item("x"), "y").reason == f"error: DataError: {msg}"  # what `reasonloop grade` writes
    for cfg, key in [
        ({"type": "json_fields", "reference": "{{item.gold}}"}, "reference"),
        ({"type": "numeric", "reference": "{{item.gold}}"}, "reference"),
        ({"type": "python", "tests": "{{item.gold}}"}, "tests"),
        ({"type": "model", "prompt": "{{item.gold}}", "score_range": [0, 1]}, "prompt"),
    ]:
        with pytest.raises(DataError, match=rf"^key '{key}': template field 'item.gold' not found \(item fields: "):
            grader_from_config(cfg, generator=Judge(["1"]))(item("x"), '{"a": 1}')


def test_python_source_is_not_read_as_a_template():
    src = "def grade(sample, item):\n    return float(len(f'{{x}}') == 3)"  # an f-string's {{x}} is braces
    assert grader_from_config({"type": "python", "source": src})(item("x"), "y").score == 1.0
