"""`reasonloop serve MODEL`: a model the project loads, behind the OpenAI completions API (FastAPI + uvicorn).

Endpoints: `GET /v1/models` and `POST /v1/completions` (not streamed). A
completion request takes `model`, `prompt` (a string or a list of strings),
`n`, `max_tokens` (default 16), `temperature`, `top_p`, `stop` (a string or a
list), `seed`, `logprobs` (0: the sampled tokens' log-probabilities), `echo`
(with `max_tokens: 0`: the prompt's own token log-probabilities, which is how
the `openai` backend scores completions), and vLLM's `return_token_ids` (each
choice then carries `token_ids` and `prompt_token_ids`). Each choice also
carries vLLM's `stop_reason`: the stop string that ended it, the id of a token
that ended it (a token whose text holds a stop string), or null (the end of
sequence, or the token budget).

Sampling is the `hf` engine's: sample j of a prompt keyed `k` draws from the
stream `derive_seed(k, j)`. A request's `seed` keys its first prompt, and prompt
i of a list is keyed `seed + i` (mod 2**63); without a seed the server draws a
fresh key per request. So one prompt sent with `seed: k` gets exactly the
samples of `HFEngine.generate([prompt], n, seeds=[k])`, which is what lets the
`openai` backend reproduce the `hf` backend over HTTP.

Concurrency: one worker thread owns the engine and its tokenizer. Requests that wait together
with the same sampling settings (n, max_tokens, temperature, top_p, stop) are
decoded in one `generate` call; rows draw from their own streams, so this
batching changes no sample, only the throughput.

Limits (a 4xx JSON error, OpenAI's `{"error": {"message", "type", "param",
"code"}}`, naming the field): `n`, `max_tokens`, prompts per request, samples
per request (prompts x n), characters per prompt, the model's context (prompt
tokens + max_tokens), stop strings (16, of 256 characters at most), a body
over `max_body_bytes` (413: from Content-Length, or counted as a chunked body
arrives). Fields the server does not implement (`stream`, `best_of`
above 1, `suffix`, penalties, `logit_bias`, `logprobs` above 0, token-id
prompts) are refused with a 400 rather than ignored; unknown fields too.

Weight reloads (`allow_reload`, the CLI's `--allow-reload`): `POST
/update_weights_from_disk` with `{"model_path": DIR}` loads the model saved in
DIR (a directory on the server's machine) in place of the one served, under
the same name, between two batches: requests that arrived before it are
answered by the old weights, those after it by the new ones. The name and the
body follow SGLang's endpoint of that name, so a recipe that samples through a
server (STaR's `sampler`) can make it follow the weights it trains. Off by
default: a server that loads any directory it is told to should not listen
where others can reach it.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint's `Request` annotation as a class
import asyncio
import json
import math
import queue
import secrets
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from reasonloop.core import Sample

SEED_SPACE = 2**63
MAX_STOP_CHARS = 256  # per stop string
STOP_TABLES_KEPT = 64  # the engine caches a vocabulary-sized table per stop set: bounded, since clients choose them


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on one request; a request past one gets a 400 naming the field."""

    max_n: int = 64  # samples per prompt
    max_tokens: int = 1024  # new tokens per sample
    max_prompts: int = 64  # prompts per request
    max_samples: int = 1024  # prompts x n per request
    max_prompt_chars: int = 100_000  # characters per prompt, checked before tokenising
    max_stop: int = 16  # stop strings per request
    max_body_bytes: int = 8 * 2**20  # request body (413)


class RequestError(Exception):
    """A bad request: HTTP `status`, a one-line `message`, the offending `param`."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        code = "model_not_found" if self.status == 404 else None
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A validated `/v1/completions` request."""

    prompts: tuple[str, ...]
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    return_token_ids: bool = False

    def sampling_key(self) -> tuple:
        """Requests with equal keys can share one `generate` call."""
        return (self.n, self.max_tokens, self.temperature, self.top_p, self.stop)

    def prompt_seeds(self) -> list[int]:
        base = secrets.randbelow(SEED_SPACE) if self.seed is None else self.seed
        return [(base + i) % SEED_SPACE for i in range(len(self.prompts))]


