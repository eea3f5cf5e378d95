"""`executor: ray`: eval and a STaR round on a local 2-CPU Ray cluster give what the local executor gives, and an
actor killed mid-run loses and duplicates nothing.

One cluster for the module (starting Ray costs seconds). Every local run here uses one torch thread, as each Ray
actor does, so the sample files can be compared byte for byte (float rounding of logprobs depends on the thread
count).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest
import ray
import torch

from reasonloop.cli import main
from reasonloop.core import ConfigError, ReasonloopError
from reasonloop.engine import HFEngine
from reasonloop.engine.fanout import LocalExecutor, RayConfig, RayExecutor, open_executor
from reasonloop.recipes import StarConfig, run_star
from reasonloop.recipes.common import sample_jsonl
from reasonloop.tasks import ArithTask


@pytest.fixture(scope="module")
def cluster():
    """A private local cluster as CI runs it (as root, under /tmp): 2 CPUs, no dashboard, a 200 MB object store."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _eval(model, out, executor: str) -> dict:
    argv = ["--threads", "1", "eval", "--model", str(model), "--task", "arith", "--num-problems", "12"]
    argv += ["--n", "4", "--max-new-tokens", "24", "--max-batch", "16", "--seed", "3", "--output", str(out)]
    assert main(argv + ["--executor", executor]) == 0
    res = json.loads(out.read_text())
    del res["seconds"], res["executor"]
    return res


def test_eval_on_ray_equals_local(cluster, solver_tiny_dir, tmp_path, one_thread):
    local = _eval(solver_tiny_dir, tmp_path / "local.json", "local")
    remote = _eval(solver_tiny_dir, tmp_path / "ray.json", "ray")
    assert remote == local
    assert 0 < local["greedy_accuracy"] and local["pass@4"] > 0  # graded work, not an empty comparison


def test_star_round_on_ray_equals_local(cluster, solver_tiny_dir, tmp_path, one_thread):
    base = dict(model=str(solver_tiny_dir), n_train=12, n_eval=6, rounds=1, samples=2, max_new_tokens=24)
    base |= dict(epochs=1, batch_size=4, max_batch=8)  # 4 problems a call: 3 calls per file, spread over the actors
    local = run_star(StarConfig(**base), tmp_path / "local", log=lambda s: None)
    remote = run_star(StarConfig(**base, executor="ray"), tmp_path / "ray", log=lambda s: None)
    assert remote == local
    for name in ("round1-plain", "round1-hint"):
        a, b = (tmp_path / d / "samples" / f"{name}.jsonl" for d in ("local", "ray"))
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 0
    assert local["rounds"][0]["rationales_plain"] > 0
    # where the work ran is not part of the run: the Ray run resumes (here: finds itself finished) locally
    assert run_star(StarConfig(**base), tmp_path / "ray", log=lambda s: None) == remote


class _KillFirstActorMidRun(RayExecutor):
    """Freezes actor 0 of `victim` (SIGSTOP) as sampling starts, so the calls it is handed are certainly still in
    flight, and kills it (SIGKILL) a second after they were handed out, while actor 1 works on."""

    def __init__(self, victim) -> None:
        super().__init__()
        self.victim = victim
        self.killed_pid: int | None = None

    def generate_calls(self, generator, calls):
        self.killed_pid = self.victim.actor_pids()[0]
        os.kill(self.killed_pid, signal.SIGSTOP)

        def handed_out():  # the generator lists every call, then hands them to the actors at once
            yield from calls
            threading.Timer(1.0, os.kill, (self.killed_pid, signal.SIGKILL)).start()

        yield from super().generate_calls(generator, handed_out())


