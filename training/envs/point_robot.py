"""Point-Robot: a point in the plane moved by displacement actions toward a hidden goal.

Observation: the position ``[x, y]`` (float32). Action: the displacement, Box ``[-0.1, 0.1]^2``;
actions outside the box are clipped to it. Positions are *not* clipped (the plane is unbounded; in
20 steps the robot stays inside ``[-2.1, 2.1]^2``). Reward: minus the Euclidean distance between
the new position and the goal. Each reset draws the start uniformly from ``[-0.1, 0.1]^2`` with the
env's ``np_random``. No termination; the registration truncates at 20 steps.

Tasks: 50 goals drawn uniformly from the square ``[-1, 1]^2`` (45 train, 5 test). The paper says
"uniformly distributed in a unit square"; the point-robot family it builds on (and its own code)
draws each coordinate from U(-1, 1), and its Figure 7 groups the goals by the four quadrants, which
only makes sense for a square centred on the origin.

Positions are kept in float64; observations are float32 copies. The step function is vectorised
and shared with :mod:`training.envs.batch`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from training.envs.tasks import TaskSpec, require_task, seed_env_rng

ENV_ID = "t2mir/PointRobot-v0"
EPISODE_STEPS = 20
N_TRAIN, N_TEST = 45, 5
MAX_MOVE = 0.1
START_RANGE = 0.1
GOAL_RANGE = 1.0


def point_robot_transition(
    position: np.ndarray, action: np.ndarray, goal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move points by clipped displacements; return ``(new_position (..., 2), reward (...))``."""
    move = np.clip(np.asarray(action, dtype=np.float64), -MAX_MOVE, MAX_MOVE)
    new_position = np.asarray(position, dtype=np.float64) + move
    diff = new_position - np.asarray(goal, dtype=np.float64)
    reward = -np.sqrt(np.sum(diff * diff, axis=-1))
    return new_position, reward


def sample_start(rng: np.random.Generator) -> np.ndarray:
    """Draw one start position (float64, shape (2,)) from ``rng``."""
    return rng.uniform(-START_RANGE, START_RANGE, size=2)


def sample_tasks(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """50 seeded goals uniform in ``[-1, 1]^2``: (45 train params, 5 test params)."""
    goals = np.random.default_rng(seed).uniform(-GOAL_RANGE, GOAL_RANGE, size=(N_TRAIN + N_TEST, 2))
    params = [{"goal": [float(g[0]), float(g[1])]} for g in goals]
    return params[:N_TRAIN], params[N_TRAIN:]


class PointRobotEnv(gym.Env):
    """Single Point-Robot task as a gymnasium env (time limit added by the registration)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium convention
    env_ids: tuple[str, ...] = (ENV_ID,)

    def __init__(self, task: TaskSpec | None = None, seed: int | None = None) -> None:
        """Create the env for ``task`` (default: ``train:0`` of seed 0); ``seed`` seeds its RNG."""
        super().__init__()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_MOVE, MAX_MOVE, shape=(2,), dtype=np.float32)
        if task is None:
            from training.envs.registry import resolve_task

            task = resolve_task(ENV_ID, "train:0")
        self.task: TaskSpec = task
        self.goal = np.zeros(2, dtype=np.float64)
        self.set_task(task)
        self._position = np.zeros(2, dtype=np.float64)
        seed_env_rng(self, seed)

    def set_task(self, task: TaskSpec) -> None:
        """Switch to ``task`` (the goal changes immediately; call reset() to restart)."""
        require_task(task, self.env_ids, ("goal",))
        goal = np.asarray(task.params["goal"], dtype=np.float64)
        if goal.shape != (2,):
            raise ValueError(f"Point-Robot goal must be [x, y], got {task.params['goal']!r}")
        self.task = task
        self.goal = goal

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a start position uniformly from ``[-0.1, 0.1]^2``."""
        super().reset(seed=seed)
        self._position = sample_start(self.np_random)
        return self._position.astype(np.float32), {"goal": self.goal.tolist()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by the clipped action; reward = -||position - goal||. Never terminates."""
        action = np.asarray(action, dtype=np.float64).reshape(2)
        self._position, reward = point_robot_transition(self._position, action, self.goal)
        return self._position.astype(np.float32), float(reward), False, False, {}
