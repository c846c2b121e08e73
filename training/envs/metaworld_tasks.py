"""Reach and Push: Meta-World 3.x ``reach-v3`` / ``push-v3`` with hidden, task-specific goals.

Meta-World is imported lazily (inside the functions and constructors here), so importing
``training.envs`` works without it.

- Observation: the first 18 dims of Meta-World's 39-d observation (hand xyz, gripper opening,
  object pos + quaternion, zero padding), float32. The goal is never observed: tasks are set as
  Meta-World ML tasks (``partially_observable=True``, goal dims zeroed) and only ``obs[:18]`` is
  returned anyway.
- Action: Box ``[-1, 1]^4`` (clipped). Reward: Meta-World's own v2 reward for the env (0..10 per
  step). ``info`` is Meta-World's (``success``, ``obj_to_target``, ...).
- No termination; the registration truncates at 100 steps (Meta-World's own horizon of 500 is
  never reached through ``gym.make``).
- Resets are deterministic given the task (Meta-World resets the arm to a fixed pose); ``seed``
  only seeds ``np_random`` and the action space.

Tasks: ``metaworld.ML1(name, seed=seed)`` generates the goals (50 train tasks from ``seed`` and 50
test tasks from ``seed + 1``, Meta-World's own convention); the first 45 train and the first 5 test
goals form our split. Each task's Meta-World ``rand_vec`` is ``[object xyz, goal xyz]``; following
the paper ("the initial position of object is fixed across all tasks") the object part is replaced
by the environment's default object position ``(0, 0.6, 0.02)``, so tasks differ only in the goal.
Params: ``{"goal": [x, y, z], "mt_task": {"env_name", "rand_vec", "partially_observable"}}``;
``set_task`` hands ``mt_task`` to Meta-World's ``env.set_task`` (its own task mechanism). For Push
the target's z is the puck's height (Meta-World ignores the goal z of ``rand_vec``).
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np

from training.envs.tasks import TaskSpec, require_task, seed_env_rng

REACH_ID = "t2mir/Reach-v0"
PUSH_ID = "t2mir/Push-v0"
METAWORLD_NAMES: dict[str, str] = {REACH_ID: "reach-v3", PUSH_ID: "push-v3"}
EPISODE_STEPS = 100
OBS_DIM = 18
N_TRAIN, N_TEST = 45, 5
OBJECT_INIT_POS = (0.0, 0.6, 0.02)
MIN_OBJECT_GOAL_XY = 0.15  # Meta-World resamples (forever, when frozen) below this distance


def _task_params(mw_name: str, rand_vec: np.ndarray) -> dict[str, Any]:
    vec = np.concatenate([np.asarray(OBJECT_INIT_POS, dtype=np.float64), rand_vec[3:6]])
    return {
        "goal": [float(v) for v in vec[3:6]],
        "mt_task": {
            "env_name": mw_name,
            "rand_vec": [float(v) for v in vec],
            "partially_observable": True,
        },
    }


def sample_tasks(env_id: str, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Goals from ``metaworld.ML1(name, seed=seed)``: (45 train params, 5 test params)."""
    import metaworld

    mw_name = METAWORLD_NAMES[env_id]
    benchmark = metaworld.ML1(mw_name, seed=int(seed))

    # Meta-World packs each task's goal in an opaque blob that only its env decodes: let one env read
    # every task and report the goal vector it would use, so this module never unpickles anything.
    reader = benchmark.train_classes[mw_name]()

    def goals(tasks: list[Any], n: int) -> list[dict[str, Any]]:
        out = []
        for mw_task in tasks[:n]:
            reader.set_task(mw_task)
            out.append(_task_params(mw_name, np.asarray(reader._last_rand_vec, dtype=np.float64)))
        return out

    try:
        return goals(benchmark.train_tasks, N_TRAIN), goals(benchmark.test_tasks, N_TEST)
    finally:
        reader.close()


class MetaWorldEnv(gym.Env):
    """One Meta-World ML1 task with the 18-d observation (use :class:`ReachEnv` / :class:`PushEnv`)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium convention
    env_id: str = ""

    def __init__(self, task: TaskSpec | None = None, seed: int | None = None) -> None:
        """Create the env for ``task`` (default: ``train:0`` of seed 0); ``seed`` seeds its RNG."""
        import metaworld
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        super().__init__()
        self.env_ids: tuple[str, ...] = (self.env_id,)
        self.mw_name = METAWORLD_NAMES[self.env_id]
        self._task_type = metaworld.Task
        self._mw = ALL_V3_ENVIRONMENTS[self.mw_name]()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        if task is None:
            from training.envs.registry import resolve_task

            task = resolve_task(self.env_id, "train:0")
        self.task: TaskSpec = task
        self.set_task(task)
        seed_env_rng(self, seed)

    @property
    def metaworld_env(self) -> Any:
        """The wrapped Meta-World env (for its reward internals; do not step it directly)."""
        return self._mw

    def set_task(self, task: TaskSpec) -> None:
        """Hand the task to Meta-World's ``set_task``; the new goal applies at the next reset()."""
        require_task(task, self.env_ids, ("goal", "mt_task"))
        mt_task = task.params["mt_task"]
        if mt_task.get("env_name") != self.mw_name:
            raise ValueError(f"task is for Meta-World {mt_task.get('env_name')!r}, env is {self.mw_name!r}")
        rand_vec = np.asarray(mt_task["rand_vec"], dtype=np.float64)
        if rand_vec.shape != (6,):
            raise ValueError(f"mt_task.rand_vec must hold 6 floats (object xyz, goal xyz), got {rand_vec}")
        if np.linalg.norm(rand_vec[:2] - rand_vec[3:5]) < MIN_OBJECT_GOAL_XY:
            raise ValueError("goal lies within 0.15 (xy) of the object; Meta-World cannot reset such a task")
        data = {
            "rand_vec": rand_vec,
            "env_cls": type(self._mw),
            "partially_observable": bool(mt_task.get("partially_observable", True)),
        }
        self._mw.set_task(self._task_type(env_name=self.mw_name, data=pickle.dumps(data)))
        self.task = task

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset Meta-World (deterministic for the task) and return ``obs[:18]``."""
        super().reset(seed=seed)
        obs, info = self._mw.reset()
        return np.asarray(obs[:OBS_DIM], dtype=np.float32), dict(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step Meta-World with the clipped action; never terminates (the TimeLimit truncates)."""
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        obs, reward, _, _, info = self._mw.step(action)
        return np.asarray(obs[:OBS_DIM], dtype=np.float32), float(reward), False, False, dict(info)

    def close(self) -> None:
        """Close the wrapped Meta-World env."""
        self._mw.close()
        super().close()


class ReachEnv(MetaWorldEnv):
    """``t2mir/Reach-v0``: Meta-World reach-v3."""

    env_id = REACH_ID


class PushEnv(MetaWorldEnv):
    """``t2mir/Push-v0``: Meta-World push-v3."""

    env_id = PUSH_ID
