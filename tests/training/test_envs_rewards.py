"""Reward and dynamics definitions of every family, checked on hand-made cases."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from training.envs import TaskSpec, make_env, task_split
from training.envs.metaworld_tasks import OBJECT_INIT_POS

LEFT, RIGHT, UP, DOWN, STAY = range(5)


def _darkroom(goal: list[int]) -> gym.Env:
    return make_env("t2mir/DarkRoom-v0", TaskSpec("t2mir/DarkRoom-v0", "train", 0, {"goal": goal}))


def test_darkroom_reward_only_on_goal() -> None:
    env = _darkroom([3, 7])
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0])
    obs, reward, *_ = env.step(LEFT)  # walls keep the agent inside the grid
    np.testing.assert_array_equal(obs, [0, 0])
    assert reward == 0.0
    rewards = []
    for action in [RIGHT] * 3 + [UP] * 6:
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        assert not terminated and not truncated
    np.testing.assert_array_equal(obs, [3, 6])  # next to the goal: still 0
    assert rewards == [0.0] * 9
    obs, reward, *_ = env.step(UP)
    np.testing.assert_array_equal(obs, [3, 7])
    assert reward == 1.0
    assert env.step(STAY)[1] == 1.0  # staying on the goal keeps paying
    obs, reward, *_ = env.step(RIGHT)
    np.testing.assert_array_equal(obs, [4, 7])
    assert reward == 0.0
    obs, reward, *_ = env.step(LEFT)
    assert reward == 1.0


def test_darkroom_goal_at_start_and_max_return() -> None:
    env = _darkroom([0, 0])
    env.reset()
    total, truncated, n = 0.0, False, 0
    while not truncated:
        _, reward, _, truncated, _ = env.step(STAY)
        total += reward
        n += 1
    assert (n, total) == (100, 100.0)


def test_point_robot_reward_is_minus_distance() -> None:
    goal = [0.5, -0.25]
    env = make_env("t2mir/PointRobot-v0", TaskSpec("t2mir/PointRobot-v0", "test", 0, {"goal": goal}))
    obs, _ = env.reset(seed=3)
    assert np.all(np.abs(obs) <= 0.1)
    rng = np.random.default_rng(0)
    position = obs.astype(np.float64)
    for _ in range(10):
        action = rng.uniform(-0.1, 0.1, size=2)
        obs, reward, terminated, _, _ = env.step(action)
        position = position + action
        np.testing.assert_allclose(obs, position, atol=1e-6)
        assert reward == pytest.approx(-np.linalg.norm(env.unwrapped._position - goal), abs=1e-12)
        assert reward == pytest.approx(-np.linalg.norm(obs - np.array(goal)), abs=1e-6)
        assert not terminated
    # Out-of-range actions are clipped to the 0.1 move; positions are not clipped.
    before = env.unwrapped._position.copy()
    obs, *_ = env.step(np.array([5.0, -5.0]))
    np.testing.assert_allclose(env.unwrapped._position - before, [0.1, -0.1])


def test_point_robot_positions_unclipped() -> None:
    env = make_env("t2mir/PointRobot-v0", TaskSpec("t2mir/PointRobot-v0", "test", 0, {"goal": [0, 0]}))
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        last, reward, *_ = env.step(np.array([0.1, 0.0]))
    assert last[0] == pytest.approx(obs[0] + 2.0, abs=1e-5)
    assert reward == pytest.approx(-np.hypot(last[0], last[1]), abs=1e-5)


def _cheetah(velocity: float) -> gym.Env:
    return make_env(
        "t2mir/CheetahVel-v0", TaskSpec("t2mir/CheetahVel-v0", "train", 0, {"velocity": velocity})
    )


def test_cheetah_vel_reward_and_observation() -> None:
    env = _cheetah(1.25)
    sim = env.unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        action = rng.uniform(-1, 1, size=6)
        x_before = float(sim.data.qpos[0])
        obs, reward, terminated, _, info = env.step(action)
        v = (float(sim.data.qpos[0]) - x_before) / sim.dt
        assert info["x_velocity"] == pytest.approx(v, rel=1e-9, abs=1e-12)
        expected = -abs(v - 1.25) - 0.05 * float(np.sum(action**2))
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert info["reward_forward"] + info["reward_ctrl"] == pytest.approx(reward)
        np.testing.assert_allclose(obs[:8], sim.data.qpos[1:], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(obs[8:17], sim.data.qvel, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(obs[17:], sim.get_body_com("torso"), rtol=1e-6, atol=1e-6)
        assert not terminated


def test_cheetah_tasks_differ_only_in_reward() -> None:
    a, b = _cheetah(0.5), _cheetah(2.5)
    oa, _ = a.reset(seed=4)
    ob, _ = b.reset(seed=4)
    np.testing.assert_array_equal(oa, ob)
    action = np.full(6, 0.3)
    oa, ra, *_ = a.step(action)
    ob, rb, *_ = b.step(action)
    np.testing.assert_array_equal(oa, ob)
    assert ra != rb


def test_walker_tasks_change_dynamics() -> None:
    train, _ = task_split("t2mir/WalkerParam-v0", seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(30, 6))

    def rollout(env: gym.Env) -> np.ndarray:
        obs, _ = env.reset(seed=11)
        out = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            expected = info["reward_forward"] + info["reward_ctrl"] + info["reward_survive"]
            assert reward == pytest.approx(expected)
            out.append(obs)
            if terminated or truncated:
                break
        return np.array(out[:10])

    env_a = make_env("t2mir/WalkerParam-v0", train[0])
    traj_a = rollout(env_a)
    traj_b = rollout(make_env("t2mir/WalkerParam-v0", train[1]))
    np.testing.assert_array_equal(traj_a[0], traj_b[0])  # same start state
    assert np.abs(traj_a - traj_b).max() > 1e-3  # different dynamics
    model = env_a.unwrapped.model
    defaults = env_a.unwrapped._defaults
    np.testing.assert_allclose(
        model.body_mass, defaults["body_mass_scale"] * train[0].params["body_mass_scale"]
    )
    np.testing.assert_allclose(
        model.dof_damping, defaults["dof_damping_scale"] * train[0].params["dof_damping_scale"]
    )
    # Switching tasks back and forth rebuilds from the XML defaults.
    env_a.unwrapped.set_task(train[1])
    env_a.unwrapped.set_task(train[0])
    np.testing.assert_array_equal(rollout(env_a), traj_a)


def _metaworld_rollout(env: gym.Env, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=0)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        assert not terminated and not truncated
    return np.array(observations), np.array(rewards)


@pytest.mark.parametrize("env_id", ["t2mir/Reach-v0", "t2mir/Push-v0"])
def test_metaworld_goal_hidden_and_reward_differs(env_id: str) -> None:
    train, _ = task_split(env_id, seed=0)
    # Lower the open gripper onto the puck: Push pays goal-dependent reward once touching it.
    actions = np.tile([0.0, 0.0, -1.0, -1.0], (25, 1))
    env_a, env_b = make_env(env_id, train[0]), make_env(env_id, train[1])
    obs_a, rew_a = _metaworld_rollout(env_a, actions)
    obs_b, rew_b = _metaworld_rollout(env_b, actions)
    np.testing.assert_array_equal(obs_a, obs_b)  # goal invisible, object start identical
    np.testing.assert_allclose(obs_a[0, 4:7], OBJECT_INIT_POS, atol=0.01)
    assert np.abs(rew_a - rew_b).max() > 1e-3
    assert np.all((rew_a >= 0) & (rew_a <= 10))
    target = env_a.unwrapped.metaworld_env._target_pos
    np.testing.assert_allclose(target[:2], train[0].params["goal"][:2])
