"""The ceiling row (``GET /healthz`` on N connections) against a real server, each act row's share
of it, the WebSocket/HTTP ratios, and how the report shows them (tables, Markdown, targets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.bench.ceiling import CEILING_PATH, ceiling_share, measure_ceiling, transport_ratios
from server.bench.docs import targets
from server.bench.processes import cpu_seconds
from server.bench.report import ceiling_table, transport_table
from server.bench.targets import new_http


def test_ceiling_counts_healthz_answers_inside_the_window(bench_servers):
    pid = bench_servers.server.pid
    probes: list[float] = []

    async def probe() -> dict[str, Any]:
        probes.append(time.perf_counter())
        return {"t": probes[-1], "cpu": {"server": cpu_seconds(pid)}, "metrics": None}

    async def go() -> dict[str, Any]:
        async with new_http(4) as http:
            return await measure_ceiling(http, bench_servers.url, 4, 0.2, 1.0, probe)

    row = asyncio.run(go())
    assert row["path"] == CEILING_PATH and row["connections"] == 4
    assert row["errors"] == 0, row["error_samples"]
    assert len(probes) == 2 and row["duration_s"] <= probes[1] - probes[0]
    assert row["requests"] > 0
    assert row["requests_per_s"] == row["requests"] / row["duration_s"]
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["max"]
    assert row["cpu_percent"]["server"] > 0


def test_ceiling_errors_are_counted_not_raised():
    async def probe() -> dict[str, Any]:
        return {"t": time.perf_counter(), "cpu": {}, "metrics": None}

    async def go() -> dict[str, Any]:
        async with new_http(2) as http:  # nothing listens on port 9 of the loopback
            return await measure_ceiling(http, "http://127.0.0.1:9", 2, 0.0, 0.2, probe)

    row = asyncio.run(go())
    assert row["errors"] == 2 and row["requests"] == 0 and row["requests_per_s"] == 0.0


def _run(transport: str, sessions: int, acts_per_s: float, target: str = "t2mir") -> dict[str, Any]:
    return {"target": target, "transport": transport, "sessions": sessions, "acts_per_s": acts_per_s,
            "latency_ms": {"p50": 2.0, "p99": 9.0}, "cpu_percent": {"server": 90.0}}  # fmt: skip


CEILING = {"path": CEILING_PATH, "connections": 64, "duration_s": 5.0, "requests": 20_000,
           "requests_per_s": 4000.0, "latency_ms": {"p50": 15.0, "p99": 30.0}, "errors": 0,
           "error_samples": [], "cpu_percent": {"server": 99.0}}  # fmt: skip


def test_ceiling_share_of_each_t2mir_row():
    assert ceiling_share(_run("http", 64, 2000.0), CEILING) == 0.5
    assert ceiling_share(_run("http", 64, 300.0, "baseline"), CEILING) is None
    assert ceiling_share(_run("http", 64, 2000.0), None) is None
    assert ceiling_share(_run("http", 64, 2000.0), {**CEILING, "requests_per_s": 0.0}) is None


def test_transport_ratios_pair_websocket_and_http_rows_by_session_count():
    runs = [_run("http", 1, 200.0), _run("ws", 1, 300.0), _run("http", 64, 1000.0), _run("ws", 64, 1500.0),
            _run("http", 8, 500.0), _run("http", 8, 50.0, "baseline")]  # fmt: skip
    assert transport_ratios(runs) == [
        {"sessions": 1, "http_acts_per_s": 200.0, "ws_acts_per_s": 300.0, "ws_over_http": 1.5},
        {"sessions": 64, "http_acts_per_s": 1000.0, "ws_acts_per_s": 1500.0, "ws_over_http": 1.5},
    ]
    text = transport_table(transport_ratios(runs))
    assert "1.50x" in text and "1,500" in text


def _report(share: float, ws_over_http: float) -> dict[str, Any]:
    run = {**_run("http", 64, share * 4000.0), "ceiling_share": share}
    pair = {"sessions": 64, "http_acts_per_s": 1000.0, "ws_acts_per_s": 1000.0 * ws_over_http,
            "ws_over_http": ws_over_http}  # fmt: skip
    return {"runs": [run], "ratios": [], "config": {"store": "redis"}, "ceiling": CEILING,
            "transport_ratios": [pair], "overload": None, "growth": None}  # fmt: skip


def test_targets_judge_the_ceiling_share_and_websocket_against_http():
    met = {t: (v, ok) for t, v, ok in targets(_report(0.45, 1.2))}
    share = next(k for k in met if "GET /healthz" in k)
    assert met[share] == ("0.45", "met")
    assert next(v for k, v in met.items() if "WebSocket" in k) == ("x64: 1.20", "met")
    missed = {t: (v, ok) for t, v, ok in targets(_report(0.13, 0.9))}
    assert missed[share] == ("0.13", "**not met**")
    assert next(v for k, v in missed.items() if "WebSocket" in k)[1] == "**not met**"
    stretch = {t: ok for t, _, ok in targets(_report(0.65, 1.2))}
    assert "stretch 0.6 met" in stretch[share]


def test_ceiling_table_lists_the_ceiling_then_each_share():
    runs = [{**_run("http", 64, 2000.0), "ceiling_share": 0.5}, {**_run("http", 64, 300.0, "baseline"),
            "ceiling_share": None}]  # fmt: skip
    lines = ceiling_table(CEILING, runs, markdown=True).splitlines()
    assert len(lines) == 4  # header, rule, the ceiling, the t2mir row (not the baseline's)
    assert "GET /healthz" in lines[2] and "4,000" in lines[2] and lines[2].endswith("| 1.00 |")
    assert lines[3].startswith("| t2mir | http | 64 |") and lines[3].endswith("| 0.50 |")
