"""The load generator: N concurrent sessions, each following the act protocol on its own env.

A `SessionDriver` is one session's client state (env, client-side history, next step number and
the observation waiting for an action). Three things drive sessions:

- `prefill`: play each session to a realistic point (by default enough closed episodes to fill
  the model's context, plus a random number of steps so episode boundaries are staggered);
- `run_phase`: all sessions act as fast as their answers come back, for a warm-up and then a
  measured window; ``probe`` (``/metrics``, CPU) is sampled at the window's two ends, and the
  window counts the acts that *completed* inside it (unbiased throughput in a steady state);
  an act the server sheds (503 ``overloaded``) is counted and resent after its Retry-After;
- `parity_check`: one session driven against both servers in lock step, comparing actions.

Drivers are cloned to replay the same sessions (same histories, same env states) on the baseline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.bench.episodes import Action, ClientHistory, EpisodeEnv
from server.bench.targets import ActError, Answer, Shed


class Backend(Protocol):
    """A server under test, as `server.bench.targets` implements it."""

    async def create(self, session_id: str) -> None: ...

    async def act(
        self, session_id: str, step: int, history: ClientHistory, reward: float | None
    ) -> Answer: ...

    async def done(self, session_id: str, step: int, obs: list[float], reward: float) -> Answer | None: ...

    async def delete(self, session_id: str) -> None: ...


@dataclass
class SessionDriver:
    """One session's client state."""

    session_id: str
    env: EpisodeEnv
    history: ClientHistory
    step: int = 0
    """The session's next step number (acts and ``done`` messages both count)."""
    pending: tuple[list[float], float | None] | None = None
    """(observation, reward of the previous action) waiting for an act; None: reset first."""

    def clone(self, session_id: str | None = None) -> SessionDriver:
        """The same session state for another server (independent env and history)."""
        return SessionDriver(
            session_id or self.session_id, self.env.clone(), self.history.copy(), self.step, self.pending
        )


@dataclass
class ActRecord:
    """One answered act as the client saw it."""

    end: float
    """perf_counter() when the answer arrived."""
    client_ms: float
    timings: dict[str, float]


@dataclass
class ShedRecord:
    """One act the server refused as overloaded."""

    end: float
    """perf_counter() when the refusal arrived."""
    retry_after: float | None
    """The server's Retry-After in seconds (None: it sent none)."""


@dataclass
class Recorder:
    """Everything the sessions of one phase observed."""

    acts: list[ActRecord] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shed: list[ShedRecord] = field(default_factory=list)


RETRY_AFTER_DEFAULT_S = 1.0
"""Wait before resending a shed act whose refusal carried no Retry-After."""


async def _act(
    driver: SessionDriver, backend: Backend, reward: float | None, recorder: Recorder | None
) -> Answer:
    """The session's next act; a shed act is sent again (same step) after the server's Retry-After,
    as the client library does. Records the answered attempt's latency and every refusal."""
    while True:
        start = time.perf_counter()
        try:
            answer = await backend.act(driver.session_id, driver.step, driver.history, reward)
        except Shed as exc:
            if recorder is not None:
                recorder.shed.append(ShedRecord(time.perf_counter(), exc.retry_after))
            wait = RETRY_AFTER_DEFAULT_S if exc.retry_after is None else exc.retry_after
            await asyncio.sleep(wait)
            continue
        end = time.perf_counter()
        if recorder is not None:
            recorder.acts.append(ActRecord(end, (end - start) * 1000.0, answer.timings))
        return answer


async def advance(driver: SessionDriver, backend: Backend, recorder: Recorder | None = None) -> Action:
    """One act of ``driver`` (and the ``done`` message when the env ends the episode); an act the
    server sheds is resent after its Retry-After."""
    if driver.pending is None:
        driver.pending = (driver.env.reset(), None)
    obs, reward = driver.pending
    driver.history.observe(obs, reward)
    answer = await _act(driver, backend, reward, recorder)
    if answer.action is None:
        raise ActError(f"{driver.session_id}: no action at step {driver.step}")
    driver.step += 1
    driver.history.acted(answer.action)
    next_obs, next_reward, finished = driver.env.step(answer.action)
    if finished:
        start = time.perf_counter()
        await backend.done(driver.session_id, driver.step, next_obs, next_reward)
        if recorder is not None:
            recorder.done_ms.append((time.perf_counter() - start) * 1000.0)
        driver.step += 1
        driver.history.close(next_reward)
        driver.pending = None
    else:
        driver.pending = (next_obs, next_reward)
    return answer.action


