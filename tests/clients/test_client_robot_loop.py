"""Robot loop: fallback when the server is late or failing, then the session simply continues."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from live_server import DARK, KEY

from clients import AsyncSession, AsyncT2MIRClient, run_robot_loop

STAY = 4


class _Robot(gym.Env):
    """DarkRoom-shaped robot earning reward 1 every tick, so its return is its tick count."""

    def __init__(self, ticks: int) -> None:
        self.observation_space = gym.spaces.Box(0, 9, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(5)
        self.ticks, self.t = ticks, 0
        self.executed: list[int] = []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.executed.append(int(action))
        self.t += 1
        return np.array([self.t % 10, 0], np.float32), 1.0, False, self.t >= self.ticks, {}


@pytest.mark.anyio
async def test_robot_loop_falls_back_and_continues(live_server):
    robot = _Robot(ticks=20)
    faults = live_server.faults
    async with AsyncT2MIRClient(live_server.url, KEY, timeout=1.0, retries=1, backoff=0.01) as client:
        session = await AsyncSession.create(client, model=DARK)
        faults.add("delay", step=3, seconds=0.3)  # answer far beyond the action timeout
        faults.add("unavailable", step=10, times=4)  # store down: 503s beyond client retries
        report = await run_robot_loop(
            session, robot, rate_hz=25, action_timeout=0.03, fallback_action=STAY, episodes=2
        )
        stored = await client.get_session(session.session_id)
    assert report.ticks == 40 == report.served + report.fallbacks
    assert report.fallbacks >= 5 and report.served >= 5 and STAY in robot.executed
    assert report.stale >= 1 and report.resent >= 1
    assert stored.step == report.next_step  # no gap, nothing applied twice
    # every tick's reward reached the history exactly once, fallback ticks included
    assert stored.returns == report.episode_returns == [20.0, 20.0]
    assert "40 ticks at 25 Hz" in report.summary()


@pytest.mark.anyio
async def test_robot_loop_checks_its_settings(memory_server):
    async with AsyncT2MIRClient(memory_server.url, KEY) as client:
        session = await AsyncSession.create(client, model=DARK)
        with pytest.raises(ValueError, match="action_timeout"):
            await run_robot_loop(session, _Robot(3), rate_hz=10, action_timeout=0.5, fallback_action=STAY)
        with pytest.raises(ValueError, match="fallback"):
            await run_robot_loop(session, _Robot(3), rate_hz=10)
