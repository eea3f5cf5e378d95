"""Layer 5: pass@k, maj@k, greedy accuracy, accuracy curves, verifier AUROC and first-error F1, evaluation runs, plots."""

from reasonloop.eval.curves import best_of_n_curve, greedy_accuracy, majority_curve
from reasonloop.eval.evaluate import EvalConfig, evaluate, summary_rows
from reasonloop.eval.metrics import maj_at_k, majority_correct, pass_at_k
from reasonloop.eval.plots import save_line_plot
from reasonloop.eval.verifier_metrics import (
    auroc,
    auroc_or_none,
    auroc_within,
    best_threshold,
    error_step_f1,
    predicted_first_error,
)

__all__ = [
    "EvalConfig",
    "auroc",
    "auroc_or_none",
    "auroc_within",
    "best_of_n_curve",
    "best_threshold",
    "error_step_f1",
    "evaluate",
    "greedy_accuracy",
    "maj_at_k",
    "majority_correct",
    "majority_curve",
    "pass_at_k",
    "predicted_first_error",
    "save_line_plot",
    "summary_rows",
]
