"""Small random datasets in the real on-disk format, for tests of the loader, samplers and trainers.

No simulator runs: observations, actions and rewards are random, episode returns rise along each
task's history (so "sorted by return" and "history order" differ), and episodes may have random
lengths (like Walker-Param's early termination) to exercise padding.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from training.datasets.format import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    task_file_name,
    write_manifest,
    write_task_file,
)


def write_synthetic_dataset(
    out: str | Path,
    env_id: str = "t2mir/PointRobot-v0",
    *,
    n_tasks: int = 4,
    n_episodes: int = 12,
    variable_lengths: bool = False,
    seed: int = 0,
) -> Path:
    """Write a complete dataset directory for ``env_id`` with random contents; returns its path."""
    from training.envs import env_info, task_split

    info = env_info(env_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    horizon = info.episode_steps
    train, _ = task_split(env_id)
    entries = []
    for task in train[:n_tasks]:
        if variable_lengths:
            lengths = rng.integers(1, horizon + 1, size=n_episodes)
        else:
            lengths = np.full(n_episodes, horizon)
        valid = np.arange(horizon)[None, :] < lengths[:, None]  # (E, T)
        obs = rng.normal(size=(n_episodes, horizon, info.obs_dim)).astype(np.float32) * valid[..., None]
        actions: np.ndarray
        labels: np.ndarray
        if info.action_kind == "discrete":
            actions = rng.integers(0, info.action_n, size=(n_episodes, horizon)) * valid
            labels = rng.integers(0, info.action_n, size=(n_episodes, horizon)) * valid
        else:
            assert info.action_dim is not None  # continuous families declare their dimension
            shape = (n_episodes, horizon, info.action_dim)
            actions = rng.uniform(-1, 1, size=shape).astype(np.float32) * valid[..., None]
            labels = rng.uniform(-1, 1, size=shape).astype(np.float32) * valid[..., None]
        # per-step reward grows along the history, plus noise: returns rise but are not sorted
        level = np.linspace(0.0, 1.0, n_episodes)[:, None] + 0.3 * rng.random((n_episodes, 1))
        rewards = (level * np.ones((1, horizon)) * valid).astype(np.float32)
        arrays = {
            "observations": obs,
            "actions": actions.astype(np.int64 if info.action_kind == "discrete" else np.float32),
            "rewards": rewards,
            "lengths": lengths.astype(np.int64),
            "returns": rewards.sum(axis=1, dtype=np.float64).astype(np.float32),
            "labels": labels.astype(np.int64 if info.action_kind == "discrete" else np.float32),
            "snapshot": np.arange(n_episodes, dtype=np.int64),
        }
        name = task_file_name(task.split, task.index)
        sha = write_task_file(out / name, arrays)
        entries.append(
            {
                "task": task.to_json(),
                "file": name,
                "n_episodes": n_episodes,
                "returns": [round(float(r), 4) for r in arrays["returns"]],
                "sha256": sha,
            }
        )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "env_id": env_id,
        "quality": "mixed",
        "budget": {"name": "synthetic"},
        "seed": seed,
        "env": asdict(info),
        "status": "complete",
        "command": "training.datasets.synthetic.write_synthetic_dataset",
        "tasks": entries,
    }
    write_manifest(out / MANIFEST_NAME, manifest)
    return out
