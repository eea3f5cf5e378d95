"""A whole recipe through the `openai` backend: STaR whose sampling goes over HTTP to `reasonloop serve
--allow-reload`, while fine-tuning happens here on the same files.

The server starts on another model (random weights): the recipe itself makes it load the base before round 1
and round 1's checkpoint before round 2 (`POST /update_weights_from_disk`). The run must then be the in-process
run, sample for sample, checkpoint for checkpoint.
"""

from __future__ import annotations

import httpx
import pytest

from reasonloop.core import ReasonloopError, read_jsonl
from reasonloop.engine.openai_api import OpenAIEngine
from reasonloop.recipes import run_star

from .conftest import tiny_model
from .test_serve import MODELS, FakeServer, serving
from .test_star import tiny_cfg

SERVED = "policy"


@pytest.fixture(scope="module")
def reloading_server(tmp_path_factory, char_tokenizer):
    """`reasonloop serve --allow-reload` on a random tiny model; (API base URL, the directory it started on)."""
    from reasonloop.models import save_model

    start = save_model(tiny_model("llama", char_tokenizer, seed=9), char_tokenizer, tmp_path_factory.mktemp("r") / "m")
    with serving(start, SERVED, "--allow-reload") as base:
        yield base, start


def served_root(base: str) -> str:
    return httpx.get(f"{base}/models", timeout=10).json()["data"][0]["root"]


def test_star_sampling_through_the_server_is_the_in_process_run(tmp_path, solver_tiny_dir, reloading_server):
    base, _ = reloading_server
    local = run_star(tiny_cfg(solver_tiny_dir), tmp_path / "local", log=lambda s: None)
    remote = run_star(
        tiny_cfg(solver_tiny_dir, sampler=f"openai:{base}#{SERVED}"), tmp_path / "http", log=lambda s: None
    )
    # the server was left on the weights round 2 sampled from: round 1's checkpoint of the http run
    assert served_root(base) == str((tmp_path / "http" / "checkpoints" / "round1").resolve())
    assert remote == local
    assert remote["rounds"][0]["train_solved_plain"] > 0  # rationales were found: the rounds trained on something
    names = sorted(p.name for p in (tmp_path / "local" / "samples").glob("*.jsonl"))
    assert names == sorted(p.name for p in (tmp_path / "http" / "samples").glob("*.jsonl"))
    assert {"round1-plain.jsonl", "round2-plain.jsonl"} <= set(names)
    for name in names:
        a = list(read_jsonl(tmp_path / "local" / "samples" / name))
        b = list(read_jsonl(tmp_path / "http" / "samples" / name))
        assert len(a) == len(b) > 0, name
        for x, y in zip(a, b):
            assert (x["problem_id"], x["text"], x["token_ids"], x["prompt_ids"], x["reward"]) == (
                y["problem_id"], y["text"], y["token_ids"], y["prompt_ids"], y["reward"]
            ), name  # fmt: skip
            assert max((abs(p - q) for p, q in zip(x["logprobs"], y["logprobs"])), default=0.0) < 1e-4
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "local" / "checkpoints" / "round2" / "model.safetensors"))
    wb = load_file(str(tmp_path / "http" / "checkpoints" / "round2" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


def test_reloading_answers_with_the_new_weights_and_refuses_a_bad_path_in_one_line(
    tmp_path, reloading_server, trained_tiny_dir
):
    from reasonloop.engine import HFEngine

    base, start = reloading_server
    engine = OpenAIEngine(base, SERVED)
    engine.load_weights_from_disk(trained_tiny_dir)
    assert served_root(base) == str(trained_tiny_dir)
    kw = dict(temperature=1.0, max_new_tokens=12, seed=4)
    (got,) = engine.generate(["Q: 2+3=?\n"], 2, **kw)
    (expected,) = HFEngine.from_pretrained(trained_tiny_dir).generate(["Q: 2+3=?\n"], 2, **kw)
    assert [s.token_ids for s in got] == [s.token_ids for s in expected]
    (tmp_path / "empty").mkdir()
    for bad, says in ((tmp_path / "missing", "does not exist"), (tmp_path / "empty", "has no config.json")):
        with pytest.raises(ReasonloopError, match=f"cannot load '{bad}': model path .*{says}") as e:
            engine.load_weights_from_disk(bad)
        assert "\n" not in str(e.value)
    assert served_root(base) == str(trained_tiny_dir)  # a failed reload leaves the weights served
    resp = httpx.post(base.removesuffix("/v1") + "/update_weights_from_disk", json={"path": "x"}, timeout=10)
    assert resp.status_code == 400 and "'model_path' is required" in resp.json()["error"]["message"]
    engine.load_weights_from_disk(start)


def test_a_server_that_cannot_reload_stops_the_recipe_in_one_line(tmp_path, solver_tiny_dir):
    def no_reload(path, body):
        if path.endswith("/models"):
            return 200, {**MODELS, "data": [{"id": SERVED, "object": "model"}]}, {}
        return 404, {"detail": "Not Found"}, {}

    with FakeServer(no_reload) as fake:
        cfg = tiny_cfg(solver_tiny_dir, sampler=f"openai:{fake.url}#{SERVED}")
        with pytest.raises(ReasonloopError, match="cannot load weights on request .* --allow-reload") as e:
            run_star(cfg, tmp_path / "run", log=lambda s: None)
        assert "\n" not in str(e.value)
        assert fake.calls == ["/v1/models", "/update_weights_from_disk"]  # nothing was sampled from the wrong model
    with pytest.raises(ValueError, match="sampler must be an openai:URL#model spec"):
        tiny_cfg(solver_tiny_dir, sampler=str(solver_tiny_dir))


def test_a_vllm_sampler_that_is_not_installed_stops_star_before_anything_runs(tmp_path, solver_tiny_dir):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ReasonloopError, match="needs vLLM, which is not installed here"):
        run_star(tiny_cfg(solver_tiny_dir, sampler="vllm"), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()
