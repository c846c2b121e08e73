"""From a measured window to one row of numbers: latency percentiles, throughput, time breakdown,
CPU, and what the server's ``/metrics`` say happened in the window (two scrapes: batch sizes from
``t2mir_batch_size``, KV-cache hits and misses, queue waits).

Where the time of one act goes comes from the server's own ``timings`` (t2mir: parse, store_read,
queue_wait, forward, handoff, store_write; baseline: parse, queue_wait, forward) plus two derived parts:

- ``other``: the server's ``total`` minus its named parts (validation, the per-session lock, the
  act flow's own Python);
- ``outside`` (tables: "serialise + transport"): the client's latency minus the server's
  ``total``: response serialisation, HTTP / WebSocket framing, the event loops of both processes
  and the network stack (for the baseline also the client encoding the whole context).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from server.bench.loadgen import ActRecord, PhaseResult

PARTS = {
    "t2mir": ("parse", "store_read", "queue_wait", "forward", "handoff", "store_write"),
    "baseline": ("parse", "queue_wait", "forward"),
}


@dataclass
class MetricsSnapshot:
    """The counters of one scrape."""

    batch_buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative counts by upper bound ``le`` (inf included)."""
    batch_sum: float = 0.0
    batch_count: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    queue_wait_sum: float = 0.0
    queue_wait_count: float = 0.0


TOTALS = {
    "t2mir_batch_size_sum": "batch_sum",
    "t2mir_batch_size_count": "batch_count",
    "t2mir_kv_cache_hits_total": "cache_hits",
    "t2mir_kv_cache_misses_total": "cache_misses",
    "t2mir_queue_wait_seconds_sum": "queue_wait_sum",
    "t2mir_queue_wait_seconds_count": "queue_wait_count",
}
"""Prometheus sample name -> the `MetricsSnapshot` field that sums it over every label set."""


def parse_metrics(text: str) -> MetricsSnapshot:
    """A snapshot from a Prometheus text exposition (missing series read as zero)."""
    buckets: dict[float, float] = {}
    totals = dict.fromkeys(TOTALS.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, float(sample.value)
            if name == "t2mir_batch_size_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif name in TOTALS:
                totals[TOTALS[name]] += value
    return MetricsSnapshot(buckets, **totals)


async def scrape(http: aiohttp.ClientSession, base_url: str) -> MetricsSnapshot:
    """``GET /metrics`` of a t2mir server."""
    async with http.get(base_url.rstrip("/") + "/metrics") as response:
        return parse_metrics(await response.text())


def _bucket_label(low: float, high: float) -> str:
    if math.isinf(high):
        return f">{low:g}"
    first = math.floor(low) + 1
    top = math.floor(high)
    return f"{top:g}" if first >= top else f"{first:g}-{top:g}"


def metrics_delta(before: MetricsSnapshot, after: MetricsSnapshot) -> dict[str, Any]:
    """Engine calls, batch-size distribution and cache hit rate between two scrapes.

    Returns ``{"engine_calls", "batch": {"mean", "histogram": [{"sizes", "calls"}]}, "cache":
    {"hits", "misses", "hit_rate"}, "queue_wait_ms_mean"}`` (means are None with no data)."""
    calls = after.batch_count - before.batch_count
    total = after.batch_sum - before.batch_sum
    histogram = []
    low = 0.0
    previous = 0.0
    for le in sorted(after.batch_buckets):
        cumulative = after.batch_buckets[le] - before.batch_buckets.get(le, 0.0)
        count = cumulative - previous
        previous = cumulative
        if count > 0:
            histogram.append({"sizes": _bucket_label(low, le), "calls": round(count)})
        low = le
    hits = after.cache_hits - before.cache_hits
    misses = after.cache_misses - before.cache_misses
    waits = after.queue_wait_count - before.queue_wait_count
    return {
        "engine_calls": round(calls),
        "batch": {"mean": total / calls if calls else None, "histogram": histogram},
        "cache": {
            "hits": round(hits),
            "misses": round(misses),
            "hit_rate": hits / (hits + misses) if hits + misses else None,
        },
        "queue_wait_ms_mean": (after.queue_wait_sum - before.queue_wait_sum) / waits * 1000.0
        if waits
        else None,
    }


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / mean / max of ``values`` (None when empty)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def breakdown(acts: Sequence[ActRecord], parts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and median ms of each part of the server's timings, plus ``other`` and ``outside``."""
    if not acts:
        return {}
    columns: dict[str, list[float]] = {p: [] for p in (*parts, "other", "total", "outside")}
    for act in acts:
        named = 0.0
        for p in parts:
            value = float(act.timings.get(p, 0.0))
            columns[p].append(value)
            named += value
        total = float(act.timings.get("total", named))
        columns["other"].append(max(total - named, 0.0))
        columns["total"].append(total)
        columns["outside"].append(max(act.client_ms - total, 0.0))
    return {p: {"mean": float(np.mean(v)), "p50": float(np.median(v))} for p, v in columns.items()}


def cpu_percent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    """CPU use of each probed process over the window, in percent of one core."""
    wall = after["t"] - before["t"]
    out: dict[str, float | None] = {}
    for name, start in before["cpu"].items():
        end = after["cpu"].get(name)
        out[name] = None if start is None or end is None or wall <= 0 else (end - start) / wall * 100.0
    return out


def summarise(phase: PhaseResult, target: str, transport: str) -> dict[str, Any]:
    """The JSON row of one (target, transport, sessions) measurement."""
    latencies = [a.client_ms for a in phase.acts]
    row: dict[str, Any] = {
        "target": target,
        "transport": transport,
        "sessions": phase.sessions,
        "duration_s": phase.duration_s,
        "acts": len(phase.acts),
        "acts_per_s": len(phase.acts) / phase.duration_s if phase.duration_s > 0 else 0.0,
        "done_calls": len(phase.done_ms),
        "errors": len(phase.errors),
        "shed": phase.shed,
        "error_samples": phase.errors[:3],
        "latency_ms": percentiles(latencies),
        "server_timings_ms": breakdown(phase.acts, PARTS[target]),
        "cpu_percent": cpu_percent(phase.before, phase.after),
        "engine_calls": None,
        "batch": None,
        "cache": None,
    }
    if phase.before.get("metrics") is not None and phase.after.get("metrics") is not None:
        delta = metrics_delta(phase.before["metrics"], phase.after["metrics"])
        row.update(engine_calls=delta["engine_calls"], batch=delta["batch"], cache=delta["cache"])
    return row


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (transport, sessions): t2mir over baseline throughput, baseline over t2mir p50 latency."""
    baseline = {r["sessions"]: r for r in rows if r["target"] == "baseline"}
    out = []
    for r in rows:
        base = baseline.get(r["sessions"])
        if r["target"] != "t2mir" or base is None:
            continue
        throughput = r["acts_per_s"] / base["acts_per_s"] if base["acts_per_s"] else None
        ours_p50, base_p50 = r["latency_ms"]["p50"], base["latency_ms"]["p50"]
        latency = base_p50 / ours_p50 if ours_p50 and base_p50 else None
        out.append(
            {
                "transport": r["transport"],
                "sessions": r["sessions"],
                "throughput_ratio": throughput,
                "p50_latency_ratio": latency,
            }
        )
    return out
