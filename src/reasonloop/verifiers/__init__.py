"""Layer 4: verifiers, one interface: `score(problem, steps) -> float`, `score_steps(problem, steps) -> list[float]`."""

from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps
from reasonloop.verifiers.dpo import DpoVerifier, DpoVerifierConfig, preference_pairs, train_dpo_verifier

__all__ = [
    "STEP_AGGREGATES",
    "DpoVerifier",
    "DpoVerifierConfig",
    "aggregate_steps",
    "preference_pairs",
    "train_dpo_verifier",
]
