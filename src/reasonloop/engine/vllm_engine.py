"""The `vllm` backend: a `Generator` over in-process vLLM (optional extra `reasonloop[vllm]`, a GPU machine).

Named by the spec `vllm:DIR` (a local checkpoint, or a built-in name). vLLM is
imported only when this backend is chosen; without it the spec is a one-line
error saying what to install.

- Prompts are tokenised here with the checkpoint's tokenizer (as the `hf`
  backend tokenises them) and handed to vLLM as token ids, so `Sample.prompt_ids`
  are the ids the model read; `Sample.token_ids` and `Sample.logprobs` are what
  vLLM sampled and its logprob of each (the untempered model, vLLM's default
  `raw_logprobs`, as the `hf` backend reports them). The text is decoded from
  the ids and cut at the first stop string exactly as the `hf` backend does
  (`hf.make_sample`); where to stop generating is vLLM's call, on its own
  detokenizer over the same tokenizer files.
- Randomness: each prompt's request carries its own seed (`derive_seed(seed,
  i)`, or `seeds[i]`), so a call is reproducible; vLLM draws from its own
  generator, so the samples are not the `hf` backend's for the same seed, and
  vLLM's kernels are not batch-invariant by default, so a prompt's samples may
  change (in the last bits of a logit, sometimes a token) with the rest of its
  batch.
- `logprobs(prompts, completions)` scores through vLLM's prompt logprobs, with
  the completion tokenised on its own, as the `hf` backend does.
- Online training (colocated): `update_weights(model)` copies the trainer's
  weights (a module or `(name, tensor)` pairs with transformers' names) into
  vLLM's model in place (`LLM.apply_model` -> the model's `load_weights`) and
  drops the prefix cache; `load_weights_from_disk(DIR)` does the same from a
  saved checkpoint (how STaR moves the sampler to each round's weights). The
  engine runs vLLM's engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`
  unless the environment says otherwise), so the weights are copied on the GPU,
  not pickled to another process.
- `sleep()` / `wake_up()` free and restore vLLM's GPU memory between rollouts
  when the engine was made with `enable_sleep_mode=True` (level 1 keeps the
  weights in CPU memory; level 2 drops them, and the next `update_weights`
  must bring them back).

Where it has run is recorded in BENCHMARKS.md ("vLLM backend"); its contract
tests (`tests/test_generator_contract.py`) are the other backends' and run
wherever vLLM and a GPU are present.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reasonloop.core import ReasonloopError, Sample, TokenCounts, prompt_keys
from reasonloop.engine.hf import make_sample

INSTALL_HINT = "pip install 'reasonloop[vllm]' on a machine with a GPU vLLM supports"


def import_vllm():
    """The `vllm` module, or a one-line error saying how to get it."""
    try:
        import vllm
    except ImportError as e:
        raise ReasonloopError(
            f"the vllm backend needs vLLM, which is not installed here ({e}); {INSTALL_HINT}"
        ) from None
    return vllm


class VLLMEngine:
    """Generator over an in-process `vllm.LLM`. See the module docstring."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        max_batch: int = 256,
        gpu_memory_utilization: float = 0.5,
        enable_sleep_mode: bool = False,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        **llm_kwargs: Any,
    ):
        from reasonloop.models import check_model_dir, load_tokenizer

        path = Path(model_dir).expanduser()
        check_model_dir(path)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # weights copied in process (update_weights)
        vllm = import_vllm()
        self._vllm = vllm
        self.name = f"vllm:{path}"
        self.path = path
        self.max_batch = max_batch  # how many rows a caller should hand over per call (recipes group by it)
        self.counts = TokenCounts()
        self.tokenizer = load_tokenizer(path)
        self.sleeping = 0  # the sleep level vLLM is at (0: awake)
        self.llm = vllm.LLM(
            model=str(path), dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, enable_sleep_mode=enable_sleep_mode, **llm_kwargs,
        )  # fmt: skip
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def close(self) -> None:
        """Let go of vLLM (its GPU memory goes when the last reference does)."""
        self.llm = None

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError("empty prompt: the engine needs at least one prompt token")
        return ids

    def _open(self) -> Any:
        if self.llm is None:
            raise ReasonloopError(f"{self.name}: the engine is closed")
        return self.llm

    def _awake(self) -> Any:
        self._open()
        if self.sleeping:
            raise ReasonloopError(f"{self.name}: the engine is asleep (level {self.sleeping}); call wake_up() first")
        return self.llm

    # --- generate ----------------------------------------------------------------------
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
        """`n` samples per prompt, each prompt one vLLM request with its own seed (see the module docstring)."""
        prompt_seeds = prompt_keys(prompts, n, max_new_tokens, seed, seeds)
        llm = self._awake()
        stop_t = tuple(s for s in (stop or []) if s)
        prompt_ids = [self.encode(p) for p in prompts]
        params = [
            self._vllm.SamplingParams(
                n=n,
                temperature=max(temperature, 0.0),
                top_p=top_p,
                max_tokens=max_new_tokens,
                stop=list(stop_t) or None,
                seed=s,
                logprobs=0,
                detokenize=bool(stop_t),
            )  # fmt: skip
            for s in prompt_seeds
        ]
        self.counts.calls += 1
        out: list[list[Sample]] = []
        per_call = max(1, self.max_batch // n)  # prompts per vLLM call, so progress is reported between calls
        for c in range(0, len(prompts), per_call):
            chunk = range(c, min(len(prompts), c + per_call))
            answers = llm.generate(
                [{"prompt_token_ids": prompt_ids[i]} for i in chunk], [params[i] for i in chunk], use_tqdm=False
            )
            for i, answer in zip(chunk, answers):
                out.append([self._sample(prompt_ids[i], o, stop_t, temperature, prompt_seeds[i])
                            for o in sorted(answer.outputs, key=lambda o: o.index)])  # fmt: skip
                self.counts.prefilled += len(prompt_ids[i])
            if progress:
                progress(len(chunk) * n)
        return out

    def _sample(self, prompt: list[int], o: Any, stop: tuple[str, ...], temperature: float, seed: int) -> Sample:
        toks = list(o.token_ids)
        lps = [float(position[t].logprob) for t, position in zip(toks, o.logprobs or [])]
        if len(lps) != len(toks):
            raise ReasonloopError(f"{self.name}: vLLM returned {len(lps)} logprobs for {len(toks)} tokens")
        if o.finish_reason == "length":
            reason = "length"
        elif o.finish_reason != "stop":  # "abort", or a request vLLM did not finish
            raise ReasonloopError(f"{self.name}: vLLM ended a sample with finish_reason {o.finish_reason!r}")
        else:  # None: an end of sequence; a string or an id: a stop string or stop token
            reason = "eos" if o.stop_reason is None else "stop"
        self.counts.generated += len(toks)
        return make_sample(self.tokenizer, self.name, prompt, toks, lps, reason, stop, temperature, seed)

    # --- scoring -----------------------------------------------------------------------
    def logprobs(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """Log-probability of each completion token given its prompt (completion tokenised on its own)."""
        if len(prompts) != len(completions):
            raise ValueError("prompts and completions must have the same length")
        llm = self._awake()
        ps = [self.encode(p) for p in prompts]
        cs = [self.tokenizer(x, add_special_tokens=False)["input_ids"] for x in completions]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        answers = llm.generate([{"prompt_token_ids": p + c} for p, c in zip(ps, cs)], params, use_tqdm=False)
        out = []
        for p, c, answer in zip(ps, cs, answers):
            positions = answer.prompt_logprobs or []
            out.append([float(positions[len(p) + k][t].logprob) for k, t in enumerate(c)])
            self.counts.prefilled += len(p)
            self.counts.scored += len(c)
        return out

    # --- weights -----------------------------------------------------------------------
    def update_weights(self, weights: Any) -> None:
        """Copy `weights` (a transformers model, a state dict, or `(name, tensor)` pairs with its names) into vLLM's
        model in place, then drop the prefix cache (its keys and values came from the old weights)."""
        self._open()
        if self.sleeping == 1:
            self.llm.wake_up()
        elif self.sleeping == 2:  # the weights were dropped: map their memory, fill it, then the cache
            self.llm.wake_up(tags=["weights"])
        if hasattr(weights, "state_dict"):
            weights = weights.state_dict()
        pairs = list(weights.items()) if hasattr(weights, "items") else list(weights)
        self.llm.apply_model(_Loader(pairs))
        if self.sleeping == 2:
            self.llm.wake_up(tags=["kv_cache"])
        self.sleeping = 0
        self.llm.reset_prefix_cache()

    def load_weights_from_disk(self, path: str | os.PathLike) -> None:
        """Serve the checkpoint saved in `path` from now on (same architecture and shapes)."""
        from safetensors.torch import load_file

        files = sorted(Path(path).expanduser().glob("*.safetensors"))
        if not files:
            raise ReasonloopError(f"{path}: no *.safetensors weights to load")
        self.update_weights(pair for f in files for pair in load_file(str(f)).items())

    def sleep(self, level: int = 1) -> None:
        """Free vLLM's GPU memory until `wake_up` (needs `enable_sleep_mode=True`)."""
        if level not in (1, 2):
            raise ValueError("sleep level must be 1 (keep weights in CPU memory) or 2 (drop them)")
        llm = self._open()
        if not self.sleeping:
            llm.sleep(level=level)
            self.sleeping = level

    def wake_up(self) -> None:
        """Bring vLLM back after `sleep(1)` (after `sleep(2)`, `update_weights` brings the weights back)."""
        if self.sleeping == 2:
            raise ReasonloopError(f"{self.name}: slept at level 2 (weights dropped); call update_weights(model)")
        if self.sleeping and self.llm is not None:
            self.llm.wake_up()
            self.sleeping = 0


class _Loader:
    """What `LLM.apply_model` runs on vLLM's model: its `load_weights` over transformers-named tensors (vLLM maps
    the names and fuses q/k/v and gate/up itself, as it does when it reads a checkpoint)."""

    def __init__(self, pairs: Iterable[tuple[str, Any]]):
        self.pairs = list(pairs)

    def __call__(self, model) -> int:
        loaded = model.load_weights(self.pairs)
        return len(loaded) if loaded is not None else len(self.pairs)
