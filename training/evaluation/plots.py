"""Return-against-episode plots of in-context evaluations (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from training.evaluation.runner import EvalResult, bootstrap_ci
from training.figures import save_figure, seeds_legend


def _task_noun(results: dict[str, EvalResult]) -> str:
    """'20 held-out tasks' when every result is on the same number of held-out tasks, else 'tasks'."""
    counts = {len(set(result.tasks)) for result in results.values()}
    held_out = all(task.startswith("test") for result in results.values() for task in result.tasks)
    count = f"{counts.pop()} " if len(counts) == 1 else ""
    return f"{count}{'held-out ' if held_out else ''}tasks"


def plot_returns(
    results: dict[str, EvalResult],
    png: str | Path,
    title: str | None = None,
    references: dict[str, float] | None = None,
) -> Path:
    """One line per labelled result: mean return over tasks per episode with a 95% bootstrap band;
    ``references`` (label -> return, e.g. from ``training.evaluation.reference``) as dashed lines."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for (label, value), color in zip((references or {}).items(), ("0.45", "0.7", "0.3"), strict=False):
        ax.axhline(value, color=color, linestyle="--", linewidth=1, label=f"{label} ({value:.1f})")
    for label, result in results.items():
        episodes = np.arange(1, result.returns.shape[1] + 1)
        bands = np.array([bootstrap_ci(result.returns[:, e], result.seed) for e in range(len(episodes))])
        name = seeds_legend(label, result.info.get("runs", 1))
        ax.plot(episodes, result.episode_means, marker="o", markersize=3, label=name)
        ax.fill_between(episodes, bands[:, 0], bands[:, 1], alpha=0.2)
    first = next(iter(results.values()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("in-context episode")
    ax.set_ylabel(f"return (mean over {_task_noun(results)})")
    ax.set_title(title or first.env_id)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, png)
