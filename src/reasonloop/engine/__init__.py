"""Layer 3: generation backends behind the `Generator` protocol: `hf` (local weights), `vllm` (in process, optional),
`openai` (HTTP)."""

from __future__ import annotations

from reasonloop.core.paths import parse_model_spec, resolve_model
from reasonloop.engine.hf import HFEngine

__all__ = ["HFEngine", "open_generator"]


def open_generator(spec: str, *, max_batch: int = 256):
    """The generator a model spec names: `hf:DIR`, a directory or a built-in name -> `HFEngine`;
    `vllm:DIR` -> `VLLMEngine` (vLLM, imported only then); `openai:URL#model` -> `OpenAIEngine` (httpx, imported
    only then)."""
    parsed = parse_model_spec(spec)
    if parsed.backend == "vllm":
        from reasonloop.engine.vllm_engine import VLLMEngine

        return VLLMEngine(resolve_model(spec), max_batch=max_batch)
    if parsed.backend == "openai":
        from reasonloop.engine.openai_api import OpenAIEngine

        return OpenAIEngine(parsed.target, parsed.model, max_batch=max_batch)
    return HFEngine.from_pretrained(resolve_model(spec), max_batch=max_batch)
