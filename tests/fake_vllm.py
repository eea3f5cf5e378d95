"""A stand-in for the `vllm` module on machines without vLLM and a GPU: the slice of vLLM 0.34's API that
`engine.vllm_engine` uses (`LLM.generate` on token-id prompts, `SamplingParams`, `RequestOutput` /
`CompletionOutput` with per-position `{token_id: Logprob}` dicts, prompt logprobs, `apply_model`, sleep and wake,
`reset_prefix_cache`), answered by the `hf` engine on the LLM's own copy of the weights.

It lets the contract tests and the weight-following tests run the vLLM backend's own code (chunking, seeds, stop
handling, finish reasons, weight copies, the RL and STaR wiring) in CI; what it cannot tell is whether real vLLM
behaves as its documentation and source say, which only the same tests on a GPU machine can (docs/vllm.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from reasonloop.engine import HFEngine


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True

    def __post_init__(self):
        if self.stop and not self.detokenize:
            raise ValueError("stop strings need detokenize=True")  # as vLLM refuses them


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Model:
    """vLLM's model as `apply_model` hands it over: `load_weights` over checkpoint-named tensors."""

    def __init__(self, module):
        self.module = module

    def load_weights(self, weights) -> set[str]:
        weights = dict(weights)
        own = self.module.state_dict()
        unknown = sorted(set(weights) - set(own))
        if unknown:
            raise KeyError(f"no parameter named {unknown[0]}")
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        return set(weights)


class LLM:
    def __init__(self, model: str, *, enable_sleep_mode: bool = False, **kwargs: Any):
        self.hf = HFEngine.from_pretrained(model)
        self.enable_sleep_mode = enable_sleep_mode
        self.asleep = 0
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=256))

    def generate(self, prompts, params, use_tqdm: bool = True) -> list[RequestOutput]:
        assert not self.asleep, "generate while asleep"
        params = params if isinstance(params, list) else [params] * len(prompts)
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params)]

    def _one(self, ids: list[int], sp: SamplingParams) -> RequestOutput:
        tok = self.hf.tokenizer
        if sp.prompt_logprobs is not None:
            logp = self.hf._forward_logprobs([ids])[0]
            positions = [None] + [{t: Logprob(float(logp[k, t]))} for k, t in enumerate(ids[1:])]
            return RequestOutput(ids, positions, [CompletionOutput(0, "", [], None, "length")])
        text = tok.decode(ids, skip_special_tokens=True)
        assert self.hf.encode(text) == ids, "the fake answers prompts whose text re-encodes to their ids"
        samples = self.hf.generate([text], sp.n, temperature=sp.temperature, top_p=sp.top_p,
                                   max_new_tokens=sp.max_tokens, stop=sp.stop, seeds=[sp.seed or 0])[0]  # fmt: skip
        outs = []
        for j, s in enumerate(samples):
            reason = s.meta["finish_reason"]
            outs.append(CompletionOutput(
                j, s.text, list(s.token_ids), [{t: Logprob(x)} for t, x in zip(s.token_ids, s.logprobs)],
                "length" if reason == "length" else "stop", s.meta.get("stop"),
            ))  # fmt: skip
        return RequestOutput(ids, None, outs)

    def apply_model(self, func):
        return [func(_Model(self.hf.model))]

    def reset_prefix_cache(self, *a, **k) -> bool:
        return True

    def sleep(self, level: int = 1, **kwargs) -> None:
        assert self.enable_sleep_mode, "sleep needs enable_sleep_mode=True"
        self.asleep = level
        if level == 2:  # the weights are dropped
            with torch.no_grad():
                for p in self.hf.model.parameters():
                    p.zero_()

    def wake_up(self, tags: list[str] | None = None) -> bool:
        if tags is None or "kv_cache" in tags:
            self.asleep = 0
        return not self.asleep
