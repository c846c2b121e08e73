"""In-context evaluation on held-out tasks (Algorithms 2 and 4) through the serving engine."""

from training.evaluation.runner import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
