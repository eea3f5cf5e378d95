"""Layer 5: pass@k, maj@k, greedy accuracy, evaluation runs."""

from reasonloop.eval.evaluate import EvalConfig, evaluate, grade, summary_rows
from reasonloop.eval.metrics import maj_at_k, majority_correct, pass_at_k

__all__ = ["EvalConfig", "evaluate", "grade", "maj_at_k", "majority_correct", "pass_at_k", "summary_rows"]
