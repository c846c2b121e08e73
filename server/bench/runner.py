"""One benchmark run end to end: start what is needed, check parity, load both servers, measure growth.

Order: (1) start redis-server (``--store redis`` without a URL), the t2mir server and the baseline
(their start-ups overlap); (2) parity check: one session on both servers in lock step (same sampling seeds);
(3) for each session count: for each transport, fresh t2mir sessions are prefilled and measured,
then the same sessions (cloned from the first transport's prefill) are measured on the baseline;
(4) the ceiling row: ``GET /healthz`` on as many connections as the largest session count
(`server.bench.ceiling`); (5) with ``overload``, the overload row on fresh sessions over HTTP
(`server.bench.overload`); (6) stop every process; (7) cost growth in this process, with nothing
else of ours running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.bench import processes
from server.bench.ceiling import ceiling_share, measure_ceiling, transport_ratios
from server.bench.episodes import check_env, make_envs
from server.bench.growth import BATCHES, growth_config, growth_report, measure_batches, measure_growth
from server.bench.loadgen import Probe, SessionDriver, parity_check, prefill, run_phase
from server.bench.overload import OverloadPlan, create_sessions, run_overload
from server.bench.report import SCHEMA, machine_info
from server.bench.stats import ratios, scrape, summarise
from server.bench.targets import BaselineBackend, ModelInfo, T2MIRBackend, fetch_model_info, new_http
from server.settings import ServerSettings


@dataclass
class BenchOptions:
    """Everything one run needs (the CLI builds it from flags)."""

    checkpoint: str | None
    sessions: list[int]
    duration_s: float = 10.0
    warmup_s: float = 1.0
    env: str = "synthetic"
    transports: list[str] = field(default_factory=lambda: ["http"])
    store: str = "redis"
    redis_url: str | None = None
    server_url: str | None = None
    baseline_url: str | None = None
    baseline: bool = True
    context_episodes: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    growth_repeats: int = 20
    prefill_episodes: int | None = None
    """Closed episodes played before measuring (None: enough to fill the model's context)."""
    parity_acts: int = 350
    torch_threads: int = 1
    device: str = "cpu"
    """Torch device of both servers and of the cost-growth policy."""
    server_args: list[str] = field(default_factory=list)
    label: str = "t2mir bench"
    seed: int = 0
    api_key: str | None = None
    command: str = "t2mir bench"
    overload: float | None = None
    """Offered load over the measured capacity of the overload row (None: no overload row)."""
    overload_sessions: int = 128
    """Paced sessions of the overload row (its capacity phase uses the largest ``sessions``)."""


@dataclass
class Services:
    """Where the servers are and which processes to account CPU for."""

    server_url: str
    baseline_url: str | None
    pids: dict[str, int | None] = field(default_factory=dict)


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def services(options: BenchOptions) -> Iterator[Services]:
    """Start (and finally stop) the processes this run owns."""
    owned: list[processes.ManagedProcess] = []
    tmp = tempfile.TemporaryDirectory(prefix="t2mir-bench-")
    try:
        redis_url, redis_pid = options.redis_url, None
        if options.server_url is None and options.store == "redis" and redis_url is None:
            port = processes.free_port()
            redis = processes.redis_server(port, tmp.name)
            owned.append(redis)
            redis.launch().wait_ready(30)
            redis_url, redis_pid = f"redis://127.0.0.1:{port}/0", redis.pid
        launched: dict[str, processes.ManagedProcess] = {}
        server_url = options.server_url
        if server_url is None:
            assert options.checkpoint is not None
            port = processes.free_port()
            launched["server"] = processes.t2mir_server(
                options.checkpoint,
                port,
                redis_url,
                options.torch_threads,
                options.server_args,
                options.device,
            )
            server_url = f"http://127.0.0.1:{port}"
        baseline_url = options.baseline_url if options.baseline else None
        if options.baseline and baseline_url is None:
            assert options.checkpoint is not None
            port = processes.free_port()
            launched["baseline"] = processes.baseline_server(
                options.checkpoint, port, options.torch_threads, options.device
            )
            baseline_url = f"http://127.0.0.1:{port}"
        for proc in launched.values():
            owned.append(proc.launch())
        for proc in launched.values():
            proc.wait_ready(180)
        pids = {name: proc.pid for name, proc in launched.items()}
        pids["redis"] = redis_pid
        yield Services(server_url, baseline_url, pids)
    finally:
        for proc in reversed(owned):
            proc.close()
        tmp.cleanup()


def _cpu_probe(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {name: processes.cpu_seconds(pid) for name, pid in pids.items()} | {"loadgen": time.process_time()}


def _drivers(options: BenchOptions, info: ModelInfo, n: int, tag: str, seed: int) -> list[SessionDriver]:
    envs = make_envs(options.env, n, info.observation_dim, info.max_episode_steps, seed)
    return [SessionDriver(f"bench-{tag}-{i}", env, info.new_history()) for i, env in enumerate(envs)]


def _check_same_model(info: ModelInfo, baseline: dict[str, Any]) -> None:
    """Refuse to compare servers whose models read different contexts (raises ValueError)."""
    ours = {
        "backbone": info.backbone,
        "observation_dim": info.observation_dim,
        "max_episode_steps": info.max_episode_steps,
        "context_episodes": info.context_episodes,
    }
    theirs = {k: baseline.get(k) for k in ours}
    if ours != theirs or info.action.get("kind") != baseline.get("action", {}).get("kind"):
        raise ValueError(f"the baseline serves another model shape: t2mir {ours}, baseline {theirs}")


def _line(row: dict[str, Any]) -> str:
    p50 = row["latency_ms"]["p50"] or 0.0
    return f"{row['target']} {row['transport']} x{row['sessions']}: {row['acts_per_s']:.0f} acts/s, p50 {p50:.2f} ms"


async def _parity(options: BenchOptions, svc: Services, info: ModelInfo, tag: str) -> dict[str, Any] | None:
    """One session on both servers in lock step, the same seeds (None without a baseline)."""
    if not svc.baseline_url or options.parity_acts <= 0:
        return None
    async with new_http(2, options.api_key) as http:
        driver = _drivers(options, info, 1, f"{tag}-parity", options.seed + 7919)[0]
        ours, naive = T2MIRBackend(http, svc.server_url), BaselineBackend(http, svc.baseline_url)
        result = await parity_check(driver, ours, naive, options.parity_acts)
    _say(f"parity: {result.acts} acts, {result.mismatches} different actions")
    return result.to_json()


async def _measure_t2mir(
    options: BenchOptions, svc: Services, info: ModelInfo, n: int, transport: str, tag: str
) -> tuple[dict[str, Any], list[SessionDriver]]:
    """Prefill ``n`` fresh sessions, measure them; returns the row and the sessions as prefilled."""
    episodes = info.retention.count if options.prefill_episodes is None else options.prefill_episodes
    pids = {"server": svc.pids.get("server"), "redis": svc.pids.get("redis")}
    async with new_http(n, options.api_key) as http:
        backend = T2MIRBackend(http, svc.server_url, transport)
        drivers = _drivers(options, info, n, f"{tag}-{transport}-{n}", options.seed + n)
        await asyncio.gather(*(backend.create(d.session_id) for d in drivers))
        t0 = time.perf_counter()
        await prefill(drivers, backend, episodes, info.max_episode_steps, options.seed + n)
        _say(f"t2mir {transport} x{n}: prefilled {episodes} episodes in {time.perf_counter() - t0:.1f} s")
        prefilled = [d.clone() for d in drivers]

        async def probe() -> dict[str, Any]:
            metrics = await scrape(http, svc.server_url)
            return {"t": time.perf_counter(), "cpu": _cpu_probe(pids), "metrics": metrics}

        phase = await run_phase(drivers, backend, options.warmup_s, options.duration_s, probe)
        await asyncio.gather(*(backend.delete(d.session_id) for d in drivers), return_exceptions=True)
    row = summarise(phase, "t2mir", transport)
    _say(_line(row))
    return row, prefilled


async def _measure_baseline(
    options: BenchOptions, svc: Services, sessions: list[SessionDriver]
) -> dict[str, Any]:
    """The same sessions (cloned at the end of their prefill) on the naive baseline."""
    assert svc.baseline_url is not None
    async with new_http(len(sessions)) as http:
        probe = _plain_probe({"server": svc.pids.get("baseline")})
        backend = BaselineBackend(http, svc.baseline_url)
        phase = await run_phase(sessions, backend, options.warmup_s, options.duration_s, probe)
    row = summarise(phase, "baseline", "http")
    _say(_line(row))
    return row


def deadline_of(server_args: list[str]) -> float:
    """The ``--act-deadline-ms`` among the server's extra flags, else the server's default (the
    bench starts its server without ``T2MIR_*`` variables)."""
    for i, arg in enumerate(server_args):
        if arg.startswith("--act-deadline-ms="):
            return float(arg.split("=", 1)[1])
        if arg == "--act-deadline-ms" and i + 1 < len(server_args):
            return float(server_args[i + 1])
    default: float = ServerSettings.model_fields["act_deadline_ms"].default
    return default


async def _overload(options: BenchOptions, svc: Services, info: ModelInfo, tag: str) -> dict[str, Any]:
    """The overload row on fresh sessions (HTTP)."""
    assert options.overload is not None
    plan = OverloadPlan(
        factor=options.overload,
        sessions=options.overload_sessions,
        capacity_sessions=max(options.sessions),
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        deadline_ms=deadline_of(options.server_args),
    )
    async with new_http(plan.sessions + plan.capacity_sessions, options.api_key) as http:
        backend = T2MIRBackend(http, svc.server_url)
        capacity = _drivers(options, info, plan.capacity_sessions, f"{tag}-capacity", options.seed + 1)
        paced = _drivers(options, info, plan.sessions, f"{tag}-overload", options.seed + 2)
        await create_sessions(capacity + paced, backend)
        row = await run_overload(plan, backend, capacity, paced, options.seed)
        await asyncio.gather(
            *(backend.delete(d.session_id) for d in capacity + paced), return_exceptions=True
        )
    _say(
        f"overload x{plan.factor:g}: capacity {row['capacity_acts_per_s']:.0f} acts/s, answered p99 "
        f"{row['latency_ms']['p99'] or 0:.0f} ms, shed {row['shed_rate']:.0%}, lost {row['lost_steps']}"
    )
    return row


async def _ceiling(options: BenchOptions, svc: Services) -> dict[str, Any]:
    """The t2mir server's ``GET /healthz`` rate at the largest session count (`server.bench.ceiling`)."""
    connections = max(options.sessions)
    pids = {"server": svc.pids.get("server"), "redis": svc.pids.get("redis")}
    async with new_http(connections, options.api_key) as http:
        row = await measure_ceiling(
            http, svc.server_url, connections, options.warmup_s, options.duration_s, _plain_probe(pids)
        )
    _say(f"ceiling: GET {row['path']} x{connections}: {row['requests_per_s']:.0f} requests/s")
    return row


@dataclass
class Loaded:
    """What the servers' part of a run measured."""

    info: ModelInfo
    parity: dict[str, Any] | None
    runs: list[dict[str, Any]]
    ceiling: dict[str, Any] | None
    overload: dict[str, Any] | None


async def _load(options: BenchOptions, svc: Services) -> Loaded:
    """Parity check, then every (session count, transport) on t2mir and each session count on the
    baseline, the server's ceiling, the overload row."""
    tag = uuid.uuid4().hex[:6]
    async with new_http(1, options.api_key) as http:
        info = await fetch_model_info(http, svc.server_url)
        if svc.baseline_url:
            _check_same_model(info, await BaselineBackend(http, svc.baseline_url).info())
    check_env(options.env, info.observation_dim, info.action, info.max_episode_steps)
    parity = await _parity(options, svc, info, tag)
    runs: list[dict[str, Any]] = []
    for n in options.sessions:
        replay: list[SessionDriver] | None = None
        for transport in options.transports:
            row, prefilled = await _measure_t2mir(options, svc, info, n, transport, tag)
            runs.append(row)
            replay = replay or prefilled
        if svc.baseline_url and replay:
            runs.append(await _measure_baseline(options, svc, replay))
    ceiling = await _ceiling(options, svc) if runs else None
    for row in runs:
        row["ceiling_share"] = ceiling_share(row, ceiling)
    overload = await _overload(options, svc, info, tag) if options.overload else None
    return Loaded(info, parity, runs, ceiling, overload)


def _plain_probe(pids: dict[str, int | None]) -> Probe:
    async def probe() -> dict[str, Any]:
        return {"t": time.perf_counter(), "cpu": _cpu_probe(pids), "metrics": None}

    return probe


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run everything ``options`` asks for; returns the report (see `server.bench.report`)."""
    machine = machine_info(options.device)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with services(options) as svc:
        loaded = asyncio.run(_load(options, svc))
    info, runs = loaded.info, loaded.runs
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    growth = None
    if options.context_episodes:
        config = growth_config(options.checkpoint, max(options.context_episodes))
        _say(f"cost growth over {options.context_episodes} context episodes")
        rows = measure_growth(
            config,
            options.context_episodes,
            options.growth_repeats,
            options.torch_threads,
            device=options.device,
        )
        growth = growth_report(rows, config, options.growth_repeats)
        _say(f"batch scaling: cached steps of {BATCHES} sessions")
        growth["batches"] = measure_batches(
            config, options.growth_repeats, options.torch_threads, device=options.device
        )
    order = {"t2mir": 0, "baseline": 1}
    runs.sort(key=lambda r: (order[r["target"]], r["transport"], r["sessions"]))
    return {
        "schema": SCHEMA,
        "label": options.label,
        "created": created,
        "command": options.command,
        "machine": machine,
        "config": {
            "checkpoint": options.checkpoint,
            "server_url": options.server_url,
            "model": {
                "name": info.name,
                "version": info.version,
                "backbone": info.backbone,
                "observation_dim": info.observation_dim,
                "action": info.action,
                "max_episode_steps": info.max_episode_steps,
                "context_episodes": info.context_episodes,
            },
            "env": options.env,
            "transports": options.transports,
            "store": "external"
            if options.server_url
            else ("redis" if options.store == "redis" else "memory"),
            "sessions": options.sessions,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "prefill_episodes": info.retention.count
            if options.prefill_episodes is None
            else options.prefill_episodes,
            "torch_threads": options.torch_threads,
            "device": options.device,
            "server_args": options.server_args,
            "baseline": bool(options.baseline),
        },
        "parity": loaded.parity,
        "runs": runs,
        "ratios": ratios(runs),
        "ceiling": loaded.ceiling,
        "transport_ratios": transport_ratios(runs),
        "overload": loaded.overload,
        "growth": growth,
        "plots": {},
    }
