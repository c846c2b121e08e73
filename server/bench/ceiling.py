"""The server's own HTTP ceiling, and how much of it real acts keep.

The ceiling row loads the same t2mir server with ``GET /healthz`` (a route that does nothing but
answer) on ``connections`` keep-alive connections (the bench's largest session count), each
sending its next request as soon as the previous answer is read; same aiohttp load generator,
same warm-up and window as the act rows, in the same run. Its rate is what the server's HTTP
stack, event loop and the load generator can do on this machine with no act work at all.

Each t2mir act row then gets ``ceiling_share``: its acts per second over that rate (the issue's
target: at least 0.4 at 64 sessions over HTTP, stretch 0.6). `transport_ratios` compares the
WebSocket and HTTP rows at each session count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from server.bench.loadgen import Probe
from server.bench.stats import cpu_percent, percentiles

CEILING_PATH = "/healthz"


async def measure_ceiling(
    http: aiohttp.ClientSession,
    base_url: str,
    connections: int,
    warmup_s: float,
    duration_s: float,
    probe: Probe,
) -> dict[str, Any]:
    """``GET /healthz`` back to back on ``connections`` connections; counts the requests answered
    200 inside the window [warm-up end, warm-up end + duration] (``probe`` read at both ends).

    Returns ``{path, connections, duration_s, requests, requests_per_s, latency_ms, errors,
    error_samples, cpu_percent}``."""
    url = base_url.rstrip("/") + CEILING_PATH
    done: list[tuple[float, float]] = []  # (end, ms) of each 200 answer
    errors: list[str] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            end = time.perf_counter()
            if status != 200:
                errors.append(f"GET {CEILING_PATH} -> {status}")
                return
            done.append((end, (end - start) * 1000.0))

    tasks = [asyncio.create_task(loop()) for _ in range(connections)]
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
    inside = [ms for end, ms in done if t_start <= end <= t_end]
    window = t_end - t_start
    return {
        "path": CEILING_PATH,
        "connections": connections,
        "duration_s": window,
        "requests": len(inside),
        "requests_per_s": len(inside) / window if window > 0 else 0.0,
        "latency_ms": percentiles(inside),
        "errors": len(errors),
        "error_samples": errors[:3],
        "cpu_percent": cpu_percent(before, after),
    }


def ceiling_share(run: dict[str, Any], ceiling: dict[str, Any] | None) -> float | None:
    """A t2mir act row's acts per second over the ceiling's requests per second (None for the
    baseline's rows, or without a ceiling)."""
    if ceiling is None or run["target"] != "t2mir" or not ceiling["requests_per_s"]:
        return None
    return float(run["acts_per_s"] / ceiling["requests_per_s"])


def transport_ratios(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per session count with both a WebSocket and an HTTP t2mir row: both rates, WS over HTTP."""
    rates: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["target"] == "t2mir":
            rates.setdefault(r["sessions"], {})[r["transport"]] = r["acts_per_s"]
    out = []
    for sessions in sorted(rates):
        by = rates[sessions]
        if "http" in by and "ws" in by:
            ratio = by["ws"] / by["http"] if by["http"] else None
            out.append({"sessions": sessions, "http_acts_per_s": by["http"], "ws_acts_per_s": by["ws"],
                        "ws_over_http": ratio})  # fmt: skip
    return out
