"""``t2mir/MT50-v0``: one Meta-World task of the M3DT suite as a gymnasium id."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from training.envs.registry import MT50_ID, MT50_STEPS
from training.m3dt.suite import ACT_WIDTH, METAWORLD_STEPS, OBS_WIDTH


def test_registered_with_the_suite_episode_length():
    import training.envs  # noqa: F401  (registers the ids)

    assert MT50_STEPS == METAWORLD_STEPS
    assert gym.registry[MT50_ID].max_episode_steps == METAWORLD_STEPS


def test_steps_like_the_suite():
    env = gym.make(MT50_ID, task="reach-v3", split="train")  # the train split has indexed goals
    try:
        obs, info = env.reset(seed=3)
        assert obs.shape == (OBS_WIDTH,) and obs.dtype == np.float32 and info == {"goal": 0}
        assert env.action_space.shape == (ACT_WIDTH,)
        obs, reward, terminated, truncated, info = env.step(np.zeros(ACT_WIDTH, dtype=np.float32))
        assert np.isfinite(reward) and not terminated and not truncated and "success" in info
        assert env.reset(options={"goal": 4})[1] == {"goal": 4}
        assert env.reset()[1] == {"goal": 2}  # the third episode of this env
    finally:
        env.close()
