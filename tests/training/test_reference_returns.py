"""Reference policies (stay / random / oracle) that put in-context returns on a scale."""

from __future__ import annotations

import numpy as np
import pytest

from training.envs import make_env, task_split
from training.evaluation.reference import _policies, episode_return, reference_returns


@pytest.mark.parametrize("env_id", ["t2mir/DarkRoom-v0", "t2mir/PointRobot-v0"])
def test_the_oracle_is_far_above_policies_that_ignore_the_task(env_id):
    returns = reference_returns(env_id, episodes=1)
    assert set(returns) == {"stay", "random", "oracle"}
    gap = 50.0 if env_id == "t2mir/DarkRoom-v0" else 10.0
    assert returns["oracle"] > max(returns["stay"], returns["random"]) + gap
    assert reference_returns(env_id, episodes=1) == returns  # seeded: the same numbers again


@pytest.mark.parametrize("seed", [3, 4])
def test_the_darkroom_oracle_reaches_the_best_possible_return(seed):
    # 100 steps: after walking the Manhattan distance d the oracle collects 1 per step, 101 - d in all
    env_id = "t2mir/DarkRoom-v0"
    task = task_split(env_id, 0)[1][0]
    start, _ = make_env(env_id, task, seed=seed).reset()
    distance = int(np.abs(np.rint(start) - np.asarray(task.params["goal"])).sum())
    best = 100 if distance == 0 else 101 - distance
    assert episode_return(env_id, task, _policies(env_id)["oracle"], seed=seed) == best


def test_unknown_families_are_refused():
    with pytest.raises(ValueError, match="reference policies exist for"):
        reference_returns("t2mir/Reach-v0")
