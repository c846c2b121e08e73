"""Offline learning-history collection (``t2mir collect``): budgets, learners, qualities, runner."""

from training.collect.budgets import BUDGET_NAMES, FAMILIES, family_of, get_budget
from training.collect.quality import QUALITIES, select_snapshots
from training.collect.runner import CollectConfig, collect

__all__ = [
    "BUDGET_NAMES",
    "FAMILIES",
    "QUALITIES",
    "CollectConfig",
    "collect",
    "family_of",
    "get_budget",
    "select_snapshots",
]
