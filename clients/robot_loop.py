"""A fixed-rate control loop that never waits on the server longer than its action timeout.

Each tick (``rate_hz``) the loop asks the session for an action for the current observation and
waits at most ``action_timeout``. A late, failing or absent server gives the tick the fallback
action (e.g. "stay" or zeros) and the robot keeps moving; the request is not abandoned:

- a late answer is discarded when it arrives (its observation is stale) and the next tick acts on
  a fresh observation with the next step;
- an act that got no answer even after the client's own retries is resent with the same step and
  the same body until the server confirms it, so the session continues where it was when the
  server comes back and nothing is applied twice;
- rewards earned while the fallback ran are added to the reward of the next act, so every reward
  reaches the history exactly once (and the session's return equals the robot's). The history then
  credits them to the last action the server chose: the protocol has no field for "the robot did
  something else", which is the price of never blocking the robot.

The "robot" is anything with gymnasium's ``reset()`` / ``step(action)`` and ``action_space``; the
example script (``python -m clients.examples.robot_loop``) drives the DarkRoom simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.errors import ConnectionFailed, ServiceUnavailable
from clients.gym_shim import check_spaces, convert_action
from clients.session import AsyncSession

_UNCONFIRMED = (ConnectionFailed, ServiceUnavailable)


@dataclass
class RobotLoopReport:
    """What happened during `run_robot_loop`."""

    session_id: str
    rate_hz: float
    ticks: int = 0
    served: int = 0
    """Ticks that executed the server's action."""
    fallbacks: int = 0
    """Ticks that executed the fallback action (server late, down or still retrying)."""
    stale: int = 0
    """Answers that arrived after their tick had already used the fallback (discarded)."""
    resent: int = 0
    """Acts that got no answer after the client's retries and were sent again (same step)."""
    overruns: int = 0
    """Ticks that started late because the previous one took longer than the period."""
    latencies_ms: list[float] = field(default_factory=list)
    """Answer latency of the acts that were served in time."""
    episode_returns: list[float] = field(default_factory=list)
    next_step: int = 0

    def summary(self) -> str:
        latency = "n/a"
        if self.latencies_ms:
            p50, p95 = np.percentile(self.latencies_ms, [50, 95])
            latency = f"p50 {p50:.1f} ms p95 {p95:.1f} ms"
        returns = ", ".join(f"{r:.2f}" for r in self.episode_returns)
        return (
            f"session {self.session_id}: {self.ticks} ticks at {self.rate_hz:g} Hz, {self.served} served, "
            f"{self.fallbacks} fallback, {self.stale} stale answers, {self.resent} resent acts, "
            f"{self.overruns} overruns; act latency {latency}; episode returns [{returns}]"
        )


