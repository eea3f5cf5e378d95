"""`reasonloop serve` and the `openai` backend over real HTTP, against the `hf` backend on the same tiny model.

One `reasonloop serve` subprocess (a tiny Llama built here) serves the module; fake servers (a few lines of
`http.server`) play a rate-limiting server, one without logprobs or token ids, and one that never answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from reasonloop.cli import main
from reasonloop.core import Generator, ReasonloopError, read_jsonl
from reasonloop.engine import HFEngine, open_generator
from reasonloop.engine.openai_api import OpenAIEngine

from .conftest import tiny_model

SERVED = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, char_tokenizer) -> Path:
    from reasonloop.models import save_model

    return save_model(tiny_model("llama", char_tokenizer), char_tokenizer, tmp_path_factory.mktemp("serve") / "model")


@contextlib.contextmanager
def serving(model_dir: Path, name: str, *options: str):
    """`reasonloop serve MODEL_DIR --name NAME OPTIONS` in a subprocess on a free port, one torch thread; yields its
    API base URL once it answers, and stops it after."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "reasonloop.cli", "--threads", "1", "serve", str(model_dir), "--name", name,
           "--port", str(port), *options]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300  # generous: on a starved CI machine, importing torch alone can take a minute
    while True:
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"reasonloop serve did not start: {proc.communicate()[0][-2000:]}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def url(model_dir):
    """`reasonloop serve` on the tiny model; its API base URL."""
    with serving(model_dir, SERVED, "--max-n", "8", "--max-tokens", "64", "--max-prompts", "4") as base:
        yield base


