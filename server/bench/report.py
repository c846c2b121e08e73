"""The report of one run: machine description, JSON layout and the tables (text or Markdown).

JSON layout (``schema: "t2mir-bench/1"``)::

    {schema, label, created, command, machine: {cpu_model, cores, load_average, python, torch, platform},
     config: {checkpoint, model, env, transports, store, sessions, duration_s, warmup_s,
              prefill_episodes, torch_threads, server_args, baseline},
     parity: {acts, mismatches, first_mismatch} | null,
     runs: [{target, transport, sessions, duration_s, acts, acts_per_s, done_calls, errors, shed,
             error_samples, latency_ms: {p50, p95, p99, mean, max},
             server_timings_ms: {part: {mean, p50}}, cpu_percent: {server, redis, loadgen},
             engine_calls, batch: {mean, histogram: [{sizes, calls}]} | null,
             cache: {hits, misses, hit_rate} | null, ceiling_share}],
     ratios: [{transport, sessions, throughput_ratio, p50_latency_ratio}],
     ceiling: {path, connections, duration_s, requests, requests_per_s, latency_ms, errors,
               error_samples, cpu_percent} | null,
     transport_ratios: [{sessions, http_acts_per_s, ws_acts_per_s, ws_over_http}],
     overload: {factor, deadline_ms, capacity_sessions, capacity_acts_per_s, sessions, rate_per_session,
                offered_acts_per_s, duration_s, answered, answered_acts_per_s, latency_ms,
                server_total_ms, deadline_path_ms, shed, shed_rate, shed_without_retry_after, errors,
                error_samples, acknowledged_steps, stored_steps, lost_steps, phantom_steps} | null,
     growth: {policy, repeats, batch, rows: [{episodes, context_steps, context_tokens, cached_ms,
              full_ms, speedup, cached_growth, full_growth, context_growth}],
              cached_at_most_linear, batches: {context_steps, context_tokens, threads, repeats, full_ms,
              full_over_cached, rows: [{batch, cached_ms, over_first, read}]}} | null,
     plots: {latency, throughput, growth}}
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = "t2mir-bench/1"
REPORT_KEYS = (
    "schema",
    "label",
    "created",
    "command",
    "machine",
    "config",
    "parity",
    "runs",
    "ratios",
    "ceiling",
    "transport_ratios",
    "overload",
    "growth",
    "plots",
)
RUN_KEYS = (
    "target",
    "transport",
    "sessions",
    "duration_s",
    "acts",
    "acts_per_s",
    "done_calls",
    "errors",
    "shed",
    "latency_ms",
    "server_timings_ms",
    "cpu_percent",
    "engine_calls",
    "batch",
    "cache",
    "ceiling_share",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where the numbers were measured (``device``: the torch device the servers use)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _is_text(cell: str) -> bool:
    """True for a cell that is not a number (left-aligned in Markdown)."""
    head = cell.lstrip("-+").replace(",", "")[:1]
    return bool(head) and not head.isdigit() and cell != "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """A text table with right-aligned columns, or a Markdown table."""
    cells = [[_fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    if markdown:
        left = [bool(cells) and all(_is_text(r[i]) for r in cells) for i in range(len(headers))]
        rule = "|" + "|".join(":---" if is_left else "---:" for is_left in left) + "|"
        lines = ["| " + " | ".join(headers) + " |", rule]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


RUN_HEADERS = ["server", "transport", "sessions"]
"""The columns that name a run, first in every table of runs."""


def _run_cells(run: dict[str, Any]) -> list[Any]:
    """A run's `RUN_HEADERS` cells."""
    return [run["target"], run["transport"], run["sessions"]]