def default_fallback(action_space: Any) -> Any:
    """Zeros (clipped into the bounds) for a Box; Discrete spaces need an explicit fallback."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Box):
        zeros = np.zeros(action_space.shape, action_space.dtype)
        return np.clip(zeros, action_space.low, action_space.high)
    raise ValueError(f"give a fallback_action for {action_space} (e.g. the 'stay' action)")


class _Loop:
    """State of one run: the session, the act in flight and the counters."""

    def __init__(
        self, session: AsyncSession, report: RobotLoopReport, timeout: float, clock: Callable[[], float]
    ) -> None:
        self.session = session
        self.report = report
        self.timeout = timeout
        self.resend_delay = min(timeout, 0.05)
        self.clock = clock
        self.task: asyncio.Task | None = None
        self.task_tick = -1
        self.task_started = 0.0

    def start(self, coro: Any, tick: int) -> None:
        self.task = asyncio.ensure_future(coro)
        self.task_tick, self.task_started = tick, self.clock()

    def harvest(self) -> tuple[bool, Any]:
        """Collect the finished task: (confirmed, action); resends it if it went unconfirmed."""
        task, self.task = self.task, None
        assert task is not None and task.done()
        exc = task.exception()
        if exc is None:
            return True, task.result()
        if not isinstance(exc, _UNCONFIRMED):
            raise exc
        self.report.resent += 1
        self.start(self._resend(), self.task_tick)
        return False, None

    async def _resend(self) -> Any:
        await asyncio.sleep(self.resend_delay)  # the client already backed off; do not spin
        return await self.session.retry()

    async def action_for(self, tick: int, observation: Any, reward: float, first: bool) -> tuple[Any, float]:
        """The server's action for this tick, or None by the deadline; returns (action, reward left)."""
        deadline = self.clock() + self.timeout
        while True:
            if self.task is None:
                coro = self.session.reset(observation) if first else self.session.step(observation, reward)
                self.start(coro, tick)
                reward, first = 0.0, False
            remaining = deadline - self.clock()
            if remaining <= 0:
                return None, reward
            task = self.task
            assert task is not None  # started above or still running
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if not done:
                return None, reward
            tick_of_task, started = self.task_tick, self.task_started
            confirmed, action = self.harvest()
            if confirmed and tick_of_task == tick:
                self.report.latencies_ms.append((self.clock() - started) * 1000.0)
                return action, reward
            if confirmed:
                self.report.stale += 1

    async def settle(self, timeout: float) -> None:
        """Wait until no act is in flight or unconfirmed (late answers are discarded)."""
        deadline = self.clock() + timeout
        while self.task is not None or self.session.pending is not None:
            if self.task is None:
                self.start(self._resend(), self.task_tick)
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise TimeoutError(f"the server did not confirm step {self.session.next_step} in {timeout} s")
            task = self.task
            assert task is not None  # started above or still running
            await asyncio.wait({task}, timeout=remaining)
            if task.done():
                confirmed, action = self.harvest()
                if confirmed and action is not None:  # a step's late answer, not the done act's
                    self.report.stale += 1

    async def end_episode(self, observation: Any, reward: float, timeout: float) -> None:
        await self.settle(timeout)
        with contextlib.suppress(*_UNCONFIRMED):
            await self.session.end(observation, reward)
        await self.settle(timeout)


async def run_robot_loop(
    session: AsyncSession,
    robot: Any,
    *,
    rate_hz: float = 20.0,
    action_timeout: float | None = None,
    fallback_action: Any = None,
    episodes: int = 1,
    max_steps: int | None = None,
    settle_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> RobotLoopReport:
    """Drive ``robot`` at ``rate_hz`` for ``episodes`` episodes through ``session``.

    Args:
        session: an `AsyncSession` (HTTP or WebSocket channel) whose model fits the robot.
        robot: gymnasium-like ``reset()`` / ``step(action)`` / ``action_space`` / ``observation_space``.
        action_timeout: longest wait for an action within a tick (default: half the period).
        fallback_action: executed when no action came in time (default: zeros for a Box).
        max_steps: end each episode after this many ticks (besides terminated/truncated).
        settle_timeout: at an episode's end, how long to keep resending an unconfirmed act before
            giving up (`TimeoutError`); the done act needs every earlier step confirmed.
    """
    period = 1.0 / rate_hz
    timeout = period / 2 if action_timeout is None else action_timeout
    if not 0 < timeout <= period:
        raise ValueError(f"action_timeout must be in (0, {period:.4f}] s, got {timeout}")
    check_spaces(session.info, robot.observation_space, robot.action_space)
    fallback = default_fallback(robot.action_space) if fallback_action is None else fallback_action
    report = RobotLoopReport(session.session_id, rate_hz)
    loop = _Loop(session, report, timeout, clock)
    try:
        for _ in range(episodes):
            observation, _ = robot.reset()
            reward, first, steps = 0.0, True, 0
            next_tick = clock()
            while True:
                action, reward = await loop.action_for(report.ticks, observation, reward, first)
                first = False
                if action is None:
                    report.fallbacks += 1
                    command = fallback
                else:
                    report.served += 1
                    command = convert_action(action, robot.action_space)
                observation, step_reward, terminated, truncated, _ = robot.step(command)
                reward += float(step_reward)
                report.ticks += 1
                steps += 1
                if terminated or truncated or (max_steps is not None and steps >= max_steps):
                    break
                next_tick += period
                delay = next_tick - clock()
                if delay < 0:
                    report.overruns += 1
                    next_tick = clock()
                else:
                    await asyncio.sleep(delay)
            await loop.end_episode(observation, reward, settle_timeout)
            report.episode_returns.append(session.episode_returns[-1])
    finally:
        if loop.task is not None and not loop.task.done():
            loop.task.cancel()
            with contextlib.suppress(BaseException):
                await loop.task
    report.next_step = session.next_step
    return report