@pytest.fixture(scope="module")
def hf(model_dir):
    """The `hf` engine on the served model, on one torch thread (the server runs on one too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFEngine.from_pretrained(model_dir)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def remote(url) -> OpenAIEngine:
    return open_generator(f"openai:{url}#{SERVED}")


PROMPTS = ["1+2=", "3*4-5=", "(7+1)*2=", "9-8="]
STOP = ["a", "e", "o", "=", "1", "2"]  # frequent enough on a random model that some samples end on one


def assert_same_samples(expected, got):
    assert len(expected) == len(got)
    for row_e, row_g in zip(expected, got):
        assert len(row_e) == len(row_g)
        for e, g in zip(row_e, row_g):
            assert g.token_ids == e.token_ids and g.prompt_ids == e.prompt_ids and g.text == e.text
            assert g.meta["finish_reason"] == e.meta["finish_reason"] and g.meta.get("stop") == e.meta.get("stop")
            assert g.meta["seed"] == e.meta["seed"]
            assert len(g.logprobs) == len(e.logprobs)
            assert max((abs(a - b) for a, b in zip(e.logprobs, g.logprobs)), default=0.0) < 1e-4


def test_the_openai_backend_over_http_gives_the_hf_backends_samples(hf, remote):
    assert isinstance(remote, Generator)
    for kw in (
        dict(temperature=1.0, top_p=0.9, max_new_tokens=20, stop=STOP, seed=5),
        dict(temperature=0.7, max_new_tokens=12, seed=11),
        dict(temperature=0.0, max_new_tokens=8),
    ):
        assert_same_samples(hf.generate(PROMPTS, 3, **kw), remote.generate(PROMPTS, 3, **kw))
    keyed = [101, 202, 303, 404]  # prompts keyed by the caller, as the resumable samplers key problems
    before = remote.counts.copy()
    expected = hf.generate(PROMPTS, 2, temperature=1.0, max_new_tokens=20, stop=STOP, seeds=keyed)
    got = remote.generate(PROMPTS, 2, temperature=1.0, max_new_tokens=20, stop=STOP, seeds=keyed)
    assert_same_samples(expected, got)
    assert {"stop", "length"} <= {s.meta["finish_reason"] for row in got for s in row}
    spent = remote.counts - before
    assert spent.generated == sum(len(s.token_ids) for row in got for s in row)
    assert spent.prefilled == sum(len(p) for p in PROMPTS)  # the usage the server reports: one token a character
    assert spent.calls == 1


def test_scoring_through_echo_matches_the_hf_backend(hf, remote):
    completions = ["12", "7\nA: 7", "x", "0"]
    expected = hf.logprobs(PROMPTS, completions)
    got = remote.logprobs(PROMPTS, completions)
    assert [len(g) for g in got] == [len(c) for c in completions]  # one token per character
    for e, g in zip(expected, got):
        assert max(abs(a - b) for a, b in zip(e, g)) < 1e-4


def test_concurrent_requests_with_mixed_settings_get_their_own_samples(hf, url):
    """Sixteen requests at once, two sampling settings: the server batches what it can; each answer is still the one
    the request asked for."""
    settings = [dict(n=2, max_tokens=10, temperature=1.0), dict(n=3, max_tokens=6, temperature=0.5, top_p=0.8)]
    jobs = [(PROMPTS[i % 4], 1000 + i, settings[i % 2]) for i in range(16)]
    answers: list[dict | None] = [None] * len(jobs)

    def call(k: int) -> None:
        prompt, seed, s = jobs[k]
        body = dict(model=SERVED, prompt=prompt, seed=seed, logprobs=0, return_token_ids=True, **s)
        answers[k] = httpx.post(f"{url}/completions", json=body, timeout=60).json()

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (prompt, seed, s), answer in zip(jobs, answers):
        (expected,) = hf.generate(
            [prompt], s["n"], temperature=s["temperature"], top_p=s.get("top_p", 1.0), max_new_tokens=s["max_tokens"],
            seeds=[seed],
        )  # fmt: skip
        assert [c["token_ids"] for c in answer["choices"]] == [e.token_ids for e in expected]
        assert [c["text"] for c in answer["choices"]] == [e.text for e in expected]


def test_the_official_openai_client_as_the_caller(hf, url):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    assert SERVED in [m.id for m in client.models.list().data]
    out = client.completions.create(
        model=SERVED, prompt=PROMPTS[:2], n=2, max_tokens=16, temperature=1.0, seed=7, logprobs=0, stop=["="],
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    # a list request keys prompt i with seed + i (docs/serve.md)
    expected = hf.generate(PROMPTS[:2], 2, temperature=1.0, max_new_tokens=16, stop=["="], seeds=[7, 8])
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    flat = [s for row in expected for s in row]
    assert [c.text for c in out.choices] == [s.text for s in flat]
    assert [c.model_extra["token_ids"] for c in out.choices] == [s.token_ids for s in flat]
    for c, s in zip(out.choices, flat):
        assert c.logprobs.tokens and len(c.logprobs.token_logprobs) == len(s.token_ids)
        assert max(abs(a - b) for a, b in zip(c.logprobs.token_logprobs, s.logprobs)) < 1e-4
    assert out.usage.completion_tokens == sum(len(s.token_ids) for s in flat)
    from openai import BadRequestError, NotFoundError

    with pytest.raises(BadRequestError, match="'n' must be an integer in \\[1, 8\\]"):
        client.completions.create(model=SERVED, prompt="1+1=", n=9)
    with pytest.raises(NotFoundError, match="model 'gpt-5' does not exist"):
        client.completions.create(model="gpt-5", prompt="1+1=")


BAD_REQUESTS = [  # body, status, what the message says, the field named
    ({"model": None, "prompt": "1="}, 400, "'model' is required and must be a string", "model"),
    ({"model": "nope", "prompt": "1="}, 404, "model 'nope' does not exist; this server serves 'tiny'", "model"),
    ({"prompt": "1=", "n": 0}, 400, "'n' must be an integer in [1, 8], got 0", "n"),
    ({"prompt": "1=", "n": 9}, 400, "'n' must be an integer in [1, 8], got 9", "n"),
    ({"prompt": "1=", "n": "2"}, 400, "'n' must be an integer", "n"),
    ({"prompt": "1=", "max_tokens": 65}, 400, "'max_tokens' must be an integer in [1, 64], got 65", "max_tokens"),
    ({"prompt": "1=", "max_tokens": 0}, 400, "'max_tokens' must be an integer in [1, 64], got 0", "max_tokens"),
    ({"prompt": ["1="] * 5}, 400, "'prompt' has 5 prompts; the limit is 4", "prompt"),
    ({"prompt": ["1="] * 4, "n": 8, "max_tokens": 1}, None, None, None),  # 32 samples: within every limit
    ({"prompt": []}, 400, "'prompt' must be a string or a non-empty list of strings", "prompt"),
    ({"prompt": ""}, 400, "prompt 0 is empty", "prompt"),
    ({"prompt": [1, 2, 3]}, 400, "token-id prompts are not supported", "prompt"),
    ({"prompt": "1" * 100_001}, 400, "prompt 0 has 100,001 characters; the limit is 100,000", "prompt"),
    ({"prompt": "1" * 250, "max_tokens": 10}, 400, "prompt 0 is 250 tokens; with max_tokens 10 it exceeds", "prompt"),
    ({"prompt": "1=", "temperature": -1}, 400, "'temperature' must be a number >= 0, got -1", "temperature"),
    ({"prompt": "1=", "top_p": 0}, 400, "'top_p' must be a number in (0, 1], got 0", "top_p"),
    ({"prompt": "1=", "stop": 5}, 400, "'stop' must be a string or a list of strings", "stop"),
    ({"prompt": "1=", "stop": ["x"] * 17}, 400, "'stop' has 17 strings; the limit is 16", "stop"),
    ({"prompt": "1=", "stop": ["x" * 257]}, 400, "a 'stop' string is over 256 characters", "stop"),
    ({"prompt": "1=", "seed": 1.5}, 400, "'seed' must be an integer, got 1.5", "seed"),
    ({"prompt": "1=", "logprobs": 3}, 400, "'logprobs' must be 0 or null, got 3", "logprobs"),
    ({"prompt": "1=", "stream": True}, 400, "'stream' is not supported by this server", "stream"),
    ({"prompt": "1=", "best_of": 3}, 400, "'best_of' is not supported by this server", "best_of"),
    ({"prompt": "1=", "echo": True, "max_tokens": 4}, 400, "'echo' is supported only with max_tokens 0", "echo"),
    ({"prompt": "1=", "temprature": 1}, 400, "unknown field 'temprature'", "temprature"),
    ({"prompt": "1=", "return_token_ids": "yes"}, 400, "'return_token_ids' must be true or false", "return_token_ids"),
]


@pytest.mark.parametrize("body,status,message,param", BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_bad_requests_get_a_4xx_naming_the_field(url, body, status, message, param):
    body = {"model": SERVED, **body}
    resp = httpx.post(f"{url}/completions", json=body, timeout=30)
    if status is None:
        assert resp.status_code == 200 and len(resp.json()["choices"]) == 32
        return
    err = resp.json()["error"]
    assert resp.status_code == status and message in err["message"] and err["param"] == param, resp.text
    assert "\n" not in err["message"] and err["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_or_too_large_is_refused(url):
    resp = httpx.post(f"{url}/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "the request body is not valid JSON"
    resp = httpx.post(f"{url}/completions", json=["a list"])
    assert resp.status_code == 400 and "must be a JSON object" in resp.json()["error"]["message"]
    big = b'{"model": "tiny", "prompt": "' + b"1" * (9 * 2**20) + b'"}'
    resp = httpx.post(f"{url}/completions", content=big, headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 413 and "over the limit of 8,388,608 bytes" in resp.json()["error"]["message"]
    chunked = iter([b"1" * 2**20] * 9)  # no Content-Length: counted as it arrives
    resp = httpx.post(f"{url}/completions", content=chunked, headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 413 and "over the limit" in resp.json()["error"]["message"]


def test_backend_errors_are_one_line(url, remote):
    with pytest.raises(ReasonloopError, match="has no model 'nope' \\(it serves: tiny\\)"):
        OpenAIEngine(url, "nope")
    with pytest.raises(ReasonloopError, match="HTTP 400: 'max_tokens' must be an integer in \\[1, 64\\], got 100"):
        remote.generate(["1="], 1, max_new_tokens=100)
    with pytest.raises(ReasonloopError, match="expected openai:URL#model"):
        open_generator(f"openai:{url}")
    with pytest.raises(ReasonloopError, match="is served over HTTP; this needs local weights"):
        from reasonloop.models import resolve_model

        resolve_model(f"openai:{url}#{SERVED}")


def test_an_unreachable_url_or_a_silent_server_fails_in_one_line_quickly(capsys):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ReasonloopError, match=f"cannot reach http://127.0.0.1:{port}/v1/models: .*is the server"):
        OpenAIEngine(f"http://127.0.0.1:{port}/v1", "m")
    spec = f"openai:http://127.0.0.1:{port}/v1#m"
    assert main(["eval", "--model", spec, "--num-problems", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach") and "\n" not in err
    assert time.monotonic() - t0 < 10
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t0 = time.monotonic()
        with pytest.raises(ReasonloopError, match="no answer within 1 s"):
            OpenAIEngine(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "m", timeout_s=1.0)
        assert time.monotonic() - t0 < 5


class FakeServer:
    """An OpenAI-style server of a few lines: `answer(path, body) -> (status, json body, headers)`."""

    def __init__(self, answer):
        self.calls: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body):
                outer.calls.append(self.path)
                status, payload, headers = answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's name
                self._reply(None)

            def do_POST(self):  # noqa: N802
                self._reply(json.loads(self.rfile.read(int(self.headers["content-length"]))))

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


MODELS = {"object": "list", "data": [{"id": "m", "object": "model"}]}


def plain_completion(n: int) -> dict:
    """What a server without logprobs or token ids answers (no `stop_reason` either)."""
    return {"choices": [{"index": j, "text": "12", "finish_reason": "stop", "logprobs": None} for j in range(n)]}


def test_a_429_storm_is_retried_with_backoff_then_fails_naming_the_status():
    def storm(path, body):
        if path.endswith("/models"):
            return 200, MODELS, {}
        return 429, {"error": {"message": "Rate limit reached"}}, {"retry-after": "0.05"}

    with FakeServer(storm) as fake:
        engine = OpenAIEngine(fake.url, "m", max_retries=3, backoff_s=0.01)
        t0 = time.monotonic()
        with pytest.raises(ReasonloopError) as e:
            engine.generate(["1="], 1, max_new_tokens=4)
        msg = str(e.value)
        assert "HTTP 429 (Rate limit reached) after 4 attempts" in msg and "\n" not in msg
        assert fake.calls.count("/v1/completions") == 4
        assert 0.15 <= time.monotonic() - t0 < 5  # the three waits honoured Retry-After
        fake.calls.clear()
        engine = OpenAIEngine(fake.url, "m", max_retries=3, max_in_flight=2)
        with pytest.raises(ReasonloopError, match="HTTP 429"):
            engine.generate([f"{i}=" for i in range(40)], 1, max_new_tokens=4)
        # the first failure cancels the prompts not yet sent: a few requests' attempts, not 40 x 4
        assert fake.calls.count("/v1/completions") <= 4 * 4


def test_a_few_429s_and_503s_are_retried_then_the_answer_is_used():
    left = {"n": 3}

    def flaky(path, body):
        if path.endswith("/models"):
            return 200, MODELS, {}
        left["n"] -= 1
        if left["n"] >= 0:
            return (503 if left["n"] % 2 else 429), {"error": {"message": "busy"}}, {}
        return 200, plain_completion(body["n"]), {}

    with FakeServer(flaky) as fake:
        engine = OpenAIEngine(fake.url, "m", max_retries=5, backoff_s=0.01)
        (samples,) = engine.generate(["1="], 2, max_new_tokens=4)
        assert [s.text for s in samples] == ["12", "12"] and fake.calls.count("/v1/completions") == 4


def test_a_server_without_logprobs_or_token_ids_degrades_as_documented(capsys):
    def plain(path, body):
        if path.endswith("/models"):  # no model listing either: the name is not checked up front
            return 404, {"error": "not found"}, {}
        return 200, plain_completion(body.get("n", 1)), {}

    with FakeServer(plain) as fake:
        engine = OpenAIEngine(fake.url, "m")
        out = engine.generate(["1=", "2="], 2, max_new_tokens=4, stop=["\n"])
        s = out[1][1]
        assert (s.text, s.token_ids, s.prompt_ids, s.logprobs) == ("12", [], [], [])
        assert s.meta["finish_reason"] == "stop"  # no stop_reason: an end of sequence and a stop string read alike
        err = capsys.readouterr().err
        assert err.count("returns no logprobs") == 1 and err.count("returns no token ids") == 1  # warned once
        with pytest.raises(ReasonloopError, match="returns no prompt logprobs .* cannot score completions"):
            engine.logprobs(["1="], ["2"])


def test_sample_through_an_openai_spec_writes_the_hf_backends_file(model_dir, url, tmp_path):
    """`reasonloop sample --model openai:URL#model` (resumable sampler, problem-keyed seeds) writes the samples
    `--model DIR` writes."""
    common = ["sample", "--num-problems", "3", "--n", "2", "--max-new-tokens", "12", "--seed", "3"]
    assert main([*common, "--model", str(model_dir), "--output", str(tmp_path / "hf.jsonl")]) == 0
    assert main([*common, "--model", f"openai:{url}#{SERVED}", "--output", str(tmp_path / "http.jsonl")]) == 0
    a, b = list(read_jsonl(tmp_path / "hf.jsonl")), list(read_jsonl(tmp_path / "http.jsonl"))
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert (x["problem_id"], x["meta"]["sample_index"], x["text"], x["token_ids"], x["prompt_ids"]) == (
            y["problem_id"], y["meta"]["sample_index"], y["text"], y["token_ids"], y["prompt_ids"]
        )  # fmt: skip
        assert x["reward"] == y["reward"]


def test_search_runs_unchanged_on_a_served_model(model_dir, url, tmp_path):
    """`reasonloop search` (majority vote, batched sampling) with `model=openai:URL#model` answers every problem as
    with `model=DIR`, spending the same generated tokens."""
    common = ["--set", "strategy=majority", "--set", "budget=3", "--set", "n_eval=4", "--set", "max_new_tokens=12"]
    for name, model in (("hf", str(model_dir)), ("http", f"openai:{url}#{SERVED}")):
        assert main(["search", "--run-dir", str(tmp_path / name), "--set", f"model={model}", *common]) == 0
    (a,) = (tmp_path / "hf" / "samples").glob("*.jsonl")
    b = tmp_path / "http" / "samples" / a.name
    hf_rows, http_rows = list(read_jsonl(a)), list(read_jsonl(b))
    assert len(hf_rows) == len(http_rows) == 4
    for x, y in zip(hf_rows, http_rows):
        assert x == y


def test_a_server_started_without_allow_reload_refuses_to_load_weights(url, remote, model_dir):
    resp = httpx.post(url.removesuffix("/v1") + "/update_weights_from_disk", json={"model_path": str(model_dir)})
    assert resp.status_code == 403 and "start it with --allow-reload" in resp.json()["error"]["message"]
    with pytest.raises(ReasonloopError, match="HTTP 403: this server does not load weights on request"):
        remote.load_weights_from_disk(model_dir)
    assert httpx.get(f"{url}/models").json()["data"][0]["root"] == str(model_dir)