def load_table(runs: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Latency, throughput, batching, cache and CPU per (target, transport, sessions)."""
    headers = [*RUN_HEADERS, "p50 ms", "p95 ms", "p99 ms", "acts/s", "ceiling share", "mean batch",
               "cache hits", "server CPU %", "errors"]  # fmt: skip
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        rows.append(
            [
                *_run_cells(r),
                lat["p50"],
                lat["p95"],
                lat["p99"],
                f"{r['acts_per_s']:,.0f}",
                _share(r.get("ceiling_share")),
                (r["batch"] or {}).get("mean"),
                _pct((r["cache"] or {}).get("hit_rate")),
                f"{r['cpu_percent'].get('server'):.0f}"
                if r["cpu_percent"].get("server") is not None
                else "-",
                r["errors"],
            ]
        )
    return table(headers, rows, markdown)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ceiling_table(ceiling: dict[str, Any], runs: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The server's ``GET /healthz`` rate, then each t2mir act row's share of it."""
    lat = ceiling["latency_ms"]
    cpu = ceiling["cpu_percent"].get("server")
    headers = [*RUN_HEADERS, "requests or acts/s", "p50 ms", "p99 ms", "server CPU %", "ceiling share"]
    rows: list[list[Any]] = [
        [f"GET {ceiling['path']}", "http", ceiling["connections"], f"{ceiling['requests_per_s']:,.0f}",
         lat["p50"], lat["p99"], "-" if cpu is None else f"{cpu:.0f}", "1.00"]
    ]  # fmt: skip
    for r in runs:
        if r.get("ceiling_share") is None:
            continue
        server_cpu = r["cpu_percent"].get("server")
        rows.append([*_run_cells(r), f"{r['acts_per_s']:,.0f}", r["latency_ms"]["p50"], r["latency_ms"]["p99"],
                     "-" if server_cpu is None else f"{server_cpu:.0f}", _share(r["ceiling_share"])])  # fmt: skip
    return table(headers, rows, markdown)


def transport_table(ratios: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """t2mir over WebSocket against HTTP, per session count."""
    headers = ["sessions", "HTTP acts/s", "WebSocket acts/s", "WebSocket / HTTP"]
    rows = [
        [r["sessions"], f"{r['http_acts_per_s']:,.0f}", f"{r['ws_acts_per_s']:,.0f}",
         "-" if r["ws_over_http"] is None else f"{r['ws_over_http']:.2f}x"]
        for r in ratios
    ]  # fmt: skip
    return table(headers, rows, markdown)


def ratio_table(ratios: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """t2mir versus baseline, per session count."""
    headers = ["transport", "sessions", "throughput (t2mir / baseline)", "p50 latency (baseline / t2mir)"]
    rows = [
        [
            r["transport"],
            r["sessions"],
            "-" if r["throughput_ratio"] is None else f"{r['throughput_ratio']:.1f}x",
            "-" if r["p50_latency_ratio"] is None else f"{r['p50_latency_ratio']:.1f}x",
        ]
        for r in ratios
    ]
    return table(headers, rows, markdown)


def overload_table(row: dict[str, Any], markdown: bool = False) -> str:
    """The overload row: capacity, offered load, answered latency, shed acts, the step audit."""
    headers = ["load", "deadline ms", "capacity acts/s", "sessions", "offered acts/s", "answered acts/s",
               "answered p50 ms", "answered p99 ms", "deadline-path p99 ms", "shed", "acknowledged steps",
               "lost", "phantom"]  # fmt: skip
    lat, path = row["latency_ms"], row["deadline_path_ms"]
    cells = [
        f"{row['factor']:g}x",
        "server default" if row["deadline_ms"] is None else f"{row['deadline_ms']:g}",
        f"{row['capacity_acts_per_s']:,.0f}",
        row["sessions"],
        f"{row['offered_acts_per_s']:,.0f}",
        f"{row['answered_acts_per_s']:,.0f}",
        lat["p50"],
        lat["p99"],
        path["p99"],
        f"{row['shed']} ({_pct(row['shed_rate'])})",
        row["acknowledged_steps"],
        row["lost_steps"],
        row["phantom_steps"],
    ]
    return table(headers, [cells], markdown)


BREAKDOWN_PARTS = (
    "parse",
    "store_read",
    "queue_wait",
    "forward",
    "handoff",
    "store_write",
    "other",
    "outside",
)


BREAKDOWN_HEADERS = {"outside": "serialise + transport"}


def breakdown_table(runs: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Mean ms of each part of one act, from the server's own timings."""
    parts = [BREAKDOWN_HEADERS.get(p, p) for p in BREAKDOWN_PARTS]
    headers = [*RUN_HEADERS, *parts, "client latency"]
    rows = []
    for r in runs:
        timings = r["server_timings_ms"]
        rows.append(
            [
                *_run_cells(r),
                *[timings[p]["mean"] if p in timings else "-" for p in BREAKDOWN_PARTS],
                r["latency_ms"]["mean"],
            ]
        )
    return table(headers, rows, markdown)


def batch_table(runs: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Engine calls by batch size (t2mir runs only)."""
    headers = ["transport", "sessions", "engine calls", "calls by batch size"]
    rows = []
    for r in runs:
        if r["batch"] is None:
            continue
        histogram = ", ".join(f"{h['sizes']}: {h['calls']}" for h in r["batch"]["histogram"])
        rows.append([r["transport"], r["sessions"], r["engine_calls"], histogram or "-"])
    return table(headers, rows, markdown)


def growth_table(growth: dict[str, Any], markdown: bool = False) -> str:
    """Per-act time against context size."""
    headers = ["context episodes", "tokens", "cached step ms", "full forward ms", "full / cached",
               "cached growth", "full growth"]  # fmt: skip
    rows = [
        [
            r["episodes"],
            r["context_tokens"],
            f"{r['cached_ms']:.3f}",
            f"{r['full_ms']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['cached_growth']:.2f}x",
            f"{r['full_growth']:.2f}x",
        ]
        for r in growth["rows"]
    ]
    return table(headers, rows, markdown)


def batch_scaling_table(batches: dict[str, Any], markdown: bool = False) -> str:
    """Cached step time against sessions per step, relative to the first batch size."""
    first = batches["rows"][0]["batch"]
    headers = ["sessions per step", "cached step ms", f"over {first} session(s)", "read"]
    rows = [
        [r["batch"], f"{r['cached_ms']:.3f}", f"{r['over_first']:.2f}x", r["read"]] for r in batches["rows"]
    ]
    return table(headers, rows, markdown)


def print_report(report: dict[str, Any]) -> None:
    """Everything as text tables on stdout."""
    m = report["machine"]
    print(f"\n{report['label']}: {m['cpu_model']}, {m['cores']} cores, load average {m['load_average']}")
    if report["parity"] is not None:
        p = report["parity"]
        print(f"baseline parity: {p['acts']} acts, {p['mismatches']} different actions")
    if report["runs"]:
        print("\n" + load_table(report["runs"]))
        print("\nwhere the time of one act goes (mean ms)\n" + breakdown_table(report["runs"]))
        if any(r["batch"] for r in report["runs"]):
            print("\n" + batch_table(report["runs"]))
    if report.get("ceiling"):
        print("\nagainst the server's own HTTP ceiling\n" + ceiling_table(report["ceiling"], report["runs"]))
    if report.get("transport_ratios"):
        print("\nWebSocket against HTTP\n" + transport_table(report["transport_ratios"]))
    if report["ratios"]:
        print("\n" + ratio_table(report["ratios"]))
    if report.get("overload"):
        print("\nunder overload\n" + overload_table(report["overload"]))
    if report["growth"] is not None:
        print("\ncost growth with context (batch 1)\n" + growth_table(report["growth"]))
        if report["growth"].get("batches"):
            b = report["growth"]["batches"]
            print(f"\nbatch scaling ({b['context_tokens']:,}-token context; full forward at batch 1 "
                  f"{b['full_ms']:.2f} ms, {b['full_over_cached']:.1f}x the cached step)\n"
                  + batch_scaling_table(b))  # fmt: skip
