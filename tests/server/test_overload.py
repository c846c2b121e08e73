"""A real server under 4x overload: answered acts stay near the deadline, shed acts get 503
``overloaded`` with Retry-After, and no acknowledged step is lost.

Setup: a ``t2mir serve`` process on Redis with a model made slow enough (d=128, 4 layers, at most
4 sessions per engine call) that the engine, not HTTP, is the bottleneck, and a 250 ms act
deadline. The load generator of ``t2mir bench --overload`` (`server.bench.overload`) first
measures the capacity (16 sessions back to back), then paces 64 sessions at 4x that rate.

Margins. The deadline bounds the time from an act's arrival to its answer, stored (parse, store
read, queue wait, forward, hand-back, store write), costing each part at a high quantile of recent
ones (`server.call_cost`): on 2 cores shared with other jobs single calls stall for CPU well past
that, so that part gets 150 ms of estimate error at p99 (measured up to 355 ms at load average 15).
After it the answer is serialised and read by the client (this process, on the same cores), which
at load average 10-16 on 2 cores reaches a few hundred ms at p99 (50 ms when the machine is
quiet): answered acts must stay under deadline + 750 ms at p99 as the client sees them. The shed answers, their Retry-After
and the step audit do not depend on timing.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from model_factory import write_checkpoint
from server_process import ServerProcess

from server.bench.episodes import make_envs
from server.bench.loadgen import SessionDriver
from server.bench.overload import OverloadPlan, create_sessions, run_overload
from server.bench.targets import T2MIRBackend, fetch_model_info, new_http

DEADLINE_MS = 250.0
ESTIMATE_MARGIN_MS = 150.0
"""Error of the mean-cost estimate at p99 on busy cores (docstring)."""
MARGIN_MS = 750.0
"""Store write, hand-back, serialisation and the client's own reading on 2 busy cores (docstring)."""


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory, redis_server) -> ServerProcess:
    path = tmp_path_factory.mktemp("ckpt") / "overload"
    checkpoint = write_checkpoint(path, "overload-test", "1", d_model=128, n_layers=4, n_heads=4)
    args = ["--max-batch-size", "4", "--act-deadline-ms", str(DEADLINE_MS)]
    server = ServerProcess([checkpoint], redis_url=redis_server.url, args=args)
    server.start()
    yield server
    server.close()


async def _run(url: str, plan: OverloadPlan) -> dict:
    async with new_http(plan.sessions + plan.capacity_sessions) as http:
        info = await fetch_model_info(http, url)
        backend = T2MIRBackend(http, url)

        def drivers(n: int, tag: str) -> list[SessionDriver]:
            envs = make_envs("darkroom", n, info.observation_dim, info.max_episode_steps, seed=n)
            return [
                SessionDriver(f"overload-{tag}-{i}", env, info.new_history()) for i, env in enumerate(envs)
            ]

        capacity, paced = drivers(plan.capacity_sessions, "capacity"), drivers(plan.sessions, "paced")
        await create_sessions(capacity + paced, backend)
        return await run_overload(plan, backend, capacity, paced)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_four_times_the_capacity_is_shed_not_queued(slow_server: ServerProcess):
    plan = OverloadPlan(
        factor=4.0, sessions=64, capacity_sessions=16, duration_s=6.0, warmup_s=0.5, deadline_ms=DEADLINE_MS
    )
    row = asyncio.run(_run(slow_server.url, plan))
    summary = {
        k: row[k] for k in ("capacity_acts_per_s", "answered", "shed", "latency_ms", "deadline_path_ms")
    }
    assert row["errors"] == 0, row["error_samples"]
    assert row["answered"] > 0 and row["shed"] > 0, summary
    assert row["shed_without_retry_after"] == 0
    assert row["deadline_path_ms"]["p99"] < DEADLINE_MS + ESTIMATE_MARGIN_MS, summary
    assert row["latency_ms"]["p99"] < DEADLINE_MS + MARGIN_MS, summary
    assert row["lost_steps"] == 0 and row["phantom_steps"] == 0, row
    assert row["stored_steps"] == row["acknowledged_steps"] > 0
    with urllib.request.urlopen(slow_server.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    shed = _metric(metrics, 't2mir_acts_shed_total{model="overload-test"}')
    assert shed >= row["shed"]  # the capacity phase may have shed a few as well
    assert _metric(metrics, 't2mir_act_requests_total{status="503"}') == shed
    assert 't2mir_queue_depth{model="overload-test"}' in metrics


def test_shed_acts_leave_the_session_unchanged(slow_server: ServerProcess):
    """A resent shed step is applied once: the audit above, plus the stored answer of each
    session's last acknowledged act equals the action its client received."""
    plan = OverloadPlan(factor=4.0, sessions=96, capacity_sessions=8, duration_s=3.0, warmup_s=0.2)
    # 96 sessions queue 24 calls of 4 ahead of the last: well past the 250 ms deadline, so some are shed

    async def run() -> None:
        async with new_http(64) as http:
            info = await fetch_model_info(http, slow_server.url)
            backend = T2MIRBackend(http, slow_server.url)
            envs = make_envs("darkroom", 104, info.observation_dim, info.max_episode_steps, seed=3)
            drivers = [SessionDriver(f"resend-{i}", e, info.new_history()) for i, e in enumerate(envs)]
            await create_sessions(drivers, backend)
            row = await run_overload(plan, backend, drivers[:8], drivers[8:])
            assert row["shed"] > 0 and row["lost_steps"] == row["phantom_steps"] == 0, row
            for driver in drivers[8:]:
                if driver.pending is None or not driver.history.actions:
                    continue  # the last step closed an episode: no action to compare
                last = driver.step - 1
                body = {"step": last, "observation": driver.history.obs[-1]}  # a resend: answered as stored
                async with http.post(f"{slow_server.url}/sessions/{driver.session_id}/act", json=body) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["action"] == driver.history.actions[-1]

    asyncio.run(run())