class TestOnSharedActors:
    """Two generator actors (one per CPU) on the tiny solver model, loaded once for these tests; they hold both
    CPUs of the cluster, so they end with the class, before the tests that start actors of their own."""

    @pytest.fixture(scope="class")
    def generator(self, cluster, solver_tiny_dir):
        with RayExecutor() as executor:
            yield executor.open_generator(str(solver_tiny_dir), max_batch=16)

    def test_generate_and_grade_keep_each_rows_key(self, generator, solver_tiny_dir, one_thread):
        """Split over actors, every sample is the one a single local call draws (tokens, text, grade; logprobs to
        float rounding: the chunks batch rows differently), and `logprobs` scores alike."""
        task = ArithTask()
        problems = task.problems("test", 10, seed=1)
        prompts = [p.prompt for p in problems]
        engine = HFEngine.from_pretrained(solver_tiny_dir, max_batch=8)
        local = engine.generate(prompts, 3, temperature=1.0, max_new_tokens=24, seed=7)
        assert len(generator.actors) == 2  # one per CPU of the cluster
        remote = generator.generate(prompts, 3, temperature=1.0, max_new_tokens=24, seed=7)
        pairs = [(p, s) for p, ss in zip(problems, remote) for s in ss]
        graded = RayExecutor().grade(task.grade, pairs, task.step_delimiter)
        scored = generator.logprobs(prompts, [ss[0].text for ss in local])
        flat_local = [s for ss in local for s in ss]
        assert [(s.text, s.token_ids, s.meta["seed"]) for s in flat_local] == [
            (s.text, s.token_ids, s.meta["seed"]) for ss in remote for s in ss
        ]
        assert max(abs(a - b) for x, y in zip(flat_local, graded) for a, b in zip(x.logprobs, y.logprobs)) < 1e-5
        expected = LocalExecutor().grade(task.grade, [(p, s) for p, ss in zip(problems, local) for s in ss], "\n")
        assert [(s.problem_id, s.answer, s.reward) for s in graded] == [
            (s.problem_id, s.answer, s.reward) for s in expected
        ]
        assert any(s.reward == 1.0 for s in graded) and any(s.reward == 0.0 for s in graded)
        want = engine.logprobs(prompts, [ss[0].text for ss in local])
        assert all(abs(a - b) < 1e-5 for x, y in zip(want, scored) for a, b in zip(x, y))

    def test_killed_actor_loses_and_duplicates_nothing(self, generator, solver_tiny_dir, tmp_path, one_thread):
        task = ArithTask()
        problems = task.problems("train", 24, seed=100)
        kw = dict(temperature=1.0, max_new_tokens=32, seed=11)
        local_engine = HFEngine.from_pretrained(solver_tiny_dir, max_batch=16)
        sample_jsonl(tmp_path / "local.jsonl", local_engine, task, problems, lambda p: p.prompt, 4, **kw)
        executor = _KillFirstActorMidRun(generator)
        retries = generator.retries
        out = sample_jsonl(
            tmp_path / "ray.jsonl", generator, task, problems, lambda p: p.prompt, 4, executor=executor, **kw
        )
        assert generator.retries > retries  # the calls the killed actor held were run again
        assert generator.actor_pids()[0] != executor.killed_pid  # actor 0 was restarted
        assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
        assert len(out) == 4 * len(problems)


def test_a_call_that_keeps_killing_its_actor_stops_with_one_line(cluster, solver_tiny_dir):
    with RayExecutor(RayConfig(actors=1, max_restarts=0)) as executor:
        gen = executor.open_generator(str(solver_tiny_dir), max_batch=4)
        os.kill(gen.actor_pids()[0], signal.SIGKILL)
        with pytest.raises(ReasonloopError, match="failed 1 times") as err:
            gen.generate(["1+1="], 1, max_new_tokens=4)
        assert "\n" not in str(err.value)


def test_errors_are_one_line(cluster, solver_tiny_dir, tmp_path, monkeypatch, capsys):
    long = tmp_path / "long.jsonl"  # a prompt beyond the model's 256 positions: refused here, before any actor
    long.write_text(json.dumps({"question": "1 + " * 300 + "1", "answer": "x\n#### 301"}) + "\n")
    argv = ["eval", "--model", str(solver_tiny_dir), "--task", "gsm8k", "--data", str(long), "--num-problems", "1"]
    assert main([*argv, "--executor", "ray", "--output", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {long}:1: prompt is") and "longer than the model's context (256)" in err, err
    with pytest.raises(ConfigError, match="executor 'dask'"):
        open_executor("dask")
    with pytest.raises(ConfigError, match="config key 'executor'"):
        StarConfig(executor="dask")
    with RayExecutor() as executor, pytest.raises(ReasonloopError, match="could not open .*model path") as err:
        executor.open_generator(str(tmp_path / "missing"))  # the actor's own one-line error, not Ray's traceback
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="ray.actors: 3 generator actors need 3 free CPUs, the cluster has 2"):
        RayExecutor(RayConfig(actors=3)).open_generator(str(tmp_path))  # would wait for ever for a third CPU
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a process that has not joined a cluster yet
    with pytest.raises(ConfigError, match="ray.address '127.0.0.1:1': nothing answers at 127.0.0.1:1"):
        RayExecutor(RayConfig(address="127.0.0.1:1"))  # Ray would retry for minutes
    with pytest.raises(ConfigError, match="ray.address 'head': expected auto, HOST:PORT"):
        RayExecutor(RayConfig(address="head"))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: one line saying how to install it
    with pytest.raises(ConfigError, match=r"pip install 'reasonloop\[ray\]'"):
        open_executor("ray")
