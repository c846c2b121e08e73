"""The overload row (``t2mir bench --overload FACTOR``): more demand than the server can serve.

1. capacity: ``capacity_sessions`` fresh sessions act back to back for the window; ``C`` = the acts
   per second answered (the server's throughput when saturated).
2. overload: ``sessions`` fresh sessions, each paced at ``r = FACTOR * C / sessions`` acts per
   second (the offered load is FACTOR times the capacity). A session sends its next act at its next
   tick once the previous one was answered (a late answer is not made up with a burst); an act the
   server sheds (503 ``overloaded``) is resent, the same step, after its ``Retry-After``, as the
   client library does. Latency is counted for answered acts (200) only, per attempt.
3. audit: every session's next step as the server stores it (``GET /sessions/{id}``) against the
   steps the client had acknowledged (acts and episode closes): ``lost`` = acknowledged steps the
   store lacks, ``phantom`` = stored steps the client never got an answer for (a shed step that was
   stored anyway). Steps are appended in order, fenced on the step, so equal counts mean every
   answered step is stored and no refused one is.

Latencies reported: the client's (``latency_ms``), the server's ``total`` and the part the deadline
bounds (``deadline_path_ms``: `DEADLINE_PATH`, arrival to the answer ready to send: parse, store
read, queue wait, forward, hand-back and store write; serialising and sending it come after).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.bench.loadgen import Recorder, SessionDriver, advance, run_phase
from server.bench.stats import percentiles
from server.bench.targets import T2MIRBackend

DEADLINE_PATH = ("parse", "store_read", "queue_wait", "forward", "handoff", "store_write")
"""The server timings an act's deadline bounds: from its arrival to its answer, stored."""


@dataclass(frozen=True)
class OverloadPlan:
    """What one overload row runs."""

    factor: float = 4.0
    """Offered load over the measured capacity."""
    sessions: int = 128
    """Paced sessions of the overload phase."""
    capacity_sessions: int = 64
    """Back-to-back sessions of the capacity phase."""
    duration_s: float = 10.0
    warmup_s: float = 1.0
    deadline_ms: float | None = None
    """The server's act deadline, for the report (None: not known to the load generator)."""


CREATE_CONCURRENCY = 32
"""Sessions created at a time (a burst of creates must not exhaust the server's store connections)."""


async def create_sessions(drivers: Sequence[SessionDriver], backend: T2MIRBackend) -> None:
    """Create every driver's session, ``CREATE_CONCURRENCY`` at a time."""
    for i in range(0, len(drivers), CREATE_CONCURRENCY):
        await asyncio.gather(*(backend.create(d.session_id) for d in drivers[i : i + CREATE_CONCURRENCY]))


async def _no_probe() -> dict[str, Any]:
    return {"t": time.perf_counter(), "cpu": {}, "metrics": None}


async def measure_capacity(
    drivers: Sequence[SessionDriver], backend: T2MIRBackend, warmup_s: float, duration_s: float
) -> float:
    """Acts per second answered with ``drivers`` acting back to back."""
    phase = await run_phase(drivers, backend, warmup_s, duration_s, _no_probe)
    if phase.errors:
        raise RuntimeError(f"capacity phase failed: {phase.errors[:3]}")
    return len(phase.acts) / phase.duration_s


async def drive_paced(
    drivers: Sequence[SessionDriver], backend: T2MIRBackend, rate: float, duration_s: float, seed: int = 0
) -> tuple[Recorder, float]:
    """Every session acts ``rate`` times a second for ``duration_s`` (shed acts resent after
    Retry-After); returns what was observed and the wall time of the phase, until every session
    stopped (a session in its Retry-After wait finishes that act)."""
    recorder = Recorder()
    period = 1.0 / rate
    rng = random.Random(seed)
    t0 = time.perf_counter()
    stop_at = t0 + duration_s

    async def loop(driver: SessionDriver, first: float) -> None:
        tick = t0 + first
        try:
            while True:
                now = time.perf_counter()
                if tick >= stop_at:
                    return
                if tick > now:
                    await asyncio.sleep(tick - now)
                await advance(driver, backend, recorder)
                tick = max(tick + period, time.perf_counter())
        except Exception as exc:  # this session stops; the row reports it
            recorder.errors.append(f"{driver.session_id}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(loop(d, rng.uniform(0.0, period)) for d in drivers))
    return recorder, time.perf_counter() - t0


async def audit(drivers: Sequence[SessionDriver], backend: T2MIRBackend) -> dict[str, int]:
    """Acknowledged steps against stored steps, over every session (module docstring); read
    ``CREATE_CONCURRENCY`` sessions at a time."""
    stored: list[int] = []
    for i in range(0, len(drivers), CREATE_CONCURRENCY):
        chunk = drivers[i : i + CREATE_CONCURRENCY]
        stored += await asyncio.gather(*(backend.stored_step(d.session_id) for d in chunk))
    acknowledged = sum(d.step for d in drivers)
    lost = sum(max(d.step - s, 0) for d, s in zip(drivers, stored, strict=True))
    phantom = sum(max(s - d.step, 0) for d, s in zip(drivers, stored, strict=True))
    return {"acknowledged_steps": acknowledged, "stored_steps": sum(stored), "lost_steps": lost,
            "phantom_steps": phantom}  # fmt: skip


def overload_row(
    plan: OverloadPlan,
    capacity: float,
    rate: float,
    recorder: Recorder,
    wall_s: float,
    counts: dict[str, int],
) -> dict[str, Any]:
    """The JSON row of one overload measurement."""
    attempts = len(recorder.acts) + len(recorder.shed)
    answered_total = [float(a.timings.get("total", 0.0)) for a in recorder.acts]
    governed = [sum(float(a.timings.get(p, 0.0)) for p in DEADLINE_PATH) for a in recorder.acts]
    return {
        "factor": plan.factor,
        "deadline_ms": plan.deadline_ms,
        "capacity_sessions": plan.capacity_sessions,
        "capacity_acts_per_s": capacity,
        "sessions": plan.sessions,
        "rate_per_session": rate,
        "offered_acts_per_s": rate * plan.sessions,
        "duration_s": wall_s,
        "answered": len(recorder.acts),
        "answered_acts_per_s": len(recorder.acts) / wall_s if wall_s > 0 else 0.0,
        "latency_ms": percentiles([a.client_ms for a in recorder.acts]),
        "server_total_ms": percentiles(answered_total),
        "deadline_path_ms": percentiles(governed),
        "shed": len(recorder.shed),
        "shed_rate": len(recorder.shed) / attempts if attempts else 0.0,
        "shed_without_retry_after": sum(1 for s in recorder.shed if s.retry_after is None),
        "errors": len(recorder.errors),
        "error_samples": recorder.errors[:3],
        **counts,
    }


async def run_overload(
    plan: OverloadPlan,
    backend: T2MIRBackend,
    capacity_drivers: Sequence[SessionDriver],
    drivers: Sequence[SessionDriver],
    seed: int = 0,
) -> dict[str, Any]:
    """Capacity, then ``plan.factor`` times that load, then the audit; the sessions must exist."""
    capacity = await measure_capacity(capacity_drivers, backend, plan.warmup_s, plan.duration_s)
    rate = plan.factor * capacity / len(drivers)
    recorder, wall = await drive_paced(drivers, backend, rate, plan.duration_s, seed)
    counts = await audit(drivers, backend)
    return overload_row(plan, capacity, rate, recorder, wall, counts)