# fields the server accepts only at their no-op value
NO_OP_FIELDS = {
    "stream": (False, None),
    "best_of": (1, None),
    "suffix": (None, ""),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logit_bias": (None, {}),
}
IGNORED_FIELDS = ("user",)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def parse_request(body: Any, limits: ServeLimits, served: str) -> CompletionRequest:
    """Check a request body against the API and the limits; raise `RequestError` naming the field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    known = {f for f in CompletionRequest.__dataclass_fields__} - {"prompts"}
    for key in body:
        if key not in known | {"model", "prompt"} | set(NO_OP_FIELDS) | set(IGNORED_FIELDS):
            raise RequestError(400, f"unknown field '{key}'", key)
    for key, allowed in NO_OP_FIELDS.items():
        if key in body and body[key] not in allowed:
            raise RequestError(400, f"'{key}' is not supported by this server (got {body[key]!r})", key)
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError(400, "'model' is required and must be a string", "model")
    if model != served:
        raise RequestError(404, f"model '{model}' does not exist; this server serves '{served}'", "model")

    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts:
        raise RequestError(400, "'prompt' must be a string or a non-empty list of strings", "prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise RequestError(400, "'prompt' must be text: token-id prompts are not supported by this server", "prompt")
    if len(prompts) > limits.max_prompts:
        raise RequestError(400, f"'prompt' has {len(prompts)} prompts; the limit is {limits.max_prompts}", "prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise RequestError(400, f"prompt {i} is empty", "prompt")
        if len(p) > limits.max_prompt_chars:
            raise RequestError(
                400, f"prompt {i} has {len(p):,} characters; the limit is {limits.max_prompt_chars:,}", "prompt"
            )

    def integer(key: str, default: int, lo: int, hi: int) -> int:
        value = body.get(key, default)
        value = default if value is None else value
        if not _is_int(value) or not lo <= value <= hi:
            raise RequestError(400, f"'{key}' must be an integer in [{lo}, {hi}], got {value!r}", key)
        return value

    def number(key: str, default: float, ok, rule: str) -> float:
        value = body.get(key, default)
        value = default if value is None else value
        if not _is_number(value) or not ok(value):
            raise RequestError(400, f"'{key}' must be a number {rule}, got {value!r}", key)
        return float(value)

    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise RequestError(400, f"'echo' must be true or false, got {echo!r}", "echo")
    n = integer("n", 1, 1, limits.max_n)
    max_tokens = integer("max_tokens", 16, 0 if echo else 1, limits.max_tokens)
    if echo and max_tokens != 0:
        raise RequestError(400, "'echo' is supported only with max_tokens 0 (scoring the prompt)", "echo")
    if len(prompts) * n > limits.max_samples:
        raise RequestError(
            400, f"{len(prompts)} prompts x n={n} is {len(prompts) * n} samples; the limit is {limits.max_samples}", "n"
        )
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "'stop' must be a string or a list of strings", "stop")
    if len(stops) > limits.max_stop:
        raise RequestError(400, f"'stop' has {len(stops)} strings; the limit is {limits.max_stop}", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise RequestError(400, f"a 'stop' string is over {MAX_STOP_CHARS} characters", "stop")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(400, f"'seed' must be an integer, got {seed!r}", "seed")
    logprobs = body.get("logprobs")
    if logprobs is not None and not (_is_int(logprobs) and logprobs == 0):
        raise RequestError(
            400,
            f"'logprobs' must be 0 or null, got {logprobs!r}: the server returns the sampled tokens' logprobs, "
            "not top alternatives",
            "logprobs",
        )
    ids = body.get("return_token_ids", False)
    if not isinstance(ids, bool):
        raise RequestError(400, f"'return_token_ids' must be true or false, got {ids!r}", "return_token_ids")
    return CompletionRequest(
        prompts=tuple(prompts),
        n=n,
        max_tokens=max_tokens,
        temperature=number("temperature", 1.0, lambda t: t >= 0, ">= 0"),
        top_p=number("top_p", 1.0, lambda p: 0 < p <= 1, "in (0, 1]"),
        stop=tuple(s for s in stops if s),
        seed=None if seed is None else seed % SEED_SPACE,
        logprobs=logprobs,
        echo=echo,
        return_token_ids=ids,
    )


@dataclass
class _Job:
    request: CompletionRequest
    seeds: list[int]
    future: Future = field(default_factory=Future)


@dataclass
class _Reload:
    path: str
    future: Future = field(default_factory=Future)


class EngineWorker:
    """One thread that owns the engine and its tokenizer: context checks, every generate and scoring call, and the
    answers' token texts all run here, one job group at a time (a fast tokenizer must not be used from two threads
    at once).

    Jobs that wait together with equal `sampling_key`s are decoded in one `generate` call (`seeds` keep each
    prompt's streams, so the samples are those of separate calls). A job's future resolves to the response body,
    or to a `RequestError` for a prompt past the model's context.
    """

    def __init__(self, engine, served: str):
        self.engine = engine
        self.served = served
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="reasonloop-engine", daemon=True)
        self.thread.start()

    def submit(self, request: CompletionRequest) -> Future:
        job = _Job(request, request.prompt_seeds())
        self.queue.put(job)
        return job.future

    def reload(self, path: str) -> Future:
        """Serve the model saved in `path` from the next batch on; resolves to the path loaded, or to a
        `RequestError` (400) naming what is wrong with it."""
        job = _Reload(path)
        self.queue.put(job)
        return job.future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        held: _Job | _Reload | None = None  # what ended the last round early: the next round starts with it
        while True:
            first, held = (held if held is not None else self.queue.get()), None
            if first is None:
                return
            if isinstance(first, _Reload):
                self._reload(first)
                continue
            jobs = [first]
            while True:  # everything already waiting joins this round, up to a reload (it must come after)
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.queue.put(None)
                    break
                if isinstance(job, _Reload):
                    held = job
                    break
                jobs.append(job)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                try:
                    check_context(self.engine, job.request)
                except RequestError as e:
                    job.future.set_exception(e)
                    continue
                key = ("echo",) if job.request.echo else job.request.sampling_key()
                groups.setdefault(key, []).append(job)
            for key, group in groups.items():
                try:
                    results = self._score(group) if key == ("echo",) else self._generate(group)
                    bodies = [self._response(job.request, res) for job, res in zip(group, results)]
                except Exception as e:  # noqa: BLE001 - handed to the waiting requests, which answer 500
                    for job in group:
                        job.future.set_exception(e)
                    continue
                for job, body in zip(group, bodies):
                    job.future.set_result(body)

    def _reload(self, job: _Reload) -> None:
        from reasonloop.core import ReasonloopError
        from reasonloop.models import check_model_dir

        try:
            check_model_dir(job.path)
            engine = type(self.engine).from_pretrained(job.path, max_batch=self.engine.max_batch)
        except (ReasonloopError, OSError, ValueError) as e:
            job.future.set_exception(RequestError(400, f"cannot load '{job.path}': {_first_line(e)}", "model_path"))
            return
        except Exception as e:  # noqa: BLE001 - any other failure to load: the old weights stay served
            job.future.set_exception(
                RequestError(
                    500, f"loading '{job.path}' failed: {type(e).__name__}: {_first_line(e)}", kind="server_error"
                )
            )
            return
        self.engine = engine
        job.future.set_result(job.path)

    def _generate(self, group: list[_Job]) -> list[list[list[Sample]]]:
        r = group[0].request
        if len(self.engine._stop_tables) >= STOP_TABLES_KEPT:  # same package: the engine's per-stop-set cache
            self.engine._stop_tables.clear()
        prompts = [p for job in group for p in job.request.prompts]
        seeds = [s for job in group for s in job.seeds]
        out = self.engine.generate(
            prompts, r.n, temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_tokens,
            stop=list(r.stop), seeds=seeds,
        )  # fmt: skip
        split, at = [], 0
        for job in group:
            split.append(out[at : at + len(job.request.prompts)])
            at += len(job.request.prompts)
        return split

    def _score(self, group: list[_Job]) -> list[list[tuple[list[int], list[float]]]]:
        """Each prompt's token ids and the logprob of every token after the first (one forward per prompt)."""
        out = []
        for job in group:
            rows = []
            for p in job.request.prompts:
                ids = self.engine.encode(p)
                logp = self.engine._forward_logprobs([ids])[0]  # (T, V); same package: the engine's scoring pass
                rows.append((ids, [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]))
                self.engine.counts.scored += len(ids)
            out.append(rows)
        return out

    def _response(self, request: CompletionRequest, result) -> dict[str, Any]:
        """The OpenAI completion object for one request: choice i*n + j is sample j of prompt i."""
        tok = self.engine.tokenizer
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for i, prompt in enumerate(request.prompts):
            if request.echo:
                ids, lps = result[i]
                for j in range(request.n):
                    choices.append(_echo_choice(tok, request, i * request.n + j, prompt, ids, lps))
                prompt_tokens += len(ids)
                continue
            for j, s in enumerate(result[i]):
                choices.append(_choice(tok, request, i * request.n + j, s, prompt))
                completion_tokens += len(s.token_ids)
            prompt_tokens += len(result[i][0].prompt_ids)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.served,
            "choices": choices,
            "usage": usage,
        }


