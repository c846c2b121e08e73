"""Batched environments: many tasks of one benchmark stepped in lockstep, one episode per reset.

Built for in-context evaluation (every test task at once). All batch envs share these semantics:

- ``reset(seed=None)`` resets every sub-env and returns ``obs`` of shape ``(N, obs_dim)``, float32.
  Sub-env ``i`` is seeded with ``seed + i`` (as gymnasium's vector envs do); the batch built with
  ``make_batch_env(env_id, tasks, seed=s)`` behaves exactly like ``make_env(env_id, tasks[i],
  seed=s + i)`` for each ``i``.
- ``step(actions)`` returns ``(obs, rewards (N,) float64, terminated (N,) bool, truncated (N,)
  bool)``. There is no autoreset: once a sub-env has finished (terminated or truncated) it is
  frozen until the next ``reset()``: further steps ignore its action and report its final
  observation, reward 0 and the same terminated/truncated flags. ``done`` gives the mask.
- ``infos`` holds the last info dict of every sub-env (empty dicts for the numpy envs).

DarkRoom and Point-Robot are pure numpy (no Python loop over sub-envs per step). The MuJoCo and
Meta-World families loop over gymnasium envs built with :func:`training.envs.make_env`; gymnasium's
``SyncVectorEnv`` is not used because with autoreset disabled it refuses to step a finished
sub-env, which evaluation over episodes of different lengths (Walker-Param) needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding

from training.envs import darkroom, point_robot
from training.envs.registry import env_info, make_env
from training.envs.tasks import TaskSpec

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _sub_seed(seed: int | None, i: int) -> int | None:
    return None if seed is None else int(seed) + i


class _BatchBase:
    """Bookkeeping shared by all batch envs: step counters, frozen finished sub-envs."""

    def __init__(self, env_id: str, tasks: list[TaskSpec]) -> None:
        if not tasks:
            raise ValueError("a batch env needs at least one task")
        for task in tasks:
            if task.env_id != env_id:
                raise ValueError(f"task {task.name} belongs to {task.env_id!r}, not {env_id!r}")
        self.env_id = env_id
        self.tasks = list(tasks)
        self.num_envs = len(tasks)
        self.info = env_info(env_id)
        self.episode_steps = self.info.episode_steps
        self._obs = np.zeros((self.num_envs, self.info.obs_dim), dtype=np.float32)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._started = False
        self.infos: list[dict[str, Any]] = [{} for _ in tasks]

    @property
    def done(self) -> np.ndarray:
        """(N,) bool: sub-envs whose episode has finished since the last reset."""
        return self._terminated | self._truncated

    def _begin_reset(self) -> None:
        self._terminated[:] = False
        self._truncated[:] = False
        self._elapsed[:] = 0
        self._started = True

    def _check_step(self, actions: Any, shape: tuple[int, ...], dtype: type | None) -> np.ndarray:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=dtype)
        if actions.shape != shape:
            raise ValueError(f"actions must have shape {shape}, got {actions.shape}")
        return actions

    def close(self) -> None:
        """Release resources (no-op for the numpy envs)."""


class _NumpyBatchEnv(_BatchBase):
    """Batch env whose whole state is a ``(N, 2)`` position array (DarkRoom, Point-Robot)."""

    _position: np.ndarray

    def _advance(self, new_position: np.ndarray, reward: np.ndarray) -> StepResult:
        """Numpy envs: move unfinished sub-envs to ``new_position`` and update the flags."""
        active = ~self.done
        self._position = np.where(active[:, None], new_position, self._position)
        self._elapsed += active
        self._truncated |= active & (self._elapsed >= self.episode_steps)
        self._obs = self._position.astype(np.float32)
        rewards = np.where(active, reward, 0.0)
        return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy()


class DarkRoomBatchEnv(_NumpyBatchEnv):
    """N DarkRoom tasks as one numpy array of positions."""

    def __init__(self, tasks: list[TaskSpec], seed: int | None = None) -> None:
        super().__init__(darkroom.ENV_ID, tasks)
        self.goals = np.array([t.params["goal"] for t in tasks], dtype=np.int64)  # (N, 2)
        self._position = np.zeros((self.num_envs, 2), dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """All agents back to ``[0, 0]``; returns (N, 2) float32 (the start is deterministic)."""
        self._begin_reset()
        self._position[:] = darkroom.START
        self._obs = self._position.astype(np.float32)
        return self._obs.copy()

    def step(self, actions: Any) -> StepResult:
        """Step all sub-envs with int actions (N,)."""
        actions = self._check_step(actions, (self.num_envs,), np.int64)
        return self._advance(*darkroom.darkroom_transition(self._position, actions, self.goals))


class PointRobotBatchEnv(_NumpyBatchEnv):
    """N Point-Robot tasks as one numpy array of positions (one RNG per sub-env for the starts)."""

    def __init__(self, tasks: list[TaskSpec], seed: int | None = None) -> None:
        super().__init__(point_robot.ENV_ID, tasks)
        self.goals = np.array([t.params["goal"] for t in tasks], dtype=np.float64)  # (N, 2)
        self._rngs = [seeding.np_random(_sub_seed(seed, i))[0] for i in range(self.num_envs)]
        self._position = np.zeros((self.num_envs, 2), dtype=np.float64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """New start positions for all sub-envs; returns (N, 2) float32."""
        if seed is not None:
            self._rngs = [seeding.np_random(_sub_seed(seed, i))[0] for i in range(self.num_envs)]
        self._begin_reset()
        self._position = np.stack([point_robot.sample_start(rng) for rng in self._rngs])
        self._obs = self._position.astype(np.float32)
        return self._obs.copy()

    def step(self, actions: Any) -> StepResult:
        """Step all sub-envs with displacement actions (N, 2)."""
        actions = self._check_step(actions, (self.num_envs, 2), np.float64)
        return self._advance(*point_robot.point_robot_transition(self._position, actions, self.goals))


class SyncBatchEnv(_BatchBase):
    """N gymnasium envs (from :func:`make_env`) stepped one after another in this process."""

    def __init__(self, env_id: str, tasks: list[TaskSpec], seed: int | None = None) -> None:
        super().__init__(env_id, tasks)
        self.envs = [make_env(env_id, task, seed=_sub_seed(seed, i)) for i, task in enumerate(tasks)]
        self._action_shape = (self.num_envs, *(self.envs[0].action_space.shape or ()))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every sub-env (sub-env i with ``seed + i``); returns (N, obs_dim) float32."""
        self._begin_reset()
        for i, env in enumerate(self.envs):
            obs, info = env.reset(seed=_sub_seed(seed, i))
            self._obs[i] = obs
            self.infos[i] = info
        return self._obs.copy()

    def step(self, actions: Any) -> StepResult:
        """Step every unfinished sub-env with its row of ``actions``; finished ones stay frozen."""
        actions = self._check_step(actions, self._action_shape, None)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        for i in np.flatnonzero(~self.done):
            obs, reward, terminated, truncated, info = self.envs[i].step(actions[i])
            self._obs[i] = obs
            rewards[i] = reward
            self._terminated[i] = terminated
            self._truncated[i] = truncated
            self._elapsed[i] += 1
            self.infos[i] = info
        return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy()

    def close(self) -> None:
        """Close every sub-env."""
        for env in self.envs:
            env.close()


def make_batch_env(
    env_id: str, tasks: list[TaskSpec], seed: int | None = None
) -> DarkRoomBatchEnv | PointRobotBatchEnv | SyncBatchEnv:
    """A batch env running one episode of each task in ``tasks`` per ``reset()`` (see module doc)."""
    env_info(env_id)
    if env_id == darkroom.ENV_ID:
        return DarkRoomBatchEnv(tasks, seed=seed)
    if env_id == point_robot.ENV_ID:
        return PointRobotBatchEnv(tasks, seed=seed)
    return SyncBatchEnv(env_id, tasks, seed=seed)
