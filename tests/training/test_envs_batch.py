"""Batch envs agree with the single envs; the DarkRoom expert is optimal."""

from __future__ import annotations

import numpy as np
import pytest

from training.envs import (
    DarkRoomBatchEnv,
    PointRobotBatchEnv,
    SyncBatchEnv,
    TaskSpec,
    darkroom_expert_action,
    make_batch_env,
    make_env,
    task_split,
)


def _run_singles(env_id: str, tasks: list[TaskSpec], seed: int, actions: np.ndarray) -> list[tuple]:
    out = []
    for i, task in enumerate(tasks):
        env = make_env(env_id, task, seed=seed + i)
        obs, _ = env.reset()
        rows = [(obs, 0.0, False, False)]
        done = False
        for a in actions[:, i]:
            if done:
                break
            obs, reward, terminated, truncated, _ = env.step(a)
            rows.append((obs, reward, terminated, truncated))
            done = terminated or truncated
        out.append(rows)
    return out


@pytest.mark.parametrize("env_id", ["t2mir/DarkRoom-v0", "t2mir/PointRobot-v0"])
def test_numpy_batch_equals_single_envs(env_id: str) -> None:
    _, test = task_split(env_id, seed=0)
    batch = make_batch_env(env_id, test, seed=10)
    assert isinstance(batch, DarkRoomBatchEnv | PointRobotBatchEnv)
    steps = batch.episode_steps
    rng = np.random.default_rng(0)
    if env_id == "t2mir/DarkRoom-v0":
        actions = rng.integers(0, 5, size=(steps, len(test)))
    else:
        actions = rng.uniform(-0.12, 0.12, size=(steps, len(test), 2))
    singles = _run_singles(env_id, test, 10, actions)
    obs = batch.reset()
    assert obs.shape == (len(test), 2) and obs.dtype == np.float32
    for i in range(len(test)):
        np.testing.assert_array_equal(obs[i], singles[i][0][0])
    for t in range(steps):
        obs, rewards, terminated, truncated = batch.step(actions[t])
        assert rewards.shape == terminated.shape == truncated.shape == (len(test),)
        for i in range(len(test)):
            s_obs, s_rew, s_term, s_trunc = singles[i][t + 1]
            np.testing.assert_array_equal(obs[i], s_obs)
            assert rewards[i] == s_rew and terminated[i] == s_term and truncated[i] == s_trunc
    assert truncated.all() and batch.done.all()
    # Finished sub-envs are frozen: same observation, reward 0, flags kept.
    frozen_obs, rewards, terminated, truncated = batch.step(actions[0])
    np.testing.assert_array_equal(frozen_obs, obs)
    assert not rewards.any() and truncated.all() and not terminated.any()
    # reset(seed) reseeds sub-env i with seed + i.
    np.testing.assert_array_equal(batch.reset(seed=10), np.stack([s[0][0] for s in singles]))


def test_batch_input_checks() -> None:
    _, test = task_split("t2mir/DarkRoom-v0", seed=0)
    batch = make_batch_env("t2mir/DarkRoom-v0", test[:3])
    with pytest.raises(RuntimeError):
        batch.step(np.zeros(3, dtype=int))
    batch.reset()
    with pytest.raises(ValueError):
        batch.step(np.zeros(4, dtype=int))
    with pytest.raises(ValueError):
        batch.step(np.array([0, 1, 7]))
    with pytest.raises(ValueError):
        make_batch_env("t2mir/DarkRoom-v0", task_split("t2mir/PointRobot-v0")[1])


def test_sync_batch_matches_single_envs_and_freezes_finished() -> None:
    env_id = "t2mir/WalkerParam-v0"
    _, test = task_split(env_id, seed=0)
    tasks = test[:2]
    batch = make_batch_env(env_id, tasks, seed=3)
    assert isinstance(batch, SyncBatchEnv) and batch.num_envs == 2
    steps = 200
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 2, 6))
    singles = _run_singles(env_id, tasks, 3, actions)
    obs = batch.reset()
    assert obs.shape == (2, 17) and obs.dtype == np.float32
    lengths = [len(s) - 1 for s in singles]
    assert min(lengths) < steps  # random actions make the walker fall: episodes end early
    for t in range(max(lengths) + 3):
        obs, rewards, terminated, truncated = batch.step(actions[min(t, steps - 1)])
        for i in range(2):
            if t < lengths[i]:
                s_obs, s_rew, s_term, s_trunc = singles[i][t + 1]
                np.testing.assert_array_equal(obs[i], s_obs)
                assert rewards[i] == s_rew and terminated[i] == s_term and truncated[i] == s_trunc
            else:  # frozen after its episode ended
                np.testing.assert_array_equal(obs[i], singles[i][-1][0])
                assert rewards[i] == 0.0
                assert (terminated[i], truncated[i]) == singles[i][-1][2:]
    assert batch.done.all()
    batch.reset()
    assert not batch.done.any()
    batch.close()


def test_darkroom_expert_reaches_every_goal_in_manhattan_steps() -> None:
    train, test = task_split("t2mir/DarkRoom-v0", seed=0)
    tasks = train + test
    goals = np.array([t.params["goal"] for t in tasks])
    distance = goals.sum(axis=1)  # Manhattan distance from [0, 0]
    batch = make_batch_env("t2mir/DarkRoom-v0", tasks)
    obs = batch.reset()
    returns = np.zeros(len(tasks))
    first_hit = np.full(len(tasks), -1)
    for t in range(batch.episode_steps):
        obs, rewards, _, _ = batch.step(darkroom_expert_action(obs, goals))
        returns += rewards
        first_hit[(first_hit < 0) & (rewards > 0)] = t + 1
    np.testing.assert_array_equal(obs, goals)
    expected_hit = np.maximum(distance, 1)  # a goal at the start pays from the first step
    np.testing.assert_array_equal(first_hit, expected_hit)
    np.testing.assert_array_equal(returns, 101 - expected_hit)


def test_darkroom_expert_action_scalar_and_order() -> None:
    assert darkroom_expert_action([0, 0], [3, 7]) == 1  # x gap first: right
    assert darkroom_expert_action(np.array([5.0, 2.0]), [3, 7]) == 0  # left
    assert darkroom_expert_action([3, 2], [3, 7]) == 2  # up
    assert darkroom_expert_action([3, 9], [3, 7]) == 3  # down
    assert darkroom_expert_action([3, 7], [3, 7]) == 4  # stay
    assert isinstance(darkroom_expert_action([0, 0], [3, 7]), int)
    batch_actions = darkroom_expert_action(np.zeros((4, 2)), np.array([[1, 0], [0, 1], [0, 0], [2, 2]]))
    np.testing.assert_array_equal(batch_actions, [1, 2, 4, 1])