def check_context(engine, request: CompletionRequest) -> None:
    """Every prompt fits the model's context with its token budget (400 naming the prompt otherwise)."""
    context = getattr(engine.model.config, "max_position_embeddings", None)
    for i, p in enumerate(request.prompts):
        n_tokens = len(engine.tokenizer(p)["input_ids"])
        if n_tokens == 0:
            raise RequestError(400, f"prompt {i} encodes to no tokens", "prompt")
        if context and n_tokens + request.max_tokens > context:
            raise RequestError(
                400,
                f"prompt {i} is {n_tokens:,} tokens; with max_tokens {request.max_tokens:,} it exceeds the model's "
                f"context ({context:,} tokens)",
                "prompt",
            )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _token_texts(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([t]) for t in ids]


def _choice(tokenizer, request: CompletionRequest, index: int, s: Sample, prompt: str) -> dict[str, Any]:
    reason = s.meta.get("finish_reason")
    # vLLM's stop_reason: the stop string, else the token that stopped the row (a token whose text holds a stop
    # string), else null (end of sequence, or the budget)
    stop_reason = s.meta.get("stop", s.token_ids[-1] if reason == "stop" and s.token_ids else None)
    choice: dict[str, Any] = {
        "index": index,
        "text": s.text,
        "logprobs": None,
        "finish_reason": "length" if reason == "length" else "stop",
        "stop_reason": stop_reason,
    }
    if request.logprobs is not None:
        texts = _token_texts(tokenizer, s.token_ids)
        offsets, at = [], len(prompt)
        for t in texts:
            offsets.append(at)
            at += len(t)
        choice["logprobs"] = {
            "tokens": texts,
            "token_logprobs": s.logprobs,
            "top_logprobs": None,
            "text_offset": offsets,
        }
    if request.return_token_ids:
        choice["token_ids"] = s.token_ids
        choice["prompt_token_ids"] = s.prompt_ids
    return choice


