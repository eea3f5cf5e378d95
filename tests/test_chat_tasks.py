"""Chat templates and system prompts in JSONL tasks, with a tiny character tokenizer given a ChatML template."""

from __future__ import annotations

import copy
import json

import pytest

from reasonloop.cli import main
from reasonloop.core import ConfigError, DataError, ReasonloopError, read_jsonl
from reasonloop.models import chat_renderer
from reasonloop.tasks import get_task

from .conftest import tiny_model

CHATML = (  # the shape of Qwen2.5's template, without its default system prompt and tools
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LINES = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"},
    {"question": "What is 6*7?", "answer": "#### 42", "system": "Answer in one line."},
]


@pytest.fixture
def chat_tokenizer(char_tokenizer):
    tok = copy.deepcopy(char_tokenizer)
    tok.chat_template = CHATML
    return tok


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def test_prompts_through_a_chat_template_with_system_prompts(gsm8k_file, chat_tokenizer):
    task = get_task(
        "gsm8k", data=str(gsm8k_file), system_prompt="Think step by step.", chat=chat_renderer(chat_tokenizer)
    )
    a, b = task.problems()
    assert a.prompt == (
        "<|im_start|>system\nThink step by step.<|im_end|>\n"
        "<|im_start|>user\nTom has 3 apples and buys 4. How many?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert b.prompt == (  # the line's own system field wins over the task's
        "<|im_start|>system\nAnswer in one line.<|im_end|>\n<|im_start|>user\nWhat is 6*7?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (a.answer, b.answer) == ("7", "42")
    (plain,) = get_task("gsm8k", data=str(gsm8k_file), chat=chat_renderer(chat_tokenizer)).problems()[:1]
    assert plain.prompt.startswith("<|im_start|>user\nTom")  # no system prompt: no system message


def test_without_a_template_the_system_prompt_goes_before_the_question(gsm8k_file):
    a, b = get_task("gsm8k", data=str(gsm8k_file), system_prompt="Be brief.").problems()
    assert a.prompt == "Be brief.\n\nQuestion: Tom has 3 apples and buys 4. How many?\nAnswer:"
    assert b.prompt == "Answer in one line.\n\nQuestion: What is 6*7?\nAnswer:"
    assert get_task("gsm8k", data=str(gsm8k_file)).problems()[0].prompt.startswith("Question: Tom")  # unchanged


def test_errors_are_one_line(gsm8k_file, char_tokenizer, tmp_path):
    with pytest.raises(ReasonloopError, match="base-dir has no chat template"):
        chat_renderer(char_tokenizer, where="base-dir")
    with pytest.raises(ConfigError, match="apply to file tasks"):
        get_task("arith", system_prompt="hi")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**LINES[0], "system": ["not", "text"]}) + "\n")
    with pytest.raises(DataError, match=f"{bad}:1: field 'system' must be a string, not list"):
        get_task("gsm8k", data=str(bad)).problems()


def test_sample_with_chat_prompts_the_model_through_its_template(gsm8k_file, chat_tokenizer, tmp_path):
    from reasonloop.models import save_model

    model_dir = save_model(tiny_model("qwen2", chat_tokenizer), chat_tokenizer, tmp_path / "instruct")
    out = tmp_path / "s.jsonl"
    common = ["sample", "--task", "gsm8k", "--data", str(gsm8k_file), "--num-problems", "2", "--n", "1"]
    args = [*common, "--max-new-tokens", "4", "--model", str(model_dir), "--output", str(out)]
    assert main([*args, "--chat", "--system", "Think step by step."]) == 0
    rows = list(read_jsonl(out))
    expected = chat_renderer(chat_tokenizer)(
        [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": LINES[0]["question"]}]
    )
    assert chat_tokenizer.decode(rows[0]["prompt_ids"]) == expected  # what the model was given
    assert main([*common, "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "x.jsonl"), "--chat"]) == 2


def test_rl_example_files_are_prompted_through_the_models_template(gsm8k_file, chat_tokenizer, tmp_path):
    """`rl` with `data`/`eval_data`, `chat: true` and a `system_prompt`: both files' prompts are the model's chat
    text (what the recipe samples from and trains on)."""
    from reasonloop.models import save_model
    from reasonloop.recipes.common import draw_problems
    from reasonloop.recipes.rl import RLConfig

    model_dir = save_model(tiny_model("qwen2", chat_tokenizer), chat_tokenizer, tmp_path / "instruct")
    cfg = RLConfig(
        model=str(model_dir), task="gsm8k", data=str(gsm8k_file), eval_data=str(gsm8k_file), n_train=2, n_eval=1,
        chat=True, system_prompt="Think step by step.",
    )  # fmt: skip
    _, train, test = draw_problems(cfg)
    render = chat_renderer(chat_tokenizer)
    assert [p.prompt for p in train] == [
        render(
            [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": LINES[0]["question"]}]
        ),
        render(
            [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": LINES[1]["question"]}]
        ),
    ]
    assert test[0].prompt == train[0].prompt


@pytest.mark.parametrize(
    "name, task, eval_file",
    [
        ("rl_gsm8k_qwen2.5-0.5b-instruct.yaml", "gsm8k", "gsm8k/test.jsonl"),
        ("rl_math500_qwen2.5-1.5b-instruct.yaml", "math", "math500/test.jsonl"),
    ],
)
def test_the_instruct_configs_load_and_their_eval_files_read_as_chat(
    name, task, eval_file, chat_tokenizer, shared_data
):
    """Not run (no GPU, no Qwen weights here): their keys, grader and held-out file are checked, and the held-out
    file reads through a chat template with their system prompt."""
    from pathlib import Path

    from reasonloop.core import load_config
    from reasonloop.recipes.rl import RLConfig

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(RLConfig, root / "examples" / "instruct" / name)
    assert (cfg.task, cfg.chat) == (task, True) and cfg.system_prompt
    assert (root / cfg.grader).exists() and cfg.eval_data == f"../shared/data/{eval_file}"
    problems = get_task(
        cfg.task, data=str(shared_data / eval_file), system_prompt=cfg.system_prompt, chat=chat_renderer(chat_tokenizer)
    ).problems()
    assert len(problems) in (1319, 500)
    assert problems[0].prompt.startswith(f"<|im_start|>system\n{cfg.system_prompt}<|im_end|>\n<|im_start|>user\n")
    assert problems[0].prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
