"""Layer 5: pass@k, maj@k, greedy accuracy, verifier AUROC and first-error F1, evaluation runs."""

from reasonloop.eval.evaluate import EvalConfig, evaluate, grade, summary_rows
from reasonloop.eval.metrics import maj_at_k, majority_correct, pass_at_k
from reasonloop.eval.verifier_metrics import auroc, auroc_or_none, best_threshold, error_step_f1, predicted_first_error

__all__ = [
    "EvalConfig",
    "auroc",
    "auroc_or_none",
    "best_threshold",
    "error_step_f1",
    "evaluate",
    "grade",
    "maj_at_k",
    "majority_correct",
    "pass_at_k",
    "predicted_first_error",
    "summary_rows",
]
