"""The M3DT task suite: Meta-World MT50 (scripted experts) plus Point-Robot goals (noisy oracle).

Every task is stepped through `TaskRunner`, which hides the family: observations come back at the
task's own width, actions go in normalised to [-1, 1] at the task's own width. Widths are padded to
the model's shared widths (39 observation features, 4 action dimensions) only inside the model.

Meta-World: training data uses the 50 train goals of ``metaworld.ML1(name, seed)``; evaluation
(split 'test') draws a fresh goal per episode with Meta-World's own reset rule from the evaluation
seed's stream (goal variations never seen in training; no ML1 build, which costs seconds per task). The goal is observable (as in
MT50: obs[36:39]), which the scripted experts need. Episodes are cut at ``METAWORLD_STEPS`` = 150
steps (the experts solve most tasks well within that; Meta-World's own horizon is 500) to fit a CPU
budget; success = Meta-World's ``info["success"]`` at any step. Expert actions get Gaussian noise of
std ``METAWORLD_NOISE`` = 0.1 (clipped to [-1, 1]) for diversity.

Point-Robot: goal g_i uniform in [-1, 1]^2 (seeded), 20-step episodes, reward -||p - g||. The oracle
moves straight at the goal at full speed; collection adds Gaussian noise of std ``POINT_NOISE`` =
0.3 in normalised action units (action x 0.1 = displacement). Its score is the return normalised
between standing still (0) and the oracle (1), on the same starts.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.envs.point_robot import EPISODE_STEPS as POINT_STEPS
from training.envs.point_robot import MAX_MOVE, point_robot_transition

OBS_WIDTH, ACT_WIDTH = 39, 4
"""Shared padded widths of the suite (Meta-World's 39-d observation and 4-d action)."""
METAWORLD_STEPS = 150
METAWORLD_NOISE = 0.1
POINT_NOISE = 0.3
METAWORLD, POINT_ROBOT = "metaworld", "point-robot"


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite."""

    name: str
    """'reach-v3', 'point-robot-07', ..."""
    family: str
    """'metaworld' or 'point-robot'."""
    obs_width: int
    act_width: int
    episode_steps: int
    goal: tuple[float, float] = (0.0, 0.0)
    """Point-Robot goal (unused for Meta-World)."""

    @property
    def index_key(self) -> str:
        """File-safe name."""
        return self.name


def metaworld_names() -> list[str]:
    """The 50 Meta-World v3 task names that have a scripted expert, sorted."""
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


def suite_tasks(n_metaworld: int = 50, n_point: int = 30, seed: int = 0) -> list[SuiteTask]:
    """The first ``n_metaworld`` Meta-World tasks (sorted names) and ``n_point`` Point-Robot goals."""
    tasks = [
        SuiteTask(n, METAWORLD, OBS_WIDTH, ACT_WIDTH, METAWORLD_STEPS)
        for n in metaworld_names()[:n_metaworld]
    ]
    goals = np.random.default_rng(seed + 7919).uniform(-1.0, 1.0, size=(n_point, 2))
    tasks += [
        SuiteTask(f"point-robot-{i:02d}", POINT_ROBOT, 2, 2, POINT_STEPS, (float(g[0]), float(g[1])))
        for i, g in enumerate(goals)
    ]
    return tasks


class TaskRunner:
    """Resets and steps one task; ``expert`` gives the (noisy) scripted / oracle action."""

    def __init__(self, task: SuiteTask, split: str, seed: int) -> None:
        """``split``: 'train' (ML1 train goals, cycled) or 'test' (a fresh goal each episode)."""
        self.task = task
        self.rng = np.random.default_rng(seed)
        self._position = np.zeros(2)
        if task.family == METAWORLD:
            import metaworld
            from metaworld.env_dict import ALL_V3_ENVIRONMENTS
            from metaworld.policies import ENV_POLICY_MAP

            self._env: Any = ALL_V3_ENVIRONMENTS[task.name]()
            expert_class: Any = ENV_POLICY_MAP[task.name]  # a concrete scripted policy per task
            self._expert: Any = expert_class()
            self._task_type = metaworld.Task
            self._goals: list[Any] = []
            if split == "train":
                # Meta-World's goals are opaque blobs: a separate reader env decodes each into its
                # goal vector (never unpickled here); the acting env gets them with the goal observable.
                reader = ALL_V3_ENVIRONMENTS[task.name]()
                for mw_task in metaworld.ML1(task.name, seed=seed).train_tasks:
                    reader.set_task(mw_task)
                    goal = reader._last_rand_vec
                    if goal is None:
                        raise RuntimeError(f"{task.name}: Meta-World task carries no goal vector")
                    self._goals.append(self._observable(goal))
                reader.close()

    def _observable(self, rand_vec: np.ndarray) -> Any:
        """A Meta-World task of this env with the given goal vector and the goal observable."""
        data = {"rand_vec": rand_vec, "env_cls": type(self._env), "partially_observable": False}
        return self._task_type(env_name=self.task.name, data=pickle.dumps(data))

    def _fresh_goal(self) -> Any:
        """A goal drawn by Meta-World's own reset rule (which rejects invalid goals) from this
        runner's random stream: the test goals, disjoint from the ML1 train goals of collection."""
        env = self._env
        env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
        env.seed(int(self.rng.integers(2**31)))  # Meta-World 3's reset ignores its seed argument
        env.reset()
        return self._observable(np.array(env._last_rand_vec))

    def reseed(self, seed: int) -> None:
        """Restart the runner's random stream (starts, noise): the same seed gives the same episodes."""
        self.rng = np.random.default_rng(seed)

    @property
    def n_goals(self) -> int:
        """Goal variations of this split (Point-Robot: one goal)."""
        return len(self._goals) if self.task.family == METAWORLD and self._goals else 1

    def reset(self, goal: int) -> np.ndarray:
        """Start an episode on goal variation ``goal``; returns the first observation (obs_width,)."""
        if self.task.family == POINT_ROBOT:
            self._position = self.rng.uniform(-0.1, 0.1, size=2)
            return self._position.astype(np.float32)
        self._env.set_task(self._goals[goal % len(self._goals)] if self._goals else self._fresh_goal())
        self._env.seed(int(self.rng.integers(2**31)))
        obs, _ = self._env.reset()
        return np.asarray(obs, dtype=np.float32)

    def expert(self, obs: np.ndarray, noise: bool = True) -> np.ndarray:
        """The expert's normalised action (act_width,) for ``obs``, with the collection noise."""
        if self.task.family == POINT_ROBOT:
            action = np.clip((np.asarray(self.task.goal) - obs) / MAX_MOVE, -1.0, 1.0)
            std = POINT_NOISE
        else:
            action = np.asarray(self._expert.get_action(obs), dtype=np.float64)
            std = METAWORLD_NOISE
        if noise:
            action = action + self.rng.normal(0.0, std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Apply a normalised action; returns (observation, reward, success at this step)."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.task.act_width), -1.0, 1.0)
        if self.task.family == POINT_ROBOT:
            self._position, reward = point_robot_transition(
                self._position, action * MAX_MOVE, np.asarray(self.task.goal)
            )
            return self._position.astype(np.float32), float(reward), False
        obs, reward, _, _, info = self._env.step(action.astype(np.float32))
        return np.asarray(obs, dtype=np.float32), float(reward), bool(info.get("success", 0.0))

    def close(self) -> None:
        """Release the simulator."""
        if self.task.family == METAWORLD:
            self._env.close()


def point_reference(task: SuiteTask, starts: np.ndarray) -> tuple[float, float]:
    """(stay, oracle) mean returns of a Point-Robot goal from the given starts (N, 2)."""
    goal = np.asarray(task.goal)
    stay = float(np.mean([-np.linalg.norm(s - goal) * task.episode_steps for s in starts]))
    oracle = []
    for s in starts:
        p, total = s.copy(), 0.0
        for _ in range(task.episode_steps):
            p, r = point_robot_transition(p, np.clip(goal - p, -MAX_MOVE, MAX_MOVE), goal)
            total += float(r)
        oracle.append(total)
    return stay, float(np.mean(oracle))
