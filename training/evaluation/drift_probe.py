"""Does a Point-Robot policy search, or drift one way? Its first move against what it later reaches.

A policy that infers the goal from rewards improves on every task. One that has learned a single
default move improves only where the goal happens to lie along that move. This probe plays the
evaluation protocol (``training.evaluation.runner.evaluate``, Algorithm 2 / 4) on a split and, per
task, sets the direction of the first episode's displacement beside the direction of the goal and
the task's best normalised return (stay 0, oracle 1). A strong correlation between the two, with
first moves that all point the same way, says the policy drifts rather than searches.

    python -m training.evaluation.drift_probe --checkpoint checkpoints/pointrobot-t2mir-ad \\
        --tasks train --split-seed 1 --png docs/drift_pointrobot.png
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from t2mir_model import SessionHistory, T2MIRPolicy, card_action_noise, read_card
from training.envs import task_split
from training.evaluation.reference import normalised_score, task_references
from training.evaluation.runner import evaluate
from training.figures import save_figure

ENV_ID = "t2mir/PointRobot-v0"


@dataclass(frozen=True)
class DriftRow:
    """One task: where the first episode went, where the goal is, how well the task was solved."""

    task: str
    drift_angle: float
    """Degrees, direction of the first episode's start-to-end displacement."""
    drift_length: float
    goal_angle: float
    """Degrees, direction of the goal from the origin."""
    cos: float
    """Cosine between the first displacement and the goal direction."""
    best_normalised: float
    """The task's best episode return on its own scale: standing still 0, the oracle 1."""


def drift_rows(
    policy: T2MIRPolicy,
    split: str,
    split_seed: int,
    n_tasks: int,
    episodes: int,
    seed: int = 0,
    action_noise: float = 0.0,
) -> list[DriftRow]:
    """Play ``episodes`` in-context episodes on the first ``n_tasks`` tasks of a split; one row each.

    ``action_noise`` is passed to ``evaluate`` (the exploration a served session would add)."""
    if policy.config.env_id != ENV_ID:
        raise ValueError(f"the drift probe is for {ENV_ID} checkpoints, not {policy.config.env_id!r}")
    train, test = task_split(ENV_ID, split_seed)
    tasks = (test if split == "test" else train)[:n_tasks]
    histories = [SessionHistory() for _ in tasks]
    result = evaluate(policy, tasks, episodes, seed=seed, histories=histories, action_noise=action_noise)
    rows = []
    for task, history, returns in zip(tasks, histories, result.returns, strict=True):
        first = history.episodes[0]
        moves = first.actions.double().numpy()  # (T, 2), clipped by the env as by the policy's tanh
        drift = moves.sum(0)  # (2,)
        goal = np.asarray(task.params["goal"], dtype=np.float64)  # (2,)
        refs = task_references(ENV_ID, task, episodes=5, seed=seed)
        length = float(np.linalg.norm(drift))
        rows.append(
            DriftRow(
                task=task.name,
                drift_angle=math.degrees(math.atan2(drift[1], drift[0])),
                drift_length=length,
                goal_angle=math.degrees(math.atan2(goal[1], goal[0])),
                cos=float(drift @ goal / max(length * float(np.linalg.norm(goal)), 1e-12)),
                best_normalised=normalised_score(float(returns.max()), refs["stay"], refs["oracle"]),
            )
        )
    return rows


def correlation(rows: list[DriftRow]) -> float:
    """Pearson correlation between the first move's alignment and the best normalised return."""
    cos = np.array([r.cos for r in rows])
    best = np.array([r.best_normalised for r in rows])
    if len(rows) < 2 or cos.std() == 0 or best.std() == 0:
        return math.nan
    return float(np.corrcoef(cos, best)[0, 1])


def plot_drift(rows: list[DriftRow], png: str | Path, title: str) -> Path:
    """Scatter of the best normalised return against the first move's alignment with the goal."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.scatter([r.cos for r in rows], [r.best_normalised for r in rows], s=18)
    ax.axhline(0.0, color="0.45", linestyle="--", linewidth=1, label="standing still")
    ax.axhline(1.0, color="0.7", linestyle="--", linewidth=1, label="oracle")
    ax.set_xlabel("cosine of the first episode's displacement with the goal direction")
    ax.set_ylabel("best episode, normalised return")
    ax.set_title(f"{title} (r = {correlation(rows):.2f})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return save_figure(fig, png)


def main(argv: list[str] | None = None) -> int:
    """Print the per-task table and the correlation; optionally draw the scatter."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tasks", choices=["test", "train"], default="test")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--n-tasks", type=int, default=45, help="first N tasks of the split")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--action-noise",
        type=float,
        help="exploration noise, as in t2mir eval (default: the one the checkpoint's card was measured with)",
    )
    parser.add_argument("--png", help="scatter plot path")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    noise = card_action_noise(read_card(args.checkpoint)) if args.action_noise is None else args.action_noise
    rows = drift_rows(policy, args.tasks, args.split_seed, args.n_tasks, args.episodes, args.seed, noise)
    print("task      first move (deg, length)  goal (deg)  cos  best normalised")
    for r in sorted(rows, key=lambda r: r.cos):
        print(
            f"{r.task:9} {r.drift_angle:10.0f} {r.drift_length:8.2f} {r.goal_angle:12.0f}"
            f" {r.cos:6.2f} {r.best_normalised:10.2f}"
        )
    angles = np.array([r.drift_angle for r in rows])
    print(
        f"first moves: {angles.mean():.0f} deg on average (spread {angles.std():.0f} deg); "
        f"correlation of alignment and best normalised return: {correlation(rows):.2f} (action noise {noise})"
    )
    if args.png:
        noise = f", action noise {args.action_noise}" if args.action_noise else ""
        title = (
            f"{Path(args.checkpoint).name}, {len(rows)} {args.tasks} tasks of split {args.split_seed}{noise}"
        )
        print(f"wrote {plot_drift(rows, args.png, title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
