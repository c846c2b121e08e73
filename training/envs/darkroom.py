"""DarkRoom: a 10x10 grid world with a hidden goal cell (paper Appendix D).

Observation: the agent's cell ``[x, y]`` as float32 (Box 0..9). The agent starts at ``[0, 0]``.
Actions (Discrete(5)): 0 left (x-1), 1 right (x+1), 2 up (y+1), 3 down (y-1), 4 stay; moves off the
grid leave the agent where it is. Reward is 1 when the agent is on the goal cell *after* the move,
else 0. There is no termination: an agent that reaches the goal can stay there and collect 1 per
step, so the best return of a 100-step episode is ``101 - manhattan(start, goal)`` (100 when the
goal is the start cell). The 100 cells are the 100 tasks: a seeded permutation puts 80 in the
train split and 20 in the test split (each split sorted by cell).

The transition is a vectorised numpy function shared with the batched evaluator
(:mod:`training.envs.batch`), so the single env and the batch env agree step for step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from training.envs.tasks import TaskSpec, require_task, seed_env_rng

ENV_ID = "t2mir/DarkRoom-v0"
GRID_SIZE = 10
EPISODE_STEPS = 100
N_TRAIN, N_TEST = 80, 20
N_ACTIONS = 5
LEFT, RIGHT, UP, DOWN, STAY = range(N_ACTIONS)
START = (0, 0)

# (dx, dy) for each action index.
ACTION_DELTAS = np.array([[-1, 0], [1, 0], [0, 1], [0, -1], [0, 0]], dtype=np.int64)


def darkroom_transition(
    position: np.ndarray, action: np.ndarray | int, goal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply actions to grid positions.

    Args:
        position: int array ``(..., 2)`` of cells.
        action: int array broadcastable to ``position.shape[:-1]`` (values 0..4).
        goal: int array broadcastable to ``position``.

    Returns:
        ``(new_position (..., 2) int64, reward (...) float64)``.
    """
    action = np.asarray(action, dtype=np.int64)
    if np.any((action < 0) | (action >= N_ACTIONS)):
        raise ValueError(f"DarkRoom actions must be in 0..{N_ACTIONS - 1}, got {action}")
    new_position = np.clip(np.asarray(position, dtype=np.int64) + ACTION_DELTAS[action], 0, GRID_SIZE - 1)
    reward = np.all(new_position == np.asarray(goal, dtype=np.int64), axis=-1).astype(np.float64)
    return new_position, reward


def darkroom_expert_action(position: Any, goal: Any) -> Any:
    """Optimal DarkRoom action: close the x gap first, then the y gap, then stay.

    Works on single cells (returns ``int``) or arrays ``(..., 2)`` (returns an int64 array of the
    broadcast batch shape). Positions may be floats (observations); they are rounded to cells.
    """
    pos = np.rint(np.asarray(position, dtype=np.float64)).astype(np.int64)
    tgt = np.rint(np.asarray(goal, dtype=np.float64)).astype(np.int64)
    dx = tgt[..., 0] - pos[..., 0]
    dy = tgt[..., 1] - pos[..., 1]
    action = np.where(
        dx > 0, RIGHT, np.where(dx < 0, LEFT, np.where(dy > 0, UP, np.where(dy < 0, DOWN, STAY)))
    ).astype(np.int64)
    return int(action) if action.ndim == 0 else action


def sample_tasks(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded 80/20 split of the 100 goal cells; returns (train params, test params)."""
    cells = [(x, y) for x in range(GRID_SIZE) for y in range(GRID_SIZE)]
    order = np.random.default_rng(seed).permutation(len(cells))
    train = sorted(cells[i] for i in order[:N_TRAIN])
    test = sorted(cells[i] for i in order[N_TRAIN:])
    return [{"goal": list(c)} for c in train], [{"goal": list(c)} for c in test]


class DarkRoomEnv(gym.Env):
    """Single DarkRoom task as a gymnasium env (time limit added by the registration)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium convention
    env_ids: tuple[str, ...] = (ENV_ID,)

    def __init__(self, task: TaskSpec | None = None, seed: int | None = None) -> None:
        """Create the env for ``task`` (default: ``train:0`` of seed 0); ``seed`` seeds its RNG."""
        super().__init__()
        self.observation_space = gym.spaces.Box(0.0, GRID_SIZE - 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        if task is None:
            from training.envs.registry import resolve_task

            task = resolve_task(ENV_ID, "train:0")
        self.task: TaskSpec = task
        self.goal = np.zeros(2, dtype=np.int64)
        self.set_task(task)
        self._position = np.array(START, dtype=np.int64)
        seed_env_rng(self, seed)

    def set_task(self, task: TaskSpec) -> None:
        """Switch to ``task`` (the goal cell changes immediately; call reset() to restart)."""
        require_task(task, self.env_ids, ("goal",))
        goal = np.asarray(task.params["goal"], dtype=np.int64)
        if goal.shape != (2,) or np.any((goal < 0) | (goal >= GRID_SIZE)):
            raise ValueError(f"DarkRoom goal must be a cell in [0, {GRID_SIZE - 1}]^2, got {goal}")
        self.task = task
        self.goal = goal

    def _obs(self) -> np.ndarray:
        return self._position.astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Put the agent back at ``[0, 0]`` (the start is deterministic; ``seed`` seeds np_random)."""
        super().reset(seed=seed)
        self._position = np.array(START, dtype=np.int64)
        return self._obs(), {"goal": self.goal.tolist()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move one cell; reward 1 only on the goal. Never terminates (the TimeLimit truncates)."""
        self._position, reward = darkroom_transition(self._position, int(action), self.goal)
        return self._obs(), float(reward), False, False, {}
