"""The load generator against real server subprocesses, and the baseline's parity with t2mir.

The parity test is what makes the comparison honest: for the same session history (greedy
sampling on both sides) the naive baseline must answer exactly the t2mir server's actions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.bench.episodes import make_envs
from server.bench.loadgen import SessionDriver, parity_check, prefill, run_phase
from server.bench.processes import cpu_seconds
from server.bench.stats import PARTS, scrape, summarise
from server.bench.targets import BaselineBackend, T2MIRBackend, fetch_model_info, new_http


def drivers_for(info: Any, kind: str, n: int, tag: str, seed: int = 0) -> list[SessionDriver]:
    envs = make_envs(kind, n, info.observation_dim, info.max_episode_steps, seed)
    return [SessionDriver(f"{tag}-{i}", env, info.new_history()) for i, env in enumerate(envs)]


def test_baseline_gives_the_same_actions_as_t2mir(bench_servers):
    async def go() -> tuple[Any, SessionDriver]:
        async with new_http(2) as http:
            info = await fetch_model_info(http, bench_servers.url, "short-tiny")
            assert (await BaselineBackend(http, bench_servers.baseline_url).info())["max_episode_steps"] == 5
            driver = drivers_for(info, "synthetic", 1, f"parity-{time.time_ns()}", seed=5)[0]
            ours = T2MIRBackend(http, bench_servers.url, model="short-tiny")
            result = await parity_check(driver, ours, BaselineBackend(http, bench_servers.baseline_url), 60)
            return result, driver

    result, driver = asyncio.run(go())
    assert result.acts == 60
    assert result.mismatches == 0, result.first_mismatch
    assert driver.history.episode >= 10  # 5-step episodes: retention (2 best of 10+) was exercised
    assert len(driver.history.kept) == 2
    actions = [a for e in driver.history.kept for a in e.actions] + driver.history.actions
    assert len(set(actions)) > 1  # the comparison is not trivially true (one constant action)


def test_load_generator_against_a_real_server(bench_servers):
    url = bench_servers.url
    pid = bench_servers.server.pid

    async def go() -> tuple[Any, list[SessionDriver], list[int]]:
        async with new_http(2) as http:
            info = await fetch_model_info(http, url, "darkroom-tiny")
            backend = T2MIRBackend(http, url, model="darkroom-tiny")
            drivers = drivers_for(info, "darkroom", 2, f"load-{time.time_ns()}")
            for d in drivers:
                await backend.create(d.session_id)

            async def probe() -> dict[str, Any]:
                metrics = await scrape(http, url)
                return {"t": time.perf_counter(), "cpu": {"server": cpu_seconds(pid)}, "metrics": metrics}

            phase = await run_phase(drivers, backend, 0.3, 2.0, probe)
            steps = []
            for d in drivers:
                async with http.get(f"{url}/sessions/{d.session_id}") as response:
                    steps.append((await response.json())["step"])
                await backend.delete(d.session_id)
            return phase, drivers, steps

    phase, drivers, steps = asyncio.run(go())
    row = summarise(phase, "t2mir", "http")
    assert row["errors"] == 0, row["error_samples"]
    assert row["acts"] >= 10 and row["acts_per_s"] > 0
    assert steps == [d.step for d in drivers]  # the protocol's step numbering stayed in sync
    lat = row["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert set(PARTS["t2mir"]) | {"other", "outside", "total"} <= set(row["server_timings_ms"])
    assert row["engine_calls"] >= 1 and row["batch"]["mean"] >= 1.0
    assert sum(h["calls"] for h in row["batch"]["histogram"]) == row["engine_calls"]
    assert row["cache"]["hit_rate"] is not None and row["cache"]["hit_rate"] > 0.5
    assert row["cpu_percent"]["server"] is not None and row["cpu_percent"]["server"] > 0


def test_load_generator_replays_sessions_on_the_baseline(bench_servers):
    async def go() -> dict[str, Any]:
        async with new_http(2) as http:
            info = await fetch_model_info(http, bench_servers.url, "short-tiny")
            ours = T2MIRBackend(http, bench_servers.url, transport="ws", model="short-tiny")
            drivers = drivers_for(info, "synthetic", 2, f"replay-{time.time_ns()}")
            for d in drivers:
                await ours.create(d.session_id)
            await prefill(drivers, ours, 2, info.max_episode_steps)
            assert all(d.history.episode == 2 for d in drivers)
            clones = [d.clone() for d in drivers]
            for d in drivers:
                await ours.delete(d.session_id)

            async def probe() -> dict[str, Any]:
                return {"t": time.perf_counter(), "cpu": {}, "metrics": None}

            baseline = BaselineBackend(http, bench_servers.baseline_url)
            phase = await run_phase(clones, baseline, 0.2, 1.0, probe)
            return summarise(phase, "baseline", "http")

    row = asyncio.run(go())
    assert row["errors"] == 0, row["error_samples"]
    assert row["acts"] > 0 and row["batch"] is None and row["cache"] is None
    assert set(row["server_timings_ms"]) >= {"parse", "queue_wait", "forward", "outside"}