def _echo_choice(tokenizer, request: CompletionRequest, index: int, prompt: str, ids: list[int], lps: list[float]):
    offsets = [a for a, _ in tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]]
    choice: dict[str, Any] = {
        "index": index,
        "text": prompt,
        "logprobs": {
            "tokens": _token_texts(tokenizer, ids),
            "token_logprobs": [None, *lps],  # the first token has no context to be predicted from
            "top_logprobs": None,
            "text_offset": offsets,
        },
        "finish_reason": "length",
        "stop_reason": None,
    }
    if request.return_token_ids:
        choice["token_ids"], choice["prompt_token_ids"] = [], ids
    return choice


def make_app(engine, served: str, limits: ServeLimits | None = None, *, allow_reload: bool = False):
    """The FastAPI application serving `engine` (an `HFEngine`) under the model name `served`; with `allow_reload`,
    `POST /update_weights_from_disk` swaps in another saved model (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    limits = limits or ServeLimits()
    worker = EngineWorker(engine, served)
    created = int(time.time())

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.close()

    app = FastAPI(title="reasonloop", lifespan=lifespan)
    app.state.worker = worker

    def error(e: RequestError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        current = worker.engine  # replaced by a reload
        context = getattr(current.model.config, "max_position_embeddings", None)
        card = {
            "id": served, "object": "model", "created": created, "owned_by": "reasonloop", "max_model_len": context,
            "root": current.name,
        }  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(raw: Request):
        if not allow_reload:
            return error(
                RequestError(403, "this server does not load weights on request (start it with --allow-reload)")
            )
        try:
            body = json.loads(await raw.body())
        except ValueError:
            return error(RequestError(400, "the request body is not valid JSON"))
        path = body.get("model_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path:
            return error(RequestError(400, "'model_path' is required: a model directory on the server", "model_path"))
        try:
            loaded = await asyncio.wrap_future(worker.reload(path))
        except RequestError as e:
            return JSONResponse({"success": False, "message": e.message, **e.body()}, status_code=e.status)
        return {"success": True, "message": f"now serving the weights in {loaded}", "model_path": loaded}

    @app.post("/v1/completions")
    async def completions(raw: Request):
        too_big = RequestError(413, f"the request body is over the limit of {limits.max_body_bytes:,} bytes")
        size = raw.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            return error(too_big)
        data = bytearray()
        async for chunk in raw.stream():  # a chunked body has no length to check up front: count as it comes
            data += chunk
            if len(data) > limits.max_body_bytes:
                return error(too_big)
        try:
            body = json.loads(data)
        except ValueError:
            return error(RequestError(400, "the request body is not valid JSON"))
        try:
            request = parse_request(body, limits, served)
            return await asyncio.wrap_future(worker.submit(request))
        except RequestError as e:
            return error(e)
        except Exception as e:  # noqa: BLE001 - the engine failed on a valid request: a 500 saying why, in one line
            msg = f"the engine failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return error(RequestError(500, msg, kind="server_error"))

    return app


def serve(
    engine, served: str, *, host: str, port: int, limits: ServeLimits | None = None, allow_reload: bool = False
) -> None:
    """Serve until interrupted (uvicorn)."""
    import uvicorn

    app = make_app(engine, served, limits, allow_reload=allow_reload)
    uvicorn.run(app, host=host, port=port, log_level="warning")
