"""Layer 3: generation backends behind the `Generator` protocol (`hf` here; `vllm`, `openai` later)."""

from reasonloop.engine.hf import HFEngine

__all__ = ["HFEngine"]