async def prefill(
    drivers: Sequence[SessionDriver], backend: Backend, episodes: int, episode_steps: int, seed: int = 0
) -> None:
    """Play every session through ``episodes`` closed episodes plus a random part of the next one."""
    rng = random.Random(seed)
    extra = [rng.randrange(max(episode_steps, 1)) for _ in drivers]

    async def play(driver: SessionDriver, steps: int) -> None:
        while driver.history.episode < episodes or len(driver.history.actions) < steps:
            await advance(driver, backend)

    await asyncio.gather(*(play(d, n) for d, n in zip(drivers, extra, strict=True)))


@dataclass
class PhaseResult:
    """The measured window of one phase."""

    duration_s: float
    acts: list[ActRecord]
    done_ms: list[float]
    errors: list[str]
    before: dict[str, Any]
    after: dict[str, Any]
    sessions: int
    shed: int = 0
    """Acts the server refused as overloaded inside the window (each resent after Retry-After)."""


Probe = Callable[[], Awaitable[dict[str, Any]]]


async def run_phase(
    drivers: Sequence[SessionDriver], backend: Backend, warmup_s: float, duration_s: float, probe: Probe
) -> PhaseResult:
    """All sessions act back to back; measures the window [warm-up end, warm-up end + duration]."""
    recorder = Recorder()
    stop = asyncio.Event()

    async def loop(driver: SessionDriver) -> None:
        try:
            while not stop.is_set():
                await advance(driver, backend, recorder)
        except Exception as exc:  # this session stops; the others go on and the row reports it
            recorder.errors.append(f"{driver.session_id}: {type(exc).__name__}: {exc}")

    tasks = [asyncio.create_task(loop(d)) for d in drivers]
    try:
        await asyncio.sleep(warmup_s)
        before = await probe()
        t_start = time.perf_counter()
        await asyncio.sleep(duration_s)
        t_end = time.perf_counter()
        after = await probe()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    acts = [r for r in recorder.acts if t_start <= r.end <= t_end]
    shed = sum(1 for r in recorder.shed if t_start <= r.end <= t_end)
    return PhaseResult(
        t_end - t_start, acts, recorder.done_ms, recorder.errors, before, after, len(drivers), shed
    )


@dataclass
class ParityResult:
    """Actions of both servers compared over the same histories."""

    acts: int
    mismatches: int
    first_mismatch: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"acts": self.acts, "mismatches": self.mismatches, "first_mismatch": self.first_mismatch}


class _Tee:
    """A backend that asks the reference and the candidate and answers with the reference's action."""

    def __init__(self, reference: Backend, candidate: Backend, result: ParityResult) -> None:
        self.reference = reference
        self.candidate = candidate
        self.result = result

    async def create(self, session_id: str) -> None:
        await self.reference.create(session_id)
        await self.candidate.create(session_id)

    async def act(self, session_id: str, step: int, history: ClientHistory, reward: float | None) -> Answer:
        ours = await self.reference.act(session_id, step, history, reward)
        theirs = await self.candidate.act(session_id, step, history, reward)
        self.result.acts += 1
        if ours.action != theirs.action:
            self.result.mismatches += 1
            if self.result.first_mismatch is None:
                where = {"episode": history.episode, "t": history.t, "step": step}
                self.result.first_mismatch = {**where, "t2mir": ours.action, "baseline": theirs.action}
        return ours

    async def done(self, session_id: str, step: int, obs: list[float], reward: float) -> Answer | None:
        await self.candidate.done(session_id, step, obs, reward)
        return await self.reference.done(session_id, step, obs, reward)

    async def delete(self, session_id: str) -> None:
        await self.reference.delete(session_id)
        await self.candidate.delete(session_id)


async def parity_check(
    driver: SessionDriver, reference: Backend, candidate: Backend, acts: int
) -> ParityResult:
    """Drive one fresh session for ``acts`` acts on both servers; count differing actions."""
    result = ParityResult(0, 0)
    tee = _Tee(reference, candidate, result)
    await tee.create(driver.session_id)
    try:
        while result.acts < acts:
            await advance(driver, tee)
    finally:
        await tee.delete(driver.session_id)
    return result
