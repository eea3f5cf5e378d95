"""Layer 4: verifiers, one interface: `score(problem, steps) -> float`, `score_steps(problem, steps) -> list[float]`.

- `DpoVerifier`: V-STaR's DPO verifier (log-likelihood ratio to a reference);
- `ValueVerifier`: a value head, trained as an ORM (`orm_examples`), a PRM with Monte-Carlo labels
  (`mc_step_values`, `prm_examples`) or a Bradley-Terry reward model (`train_bt_verifier`);
- `PavVerifier`: the process advantage verifier (value plus alpha times the prover's advantage);
- `CheckedVerifier`: a value verifier plus a `StepChecker` that re-derives each step's claim in isolation;
- `GenRMVerifier`: the generative verifier (P(Yes) after sampled verifications; GenRM-CoT with step checks).
"""

from reasonloop.verifiers.aggregate import STEP_AGGREGATES, aggregate_steps
from reasonloop.verifiers.check import CheckedVerifier, StepChecker, claim_split
from reasonloop.verifiers.dpo import DpoVerifier, DpoVerifierConfig, preference_pairs, train_dpo_verifier
from reasonloop.verifiers.genrm import (
    GenRMConfig,
    GenRMVerifier,
    Verdicts,
    check_pairs,
    train_genrm,
    verification_pairs,
)
from reasonloop.verifiers.pav import PavVerifier, best_of_k_values, pav_examples, step_advantages
from reasonloop.verifiers.value import (
    StepExample,
    StepRollouts,
    ValueVerifier,
    ValueVerifierConfig,
    mc_step_rollouts,
    mc_step_values,
    orm_examples,
    prm_examples,
    train_bt_verifier,
    train_value_verifier,
)

__all__ = [
    "STEP_AGGREGATES",
    "CheckedVerifier",
    "DpoVerifier",
    "DpoVerifierConfig",
    "GenRMConfig",
    "GenRMVerifier",
    "PavVerifier",
    "StepChecker",
    "StepExample",
    "StepRollouts",
    "ValueVerifier",
    "ValueVerifierConfig",
    "Verdicts",
    "aggregate_steps",
    "claim_split",
    "check_pairs",
    "best_of_k_values",
    "mc_step_rollouts",
    "mc_step_values",
    "orm_examples",
    "pav_examples",
    "preference_pairs",
    "prm_examples",
    "step_advantages",
    "verification_pairs",
    "train_bt_verifier",
    "train_dpo_verifier",
    "train_genrm",
    "train_value_verifier",
]
