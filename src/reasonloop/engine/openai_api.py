"""The `openai` backend: a `Generator` over any OpenAI-compatible completions endpoint (httpx).

Named by the spec `openai:URL#model`, where `URL` is the API base (the one the
`openai` client takes, e.g. `http://127.0.0.1:8000/v1`) and `model` the served
model's name. Works against `reasonloop serve`, vLLM, SGLang or TGI.

- `generate` sends one request per prompt (its `n` samples in that request),
  at most `max_in_flight` at a time, with `seed` set to the prompt's own key:
  `derive_seed(seed, i)` for prompt i, or `seeds[i]`, exactly as the `hf`
  engine keys its streams. Against `reasonloop serve` the samples are then
  those of the `hf` backend on the same model (token ids equal, logprobs equal
  to float rounding); other servers honour `seed` in their own way.
- It asks for `logprobs: 0` (the sampled tokens' logprobs) and vLLM's
  `return_token_ids: true`. What is lost where a server returns no token ids
  or no logprobs (documented in docs/serve.md; a warning is printed once):
  `Sample.token_ids` and `Sample.prompt_ids` are empty, so nothing can be
  trained on the sampled sequence (RL, per-step DPO need the ids; a
  re-tokenised `text` is not what was sampled), and `Sample.logprobs` is empty,
  so importance ratios and sequence logprobs cannot be formed.
- `finish_reason` follows vLLM's `stop_reason`: a stop string or a stop token
  id gives "stop", null gives "eos"; a server that sends no `stop_reason` cannot tell an end of
  sequence from a stop string, and both read "stop".
- `logprobs(prompts, completions)` scores `prompt + completion` with `echo:
  true, max_tokens: 0` and keeps the tokens whose `text_offset` falls in the
  completion. The text is tokenised as one piece, where the `hf` engine
  tokenises the completion on its own: the same for a character-level model
  (nano), possibly not at the boundary for a BPE tokenizer.
- Errors are one line: an unreachable URL (connect timeout `connect_timeout_s`),
  a model the server does not have (checked on `GET /models` when the engine is
  made), a 4xx (the server's message), a read past `timeout_s`. HTTP 429 and
  5xx are retried `max_retries` times with exponential backoff (honouring
  `Retry-After`, capped at `max_backoff_s`), then fail naming the status.
- `load_weights_from_disk(DIR)` asks the server to serve another saved model
  (`reasonloop serve --allow-reload`, SGLang): how a recipe that samples
  through a server keeps it on the weights it trains.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reasonloop.core import ReasonloopError, Sample, TokenCounts, prompt_keys
from reasonloop.core.paths import parse_model_spec


class ServerError(ReasonloopError):
    """The server answered with an HTTP error `status` (after the retries, for 429 and 5xx)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OpenAIEngine:
    """Generator over an OpenAI-compatible `/completions` endpoint. See the module docstring."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_in_flight: int = 8,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_batch: int = 256,
    ):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.name = f"openai:{self.base_url}#{model}"
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_batch = max_batch  # how many rows a caller should hand over per call (recipes group by it)
        self.timeout_s = timeout_s
        self.counts = TokenCounts()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
        )
        self._check_model()

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> OpenAIEngine:
        parsed = parse_model_spec(spec)
        if parsed.backend != "openai":
            raise ReasonloopError(f"model spec '{spec}' is not an openai:URL#model spec")
        return cls(parsed.target, parsed.model, **kwargs)

    def close(self) -> None:
        self.http.close()

    # --- HTTP ----------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, base: str = "") -> Any:
        """One call (to `base` + `path`, `base` defaulting to the API base) with retries on 429 / 5xx; every failure
        is a one-line `ReasonloopError`."""
        import httpx

        url = f"{base or self.base_url}{path}"
        t0 = time.monotonic()
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.http.request(method, url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                raise ReasonloopError(
                    f"cannot reach {url}: {_first_line(e) or type(e).__name__} (is the server running at that URL?)"
                ) from None
            except httpx.TimeoutException:
                raise ReasonloopError(f"{url}: no answer within {self.timeout_s:g} s (timeout_s)") from None
            except httpx.HTTPError as e:
                raise ReasonloopError(f"{url}: {type(e).__name__}: {_first_line(e)}") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                if attempt < self.max_retries:
                    time.sleep(self._backoff(attempt, resp.headers.get("retry-after")))
                    continue
                raise ServerError(
                    f"{url}: HTTP {resp.status_code} ({_server_message(resp)}) after {attempt + 1} attempts over "
                    f"{time.monotonic() - t0:.1f} s; the server is overloaded or failing (retry later, or lower "
                    "max_in_flight)",
                    resp.status_code,
                )
            if resp.status_code >= 400:
                raise ServerError(f"{url}: HTTP {resp.status_code}: {_server_message(resp)}", resp.status_code)
            try:
                return resp.json()
            except ValueError:
                raise ReasonloopError(f"{url}: the answer is not JSON: {resp.text[:120]!r}") from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before retry `attempt + 1`: the server's Retry-After, else exponential with jitter."""
        if retry_after is not None:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _check_model(self) -> None:
        """Fail now, in one line, if the server is unreachable or does not serve the model (servers without
        `GET /models` are let through: the first completion will say)."""
        url = f"{self.base_url}/models"
        try:
            listing = self._request("GET", "/models")
        except ServerError as e:
            if e.status in (404, 405):
                return
            raise
        ids = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] if isinstance(listing, dict) else []
        if ids and self.model_name not in ids:
            raise ReasonloopError(f"{url}: the server has no model '{self.model_name}' (it serves: {', '.join(ids)})")

    def _warn_once(self, what: str, message: str) -> None:
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        print(f"warning: {self.base_url}: {message}", file=sys.stderr)

    def load_weights_from_disk(self, path: str | os.PathLike) -> None:
        """Make the server serve the model saved in `path` (a directory on the server's machine) from now on,
        under the same name: `POST /update_weights_from_disk` at the server's root, as `reasonloop serve
        --allow-reload` and SGLang offer it. A server without it (vLLM, OpenAI, TGI) is a one-line error."""
        root = self.base_url.removesuffix("/v1")
        try:
            answer = self._request("POST", "/update_weights_from_disk", {"model_path": str(path)}, base=root)
        except ServerError as e:
            if e.status in (404, 405):
                raise ReasonloopError(
                    f"{root}: the server cannot load weights on request (no POST /update_weights_from_disk); "
                    "serve the model with `reasonloop serve --allow-reload` (or SGLang)"
                ) from None
            raise
        if isinstance(answer, dict) and answer.get("success") is False:
            raise ReasonloopError(f"{root}/update_weights_from_disk: {' '.join(str(answer.get('message')).split())}")

    # --- generate --------------------------------------------------------------------
    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        *,
        temperature: float = 1.0,
        max_new_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int = 0,
        top_p: float = 1.0,
        progress: Callable[[int], None] | None = None,
        seeds: list[int] | None = None,
    ) -> list[list[Sample]]:
        """`n` samples per prompt, one request per prompt; seeds as the `hf` engine keys them."""
        prompt_seeds = prompt_keys(prompts, n, max_new_tokens, seed, seeds)
        stops = [s for s in (stop or []) if s]

        def one(i: int) -> list[Sample]:
            body = {
                "model": self.model_name, "prompt": prompts[i], "n": n, "max_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "seed": prompt_seeds[i], "logprobs": 0,
                "return_token_ids": True,
            }  # fmt: skip
            if stops:
                body["stop"] = stops
            answer = self._request("POST", "/completions", body)
            samples = self._samples(answer, n, temperature, prompt_seeds[i])
            if progress:
                progress(n)
            return samples

        with self._lock:
            self.counts.calls += 1
        return self._fan_out(one, len(prompts))

    def _samples(self, answer: Any, n: int, temperature: float, seed: int) -> list[Sample]:
        where = f"{self.base_url}/completions"
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise ReasonloopError(f"{where}: asked for n={n} choices, got {got}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        out = []
        for c in choices:
            lp = c.get("logprobs") or {}
            logprobs = [float(x) for x in lp.get("token_logprobs") or []]
            token_ids = c.get("token_ids") or []
            if not logprobs:
                self._warn_once("logprobs", "the server returns no logprobs; samples carry none")
            if not token_ids:
                self._warn_once(
                    "ids", "the server returns no token ids (vLLM's return_token_ids); samples carry none, so "
                    "nothing can be trained on the sampled sequence",
                )  # fmt: skip
            finish = c.get("finish_reason")
            meta: dict[str, Any] = {"model": self.name, "temperature": temperature, "seed": seed}
            if finish == "length":
                meta["finish_reason"] = "length"
            elif isinstance(c.get("stop_reason"), str):
                meta["finish_reason"], meta["stop"] = "stop", c["stop_reason"]
            elif "stop_reason" in c and c["stop_reason"] is None:
                meta["finish_reason"] = "eos"
            else:  # a stop token (vLLM gives its id), or a server that does not say
                meta["finish_reason"] = "stop"
            out.append(
                Sample(
                    problem_id="", text=c.get("text", ""), token_ids=list(token_ids), logprobs=logprobs,
                    prompt_ids=list(c.get("prompt_token_ids") or []), meta=meta,
                )
            )  # fmt: skip
        usage = answer.get("usage") or {}
        with self._lock:
            self.counts.generated += int(usage.get("completion_tokens") or sum(len(s.token_ids) for s in out))
            self.counts.prefilled += int(usage.get("prompt_tokens") or 0)
        return out

    # --- scoring ---------------------------------------------------------------------
    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Log-probability of each completion token given its prompt, through `echo` (see the module docstring)."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")

        def one(i: int) -> list[float]:
            text = prompts[i] + completions[i]
            body = {"model": self.model_name, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
            answer = self._request("POST", "/completions", body)
            lp = ((answer.get("choices") or [{}])[0] or {}).get("logprobs") or {}
            offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
            if not offsets or not values or len(offsets) != len(values):
                raise ReasonloopError(
                    f"{self.base_url}/completions: the server returns no prompt logprobs (echo with max_tokens 0), "
                    "so this backend cannot score completions"
                )
            out = [float(v) for o, v in zip(offsets, values) if o >= len(prompts[i]) and v is not None]
            with self._lock:
                self.counts.scored += len(out)
                self.counts.prefilled += len(values) - len(out)
            return out

        return self._fan_out(one, len(prompts))

    def _fan_out(self, one: Callable[[int], Any], count: int) -> list[Any]:
        """`[one(i) for i in range(count)]` with at most `max_in_flight` running; the first error cancels the
        requests not yet sent (those in flight finish) and is raised."""
        if count <= 1:
            return [one(i) for i in range(count)]
        pool = ThreadPoolExecutor(max_workers=min(self.max_in_flight, count))
        try:
            futures = [pool.submit(one, i) for i in range(count)]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _server_message(resp) -> str:
    """The server's error message in one line (OpenAI's `{"error": {"message": ...}}`, else the body's start)."""
    try:
        body = resp.json()
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        msg = msg or body.get("detail") or body.get("message")
    except (ValueError, AttributeError):
        msg = None
    text = str(msg) if msg else resp.text[:200] or resp.reason_phrase
    return " ".join(text.split())
