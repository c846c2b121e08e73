"""Gymnasium shim against the real server: the real DarkRoom env, vector envs, a continuous env,
and space checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from live_server import CHEETAH, DARK, KEY

from clients import Session, SessionNotFound, SpaceMismatch, T2MIRClient, run_episodes
from clients.gym_shim import convert_action

DARKROOM = "t2mir/DarkRoom-v0"


def _darkroom(index: int = 3):
    from training.envs import make_env, resolve_task

    return make_env(DARKROOM, resolve_task(DARKROOM, f"test:{index}"))


def test_darkroom_two_episodes(live_server):
    reports = []
    env = _darkroom()
    faults = live_server.faults
    with T2MIRClient(live_server.url, KEY) as client:
        before = len(faults.created)
        returns = run_episodes(client, env, 2, on_episode=reports.append, seed=0, keep_sessions=True)
        (sid,) = faults.created[before:]
        stored = client.get_session(sid)
    assert len(returns) == 2 and returns == stored.returns
    assert [(r.episode, r.steps, r.session_id) for r in reports] == [(0, 100, sid), (1, 100, sid)]
    assert stored.step == 202 and stored.episode == 2  # 100 steps + the done act, twice, no gaps
    assert [faults.requests[(sid, step)] for step in range(202)] == [1] * 202  # no step sent twice


def test_mismatched_spaces_are_refused(memory_server):
    env = _darkroom()
    faults = memory_server.faults
    with T2MIRClient(memory_server.url, KEY) as client:
        before = len(faults.created)
        with pytest.raises(SpaceMismatch, match=r"3.*2|2.*3"):
            run_episodes(client, env, 1, model=CHEETAH)
        (sid,) = faults.created[before:]
        with pytest.raises(SessionNotFound):  # the session it created was deleted
            client.get_session(sid)
        session = Session.create(client, model=DARK)
        wrong_actions = gym.wrappers.TimeLimit(_Continuous(action_dim=2), 3)
        with pytest.raises(SpaceMismatch, match="observations"):
            run_episodes(client, wrong_actions, 1, session)
        with pytest.raises(ValueError, match="2 session"):
            run_episodes(client, [env], 1, [session, session])
    with pytest.raises(SpaceMismatch, match="Discrete"):
        from clients.gym_shim import check_spaces

        check_spaces(session.info, env.observation_space, gym.spaces.Discrete(4))


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_vector_env_gets_one_session_per_sub_env(memory_server, mode):
    venv = SyncVectorEnv([lambda: _darkroom(3), lambda: _darkroom(7)], autoreset_mode=mode)
    reports = []
    faults = memory_server.faults
    with T2MIRClient(memory_server.url, KEY) as client:
        before = len(faults.created)
        returns = run_episodes(client, venv, 2, on_episode=reports.append, keep_sessions=True)
        sessions = {r.session_id for r in reports}
        assert len(sessions) == 2 and sessions == set(faults.created[before:])
        assert len(returns) == 4 and all(r.steps == 100 for r in reports)
        by_env = [[r.episode_return for r in reports if r.env_index == i] for i in range(2)]
        assert returns == by_env[0] + by_env[1]
        for report in reports[:2]:
            stored = client.get_session(report.session_id)
            assert stored.step == 202 and stored.returns == by_env[report.env_index]


class _Continuous(gym.Env):
    """Box(3) observations, Box(action_dim) actions in [-0.5, 0.5]; records what it was given."""

    def __init__(self, action_dim: int = 2) -> None:
        self.observation_space = gym.spaces.Box(-10, 10, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-0.5, 0.5, shape=(action_dim,), dtype=np.float32)
        self.received: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.received.append(action)
        return np.full(3, len(self.received), np.float32), 0.25, False, False, {}


def test_continuous_actions_are_float32_and_clipped(memory_server):
    env = _Continuous()
    with T2MIRClient(memory_server.url, KEY) as client:
        session = Session.create(client, model=CHEETAH, action_noise=1.0)  # noise: many out of the env's box
        returns = run_episodes(client, env, 2, session, max_episode_steps=4)
    assert returns == [1.0, 1.0] == session.episode_returns
    assert all(a.dtype == np.float32 and a.shape == (2,) for a in env.received)
    sent = [memory_server.faults.actions[(session.session_id, step)] for step in (0, 1, 2, 3, 5, 6, 7, 8)]
    expected = np.clip(np.array(sent, np.float32), -0.5, 0.5)  # the server's actions, clipped to the env
    assert np.array_equal(np.stack(env.received), expected)
    assert np.abs(np.array(sent)).max() > 0.5  # clipping happened


def test_convert_action_discrete():
    assert convert_action(3, gym.spaces.Discrete(5)) == 3
    assert convert_action(np.int64(1), gym.spaces.Discrete(5, start=-2)) == -1
    with pytest.raises(ValueError):
        convert_action(5, gym.spaces.Discrete(5))
