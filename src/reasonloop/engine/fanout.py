"""Where sampling and grading run: in this process (`executor: local`) or fanned out over Ray (`executor: ray`).

    executor = open_executor("ray", RayConfig(address="auto"))   # or "local"
    generator = executor.open_generator("hf:/models/qwen", max_batch=256)
    for out in executor.generate_calls(generator, calls): ...      # results in call order
    graded = executor.grade(task.grade, pairs, task.step_delimiter)

Ray is an optional extra (`pip install reasonloop[ray]`), imported only when
`executor: ray` is chosen. With Ray:

- Generation runs on generator actors, one per CPU slot (or one per GPU when
  the cluster has GPUs), each loading the model once (`open_generator` on the
  spec, inside the actor). A model named by a directory must be readable at the
  same path on every node (a shared file system), as a checkpoint is on one
  machine.
- `RayGenerator.generate` splits the prompts into chunks, each prompt keeping
  its own key (`seeds[i]`, or `derive_seed(seed, i)` as the `hf` engine derives
  it), so every sample draws from the stream it would draw from in one local
  call: the same tokens, texts and grades as the local executor. A resumable
  sampler hands whole calls to `generate_calls` instead, so each actor repeats
  the very calls the local executor makes, and the files are the same byte for
  byte (with the same thread count: one torch thread per CPU actor).
- Grading runs as Ray tasks over chunks of samples; the grader is sent once
  with `ray.put`.
- Failures: an actor that dies (killed, out of memory, its node lost) is
  restarted by Ray up to `max_restarts` times, reloading its model, and the
  driver runs the chunk it held again, on whichever actor is free. Results
  live only in the driver until the chunk returns whole, and the driver hands
  them out in call order, so a retried chunk is neither lost nor written twice.
  A chunk that fails `max_restarts + 1` times, or a cluster with no live actor
  left, stops the run with one line. Grading tasks are retried by Ray itself
  (`max_retries`); graders are pure functions, so a rerun grades alike.

It sits in the engine layer because it only composes the engine's
`open_generator` with core's `grade_sample`; eval and the recipes (above it)
take an executor and never import Ray.
"""

from __future__ import annotations

import heapq
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from reasonloop.core import (
    ConfigError,
    Grader,
    Problem,
    ReasonloopError,
    Sample,
    TokenCounts,
    bounded,
    prompt_keys,
)
from reasonloop.core.grading import grade_sample
from reasonloop.engine import open_generator

EXECUTORS = ("local", "ray")
GRADE_CHUNK = 64  # samples per grading task: a task costs about a millisecond of scheduling
IN_FLIGHT_PER_ACTOR = 2  # one chunk running and one queued, so an actor never waits on the driver


@dataclass(frozen=True)
class RayConfig:
    """The Ray cluster `executor: ray` runs on."""

    address: str = ""  # cluster to join ("auto", "ray://head:10001", "head:6379"); empty: start a local cluster
    num_cpus: int = bounded(2, ge=1)  # CPUs of the local cluster started when `address` is empty
    actors: int = bounded(0, ge=0)  # generator actors (0: one per GPU of the cluster if it has GPUs, else per CPU)
    max_restarts: int = bounded(3, ge=0)  # restarts of a failed actor; a chunk is run at most this + 1 times
    object_store_mb: int = bounded(200, ge=80)  # object store of the local cluster, MB (results pass through it)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'reasonloop[ray]' (or pip install ray)") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Refuse, within `timeout_s`, a HOST:PORT (or ray://HOST:PORT) address where nothing listens: Ray itself
    would keep retrying for minutes. `auto` is left to Ray (it looks for a cluster started on this machine)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"ray.address '{address}': expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"ray.address '{address}': nothing answers at {host}:{port} ({e})") from None


