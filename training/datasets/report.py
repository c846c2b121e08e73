"""Summaries and plots of collected datasets, from their manifests alone (no task files needed).

    python -m training.datasets.report data/darkroom-mixed/manifest.json \\
        --png docs/learning_histories_darkroom.png

prints a one-line summary (tasks, episodes, steps, return at the start / end of the histories,
collection time) and draws the episode return along the learning history: the mean over tasks with
a band from the 25th to the 75th percentile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.figures import save_figure


def history_matrix(manifest: dict[str, Any]) -> np.ndarray:
    """(n_tasks, max_episodes) returns in history order, NaN-padded where a task has fewer episodes."""
    rows = [np.asarray(t["returns"], dtype=np.float64) for t in manifest["tasks"]]
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of one dataset."""
    returns = history_matrix(manifest)
    tenth = max(1, returns.shape[1] // 10)
    steps = sum(t.get("env_steps", 0) for t in manifest["tasks"])
    return {
        "env_id": manifest["env_id"],
        "quality": manifest["quality"],
        "budget": manifest["budget"]["name"],
        "status": manifest.get("status"),
        "tasks": len(manifest["tasks"]),
        "episodes": int(sum(t["n_episodes"] for t in manifest["tasks"])),
        "learner_env_steps": int(steps),
        "return_first_10pct": round(float(np.nanmean(returns[:, :tenth])), 2),
        "return_last_10pct": round(float(np.nanmean(returns[:, -tenth:])), 2),
        "task_wall_s_sum": manifest.get("collect_wall_s_sum"),
        "elapsed_s_last_run": manifest.get("elapsed_s"),
    }


def plot_learning_histories(manifest: dict[str, Any], png: str | Path, title: str | None = None) -> Path:
    """Mean episode return over tasks along the history, with the 25-75 % band across tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = history_matrix(manifest)
    x = np.arange(returns.shape[1])
    mean = np.nanmean(returns, axis=0)
    lo, hi = np.nanpercentile(returns, 25, axis=0), np.nanpercentile(returns, 75, axis=0)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.fill_between(x, lo, hi, alpha=0.3, linewidth=0, label="25-75 % of tasks")
    ax.plot(x, mean, linewidth=1.2, label=f"mean over {returns.shape[0]} tasks")
    budget = manifest["budget"]
    per_snap = budget.get("episodes_per_snapshot", 1)
    ax.set_xlabel(
        "episode in the task's learning history" + (f" ({per_snap} per snapshot)" if per_snap > 1 else "")
    )
    ax.set_ylabel("episode return")
    ax.set_title(title or f"{manifest['env_id']} {manifest['quality']} ({budget['name']} budget)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="a dataset's manifest.json (or its directory)")
    parser.add_argument("--png", help="write the learning-history plot here")
    parser.add_argument("--title", help="plot title")
    args = parser.parse_args(argv)
    path = Path(args.manifest)
    manifest = json.loads((path / "manifest.json" if path.is_dir() else path).read_text())
    print(json.dumps(summary(manifest)))
    if args.png:
        plot_learning_histories(manifest, args.png, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
