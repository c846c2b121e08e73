"""DarkRoom learning histories by noise distillation (paper D.2, following AD-epsilon).

Episode ``e`` of a task's history of ``E`` episodes follows the optimal policy with per-step
epsilon-greedy noise (a uniform random action out of all five with probability ``eps_e``), where
``eps_e = max(0, 1 - e / (decay_fraction * (E - 1)))`` falls linearly from 1 (pure random) to 0
(optimal). Episodes only depend on their own epsilon, so the whole history of a task is simulated
at once: ``E`` copies of the task in one batched environment, ``episode_steps`` vectorised steps.
Every episode is its own snapshot; DPT labels are the optimal actions (``darkroom_expert_action``)
for every quality.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.collect.budgets import NoiseBudget
from training.collect.history import TaskHistoryData, assemble_history, empty_episodes, selection_summary


def epsilon_schedule(n_episodes: int, decay_fraction: float = 1.0) -> np.ndarray:
    """(E,) exploration rate of each episode: linear 1 -> 0 over ``decay_fraction`` of the history."""
    if n_episodes == 1:
        return np.zeros(1)
    span = max(decay_fraction * (n_episodes - 1), 1e-9)
    return np.clip(1.0 - np.arange(n_episodes) / span, 0.0, 1.0)


def collect_noise_task(
    env_id: str,
    task,
    budget: NoiseBudget,
    quality: str,
    seed: int,
    on_snapshot: Callable[[int, int], None] | None = None,
) -> TaskHistoryData:
    """One DarkRoom task's noise-distilled learning history (``seed`` drives env and noise)."""
    from training.envs import darkroom_expert_action, env_info, make_batch_env

    info = env_info(env_id)
    n, horizon = budget.episodes_per_task, info.episode_steps
    rng = np.random.default_rng(seed)
    eps = epsilon_schedule(n, budget.decay_fraction)
    goal = np.asarray(task.params["goal"])
    env = make_batch_env(env_id, [task] * n, seed=seed)
    episodes = empty_episodes(n, horizon, info.obs_dim, "discrete", 1)
    obs = np.asarray(env.reset(seed=seed), dtype=np.float32)
    alive = np.ones(n, bool)
    for t in range(horizon):
        expert = np.asarray(darkroom_expert_action(obs, goal), dtype=np.int64)
        random_action = rng.integers(0, info.action_n, size=n)
        action = np.where(rng.random(n) < eps, random_action, expert)
        episodes["observations"][:, t] = obs
        episodes["actions"][:, t] = np.where(alive, action, 0)
        obs, reward, terminated, truncated = env.step(action)[:4]
        episodes["rewards"][:, t] = np.where(alive, reward, 0.0)
        episodes["lengths"] += alive
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    episodes["observations"][~(np.arange(horizon)[None, :] < episodes["lengths"][:, None])] = 0.0
    snapshot = np.arange(n, dtype=np.int64)
    if on_snapshot is not None:
        on_snapshot(n, n)

    def label_fn(_label_snapshot: int, kept: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(darkroom_expert_action(kept["observations"], goal), dtype=np.int64)

    arrays, selection = assemble_history(episodes, snapshot, quality, label_fn)
    summary = selection_summary(selection)
    summary["env_steps"] = int(episodes["lengths"].sum())
    summary["label_policy"] = "darkroom_expert_action (optimal)"
    return TaskHistoryData(arrays=arrays, summary=summary)
