"""One task of the M3DT suite's Meta-World MT50 part as a gymnasium env: ``t2mir/MT50-v0``.

    env = gym.make("t2mir/MT50-v0", task="reach-v3")            # evaluation (test) goals
    env = gym.make("t2mir/MT50-v0", task="reach-v3", split="train", split_seed=0)

Steps the task exactly as the M3DT suite does (`training.m3dt.suite.TaskRunner`): Meta-World 3.x's
39-d observation with the goal observable (as in MT50), actions in ``[-1, 1]^4``, Meta-World's
reward, ``info["success"]`` per step, episodes truncated at ``METAWORLD_STEPS`` by the
registration (`training.envs.registry.register_envs`). On the train split, episode i of an env uses
goal variation i of the task's ML1 training goals (cycling) unless ``reset(options={"goal": g})``
names one; on the test split every episode draws a fresh goal from the env's random stream (``info``
reports goal 0). ``reset(seed=s)`` reseeds the simulator starts.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from training.m3dt.suite import ACT_WIDTH, METAWORLD, METAWORLD_STEPS, OBS_WIDTH, SuiteTask, TaskRunner


class MT50TaskEnv(gym.Env[np.ndarray, np.ndarray]):
    """A Meta-World MT50 task of the M3DT suite (``task``: its Meta-World name, e.g. 'reach-v3')."""

    def __init__(self, task: str = "reach-v3", split: str = "test", split_seed: int = 0) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.task = SuiteTask(task, METAWORLD, OBS_WIDTH, ACT_WIDTH, METAWORLD_STEPS)
        self._runner = TaskRunner(self.task, split, split_seed)
        self._episodes = 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_WIDTH,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_WIDTH,), np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on the next goal variation (or ``options["goal"]``)."""
        super().reset(seed=seed)
        if seed is not None:
            self._runner.rng = np.random.default_rng(seed)
        goal = int((options or {}).get("goal", self._episodes)) % self._runner.n_goals
        self._episodes += 1
        return self._runner.reset(goal), {"goal": goal}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply an action in ``[-1, 1]^4``; never terminates (the registration truncates)."""
        obs, reward, success = self._runner.step(action)
        return obs, reward, False, False, {"success": float(success)}

    def close(self) -> None:
        """Release the simulator."""
        self._runner.close()
