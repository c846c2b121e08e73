"""Episode buffers and the assembly of one task's learning history from its snapshots' episodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.collect.quality import QualitySelection, select_snapshots


@dataclass
class TaskHistoryData:
    """What a collector returns for one task: the arrays of the task file plus a summary."""

    arrays: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)


def empty_episodes(
    n: int, horizon: int, obs_dim: int, action_kind: str, act_dim: int
) -> dict[str, np.ndarray]:
    """Zeroed buffers for ``n`` episodes padded to ``horizon`` steps."""
    act_shape = (n, horizon) if action_kind == "discrete" else (n, horizon, act_dim)
    return {
        "observations": np.zeros((n, horizon, obs_dim), np.float32),
        "actions": np.zeros(act_shape, np.int64 if action_kind == "discrete" else np.float32),
        "rewards": np.zeros((n, horizon), np.float32),
        "lengths": np.zeros((n,), np.int64),
    }


def run_episodes(
    env: Any,
    policy: Callable[[np.ndarray], Any],
    n_episodes: int,
    *,
    horizon: int,
    obs_dim: int,
    action_kind: str,
    act_dim: int,
) -> dict[str, np.ndarray]:
    """Roll ``policy`` out for ``n_episodes`` in a gymnasium ``env`` (stops at termination,
    truncation or ``horizon`` steps) and return padded episode buffers."""
    out = empty_episodes(n_episodes, horizon, obs_dim, action_kind, act_dim)
    for i in range(n_episodes):
        obs, _ = env.reset()
        t = 0
        while t < horizon:
            action = policy(obs)
            out["observations"][i, t] = obs
            out["actions"][i, t] = action
            obs, reward, terminated, truncated, _ = env.step(action)
            out["rewards"][i, t] = reward
            t += 1
            if terminated or truncated:
                break
        out["lengths"][i] = t
    return out


def concat_episodes(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def assemble_history(
    episodes: dict[str, np.ndarray],
    snapshot: np.ndarray,
    quality: str,
    label_fn: Callable[[int, dict[str, np.ndarray]], np.ndarray],
) -> tuple[dict[str, np.ndarray], QualitySelection]:
    """Keep the episodes of the snapshots ``quality`` selects and label their states.

    ``episodes``: buffers of every episode of every snapshot, in training order; ``snapshot``: (E,)
    the snapshot of each. ``label_fn(label_snapshot, kept_episodes)`` returns the DPT labels, shaped
    like ``kept_episodes["actions"]``; labels on padding are zeroed here.
    """
    returns = episodes["rewards"].sum(axis=1, dtype=np.float64)
    n_snap = int(snapshot.max()) + 1
    per_snapshot = np.bincount(snapshot, weights=returns, minlength=n_snap) / np.bincount(
        snapshot, minlength=n_snap
    )
    selection = select_snapshots(per_snapshot, quality)
    keep = np.isin(snapshot, selection.kept)
    kept = {k: v[keep] for k, v in episodes.items()}
    labels = np.asarray(label_fn(selection.label_snapshot, kept)).astype(kept["actions"].dtype, copy=True)
    pad = np.arange(labels.shape[1])[None, :] >= kept["lengths"][:, None]
    labels[pad] = 0
    arrays = {
        **kept,
        "returns": kept["rewards"].sum(axis=1, dtype=np.float64).astype(np.float32),
        "labels": labels,
        "snapshot": snapshot[keep].astype(np.int64),
    }
    return arrays, selection


def selection_summary(selection: QualitySelection) -> dict[str, Any]:
    return {
        "n_snapshots": int(selection.performance.shape[0]),
        "kept_snapshots": int(selection.kept.shape[0]),
        "label_snapshot": selection.label_snapshot,
        "first_level": round(selection.first_level, 4),
        "final_level": round(selection.final_level, 4),
        "improved": selection.improved,
    }