class LocalExecutor:
    """Sampling and grading in this process, one call after another."""

    name = "local"

    def open_generator(self, spec: str, *, max_batch: int = 256):
        return open_generator(spec, max_batch=max_batch)

    def generate_calls(self, generator, calls: Iterable[dict[str, Any]]) -> Iterator[list[list[Sample]]]:
        """`generator.generate(**call)` for each call, in order."""
        for call in calls:
            yield generator.generate(**call)

    def grade(self, grader: Grader, pairs: list[tuple[Problem, Sample]], delimiter: str) -> list[Sample]:
        """Each sample graded against its problem (see `grade_sample`), in order."""
        return [grade_sample(grader, p, s, delimiter) for p, s in pairs]

    def release(self, generator) -> None:
        """Nothing to free: a local generator is dropped with its last reference."""

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _GeneratorActor:
    """One model, loaded once, in one Ray worker process; `run` calls one of its generator's methods."""

    def __init__(self, spec: str, max_batch: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.generator = open_generator(spec, max_batch=max_batch)

    def run(self, method: str, kwargs: dict[str, Any]) -> tuple[Any, TokenCounts]:
        before = self.generator.counts.copy()
        out = getattr(self.generator, method)(**kwargs)
        return out, self.generator.counts - before

    def pid(self) -> int:
        return os.getpid()


def _grade_chunk(grader: Grader, pairs: list[tuple[Problem, Sample]], delimiter: str) -> list[Sample]:
    return [grade_sample(grader, p, s, delimiter) for p, s in pairs]


class RayGenerator:
    """A `Generator` whose calls run on Ray actors; see the module docstring."""

    def __init__(self, spec: str, *, max_batch: int, actors: int, gpus: bool, max_restarts: int) -> None:
        ray = _import_ray()
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        actor_class = ray.remote(_GeneratorActor).options(
            max_restarts=max_restarts, max_task_retries=0, **resources
        )  # the driver re-runs a failed chunk itself (on any live actor), so Ray must not retry it too
        self.name = spec
        self.max_batch = max_batch
        self.max_restarts = max_restarts
        self.counts = TokenCounts()
        self.retries = 0  # chunks run again after their actor died
        self.actors = [actor_class.remote(spec, max_batch, 1) for _ in range(actors)]
        self.actor_pids()  # wait until every actor has its model (a bad spec fails here)

    def actor_pids(self) -> list[int]:
        """The process id of each actor, once it is up (a restarted actor has a new one)."""
        ray = _import_ray()
        try:  # Ray retries the call while an actor is (re)starting
            return ray.get([a.pid.options(max_task_retries=-1).remote() for a in self.actors])
        except ray.exceptions.RayActorError as e:
            if not e.actor_init_failed:
                raise
            # the model did not load (a missing directory, ...): the error's last line is the actor's own message
            why = str(e).strip().splitlines()[-1]
            raise ReasonloopError(f"a Ray generator actor could not open '{self.name}': {why}") from None

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
        """`n` samples per prompt, as the `hf` engine draws them: prompt i keeps the key `seeds[i]` (default
        `derive_seed(seed, i)`) whichever chunk and actor it lands on. `progress(k)` as each chunk of k rows returns."""
        keys = prompt_keys(prompts, n, max_new_tokens, seed, seeds)
        # at least two chunks per actor (for balance), none above max_batch rows (the engine's own bound)
        per = max(1, min(self.max_batch // n, -(-len(prompts) // (IN_FLIGHT_PER_ACTOR * len(self.actors)))))
        kw = dict(n=n, temperature=temperature, max_new_tokens=max_new_tokens, stop=stop, top_p=top_p)
        calls = [dict(prompts=prompts[a : a + per], seeds=keys[a : a + per], **kw) for a in range(0, len(prompts), per)]
        out: list[list[Sample]] = []
        for chunk in self.imap("generate", calls, progress=progress):
            out.extend(chunk)
        return out

    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Per-token logprobs of each completion, scored in chunks across the actors."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        per = max(1, min(self.max_batch, -(-len(prompts) // (IN_FLIGHT_PER_ACTOR * len(self.actors)))))
        calls = [
            dict(prompts=prompts[a : a + per], completions=completions[a : a + per])
            for a in range(0, len(prompts), per)
        ]
        return [row for chunk in self.imap("logprobs", calls) for row in chunk]

    def imap(
        self, method: str, calls: Iterable[dict[str, Any]], progress: Callable[[int], None] | None = None
    ) -> Iterator[Any]:
        """`generator.<method>(**call)` for each call, run on the actors, yielded in call order as soon as each
        call and all calls before it have returned. A call whose actor dies is run again (module docstring).

        An actor that failed gets no work until a probe (`pid`, which Ray retries until the actor is back) says
        it has restarted; one whose probe fails is dead for good and is left out."""
        ray = _import_ray()
        calls = list(calls)
        waiting = list(range(len(calls)))  # a heap: the earliest call first, so results keep flowing in order
        attempts = [0] * len(calls)
        state = ["ready"] * len(self.actors)  # ready | restarting | dead
        load = [0] * len(self.actors)
        in_flight: dict[Any, tuple[int, int]] = {}  # object ref -> (call, actor); call -1 is a restart probe
        done: dict[int, Any] = {}
        next_out = 0
        while next_out < len(calls):
            if all(s == "dead" for s in state):
                raise ReasonloopError(f"every Ray generator actor of '{self.name}' died and could not be restarted")
            free = [a for a in range(len(self.actors)) if state[a] == "ready" and load[a] < IN_FLIGHT_PER_ACTOR]
            while waiting and free:
                a = min(free, key=lambda a: (load[a], a))
                c = heapq.heappop(waiting)
                in_flight[self.actors[a].run.remote(method, calls[c])] = (c, a)
                load[a] += 1
                free = [a for a in free if load[a] < IN_FLIGHT_PER_ACTOR]
            if next_out not in done:
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                c, a = in_flight.pop(ref)
                try:
                    value, spent = ray.get(ref) if c >= 0 else (ray.get(ref), None)
                except ray.exceptions.RayTaskError as e:
                    raise e.cause from None  # the generator's own error: running it again would repeat it
                except ray.exceptions.RayActorError as e:
                    if c < 0:  # the probe failed: no restart is left
                        state[a] = "dead"
                        continue
                    load[a] -= 1
                    attempts[c] += 1
                    if attempts[c] > self.max_restarts:
                        why = str(e).strip().splitlines()[0]
                        raise ReasonloopError(
                            f"a {method} chunk failed {attempts[c]} times (its actor died each time): {why}"
                        ) from None
                    self.retries += 1
                    heapq.heappush(waiting, c)
                    if state[a] == "ready":
                        state[a] = "restarting"
                        in_flight[self.actors[a].pid.options(max_task_retries=-1).remote()] = (-1, a)
                    continue
                if c < 0:
                    state[a] = "ready"
                    continue
                load[a] -= 1
                done[c] = value
                self._add(spent)
                if progress is not None and method == "generate":
                    progress(len(calls[c]["prompts"]) * calls[c]["n"])
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1

    def _add(self, spent: TokenCounts) -> None:
        self.counts.generated += spent.generated
        self.counts.prefilled += spent.prefilled
        self.counts.scored += spent.scored
        self.counts.calls += spent.calls

    def close(self) -> None:
        """End the actors (their models and worker processes)."""
        ray = _import_ray()
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


class RayExecutor:
    """Sampling on generator actors and grading in tasks of a Ray cluster; see the module docstring."""

    name = "ray"

    def __init__(self, cfg: RayConfig = RayConfig()) -> None:
        ray = _import_ray()
        self.cfg = cfg
        if not ray.is_initialized():
            if cfg.address:
                _check_reachable(cfg.address)
                try:
                    ray.init(address=cfg.address, log_to_driver=False)
                except ConnectionError as e:  # "auto" with no cluster running here
                    raise ConfigError(f"ray.address '{cfg.address}': {str(e).strip().splitlines()[0]}") from None
            else:  # a private local cluster: no dashboard, a small object store, safe as root and under /tmp
                ray.init(
                    num_cpus=cfg.num_cpus,
                    include_dashboard=False,
                    object_store_memory=cfg.object_store_mb * 1024 * 1024,
                    log_to_driver=False,
                )
        self._generators: list[RayGenerator] = []

    def _actors(self) -> tuple[int, bool]:
        """How many generator actors to start, and whether each takes a GPU. More actors than the cluster has
        slots would wait for ever for the missing ones: a one-line error instead."""
        ray = _import_ray()
        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        kind = "GPU" if gpus else "CPU"
        count = max(1, self.cfg.actors or gpus or int(total.get("CPU", 1)))
        free = ray.available_resources()
        for _ in range(20):  # actors just ended (the last round's) hand their slots back within a moment
            if count <= int(free.get(kind, 0)):
                break
            time.sleep(0.5)
            free = ray.available_resources()
        if count > int(free.get(kind, 0)):
            raise ConfigError(
                f"ray.actors: {count} generator actors need {count} free {kind}s, the cluster has "
                f"{int(free.get(kind, 0))} free of {int(total.get(kind, 0))} (other actors hold the rest)"
            )
        return count, gpus > 0

    def open_generator(self, spec: str, *, max_batch: int = 256) -> RayGenerator:
        count, gpus = self._actors()
        generator = RayGenerator(
            str(spec), max_batch=max_batch, actors=count, gpus=gpus, max_restarts=self.cfg.max_restarts
        )
        self._generators.append(generator)
        return generator

    def generate_calls(self, generator, calls: Iterable[dict[str, Any]]) -> Iterator[list[list[Sample]]]:
        """`generator.generate(**call)` for each call, in call order; whole calls run concurrently on the actors."""
        if isinstance(generator, RayGenerator):
            yield from generator.imap("generate", calls)
        else:
            yield from LocalExecutor().generate_calls(generator, calls)

    def grade(self, grader: Grader, pairs: list[tuple[Problem, Sample]], delimiter: str) -> list[Sample]:
        """Each sample graded against its problem, in Ray tasks of `GRADE_CHUNK` samples; results in order."""
        ray = _import_ray()
        if not pairs:
            return []
        try:
            grader_ref = ray.put(grader)
        except Exception as e:  # noqa: BLE001 - what cannot be serialised varies (locks, live models, sockets)
            raise ConfigError(f"this grader cannot be sent to Ray workers ({e}); use executor: local") from None
        # The generator actors hold every CPU slot (one each), so grading tasks claim none, or they would wait for
        # the actors to end; the window of tasks in flight, one per CPU of the cluster, bounds them instead.
        task = ray.remote(_grade_chunk).options(num_cpus=0, max_retries=self.cfg.max_restarts)
        window = max(1, int(ray.cluster_resources().get("CPU", 1)))
        starts = deque(range(0, len(pairs), GRADE_CHUNK))
        in_flight: list[Any] = []
        out: list[Any] = []
        try:
            while starts or in_flight:
                while starts and len(in_flight) < window:
                    a = starts.popleft()
                    in_flight.append(task.remote(grader_ref, pairs[a : a + GRADE_CHUNK], delimiter))
                out.extend(ray.get(in_flight.pop(0)))  # the oldest first: results stay in input order
        except ray.exceptions.RayTaskError as e:
            raise e.cause from None
        return out

    def release(self, generator) -> None:
        """End `generator`'s actors now (a recipe moves on to the next round's model)."""
        if isinstance(generator, RayGenerator):
            generator.close()
            self._generators = [g for g in self._generators if g is not generator]

    def close(self) -> None:
        """End every actor this executor started; the cluster stays up for the rest of the process."""
        for g in self._generators:
            g.close()
        self._generators = []

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_executor(kind: str = "local", ray: RayConfig = RayConfig()) -> LocalExecutor | RayExecutor:
    """The executor `executor: KIND` names ("local" or "ray")."""
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(ray)
    raise ConfigError(f"executor '{kind}': expected one of {', '.join(EXECUTORS)}")
