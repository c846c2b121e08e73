"""Cheetah-Vel and Cheetah-Vel-3-Cluster: HalfCheetah asked to run at a hidden target velocity.

Built on gymnasium's MuJoCo ``HalfCheetah-v5`` (subclassed; same XML, frame skip 5, reset noise
0.1 drawn from the env's ``np_random``).

- Observation (20-d, float32): ``qpos[1:]`` (8), ``qvel`` (9), torso centre of mass (3).
- Action: Box ``[-1, 1]^6`` (joint torques), passed to MuJoCo as gymnasium does.
- Reward: ``-|v_x - v_goal| - 0.05 * ||a||^2`` where ``v_x`` is HalfCheetah-v5's ``x_velocity``
  (root x displacement over one env step divided by ``dt``) and ``a`` the action as given.
  ``info`` carries ``x_velocity``, ``goal_velocity``, ``reward_forward`` (= -|v_x - v_goal|) and
  ``reward_ctrl`` (= -0.05 ||a||^2).
- No termination; the registration truncates at 200 steps.

Tasks: ``CheetahVel-v0`` draws 50 goal velocities from U[0.075, 3.0] (45 train, 5 test);
``CheetahVel3Cluster-v0`` draws 16 from each of N(0.5, 0.15^2), N(1.5, 0.15^2), N(2.5, 0.15^2)
(14 train + 2 test per cluster; params also carry the ``cluster`` index 0/1/2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.spaces import Box

from training.envs.tasks import TaskSpec, require_task, seed_env_rng

ENV_ID = "t2mir/CheetahVel-v0"
CLUSTER_ENV_ID = "t2mir/CheetahVel3Cluster-v0"
EPISODE_STEPS = 200
OBS_DIM = 20
N_TRAIN, N_TEST = 45, 5
VELOCITY_RANGE = (0.075, 3.0)
CLUSTER_MEANS = (0.5, 1.5, 2.5)
CLUSTER_STD = 0.15
CLUSTER_TRAIN, CLUSTER_TEST = 14, 2
CTRL_COST_WEIGHT = 0.05


def sample_tasks(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """50 seeded goal velocities from U[0.075, 3.0]: (45 train params, 5 test params)."""
    velocities = np.random.default_rng(seed).uniform(*VELOCITY_RANGE, size=N_TRAIN + N_TEST)
    params = [{"velocity": float(v)} for v in velocities]
    return params[:N_TRAIN], params[N_TRAIN:]


def sample_cluster_tasks(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """14 train + 2 test velocities from each of the three Gaussians (42 train, 6 test)."""
    rng = np.random.default_rng(seed)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for cluster, mean in enumerate(CLUSTER_MEANS):
        velocities = rng.normal(mean, CLUSTER_STD, size=CLUSTER_TRAIN + CLUSTER_TEST)
        params = [{"velocity": float(v), "cluster": cluster} for v in velocities]
        train += params[:CLUSTER_TRAIN]
        test += params[CLUSTER_TRAIN:]
    return train, test


class CheetahVelEnv(HalfCheetahEnv):
    """HalfCheetah-v5 with a goal-velocity reward and the 20-d observation."""

    env_ids: tuple[str, ...] = (ENV_ID, CLUSTER_ENV_ID)

    def __init__(self, task: TaskSpec | None = None, seed: int | None = None, **kwargs: Any) -> None:
        """Create the env for ``task`` (default: CheetahVel ``train:0`` of seed 0).

        ``seed`` seeds ``np_random`` (the next reset() equals reset(seed=seed)); other keyword
        arguments go to gymnasium's HalfCheetahEnv (rendering is not used by this project).
        """
        kwargs.setdefault("ctrl_cost_weight", CTRL_COST_WEIGHT)
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, task, seed, **kwargs)  # pickles as (task, seed, kwargs)
        self.observation_space = Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        if task is None:
            from training.envs.registry import resolve_task

            task = resolve_task(ENV_ID, "train:0")
        self.task: TaskSpec = task
        self.goal_velocity = 0.0
        self.set_task(task)
        seed_env_rng(self, seed)

    def set_task(self, task: TaskSpec) -> None:
        """Switch the goal velocity (takes effect on the next step)."""
        require_task(task, self.env_ids, ("velocity",))
        self.task = task
        self.goal_velocity = float(task.params["velocity"])
        self._ezpickle_args = (task, *self._ezpickle_args[1:])  # pickle keeps the current task

    def _get_obs(self) -> np.ndarray:
        qpos = self.data.qpos.flat[1:]
        qvel = self.data.qvel.flat
        com = self.get_body_com("torso").flat
        return np.concatenate([qpos, qvel, com]).astype(np.float32)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward = -abs(float(x_velocity) - self.goal_velocity)
        ctrl = -float(self.control_cost(action))
        info = {"reward_forward": forward, "reward_ctrl": ctrl, "goal_velocity": self.goal_velocity}
        return forward + ctrl, info

    # Returns plain floats where MuJoCo's typing promises numpy scalars (JSON-friendly infos).
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:  # type: ignore[override]
        """HalfCheetah-v5 step with the Cheetah-Vel reward (see module docstring)."""
        obs, reward, terminated, truncated, info = super().step(np.asarray(action, dtype=np.float64))
        info["x_velocity"] = float(info["x_velocity"])
        return obs, float(reward), terminated, truncated, info
