"""``docs/benchmarks.md`` and its figures from a report.

Figures (PNG, matplotlib's Agg backend, log scales): ``benchmarks_latency.png`` (p50 and p99 act
latency against concurrent sessions), ``benchmarks_throughput.png`` (acts per second against
sessions), ``benchmarks_growth.png`` (per-act time against context episodes, cached step versus
full forward). The page: machine, command, targets, tables, figures and where the time of one act
goes, with a link to ``docs/performance.md`` (what each part of the act path does). The page is
generated whole: ``t2mir bench --from-json REPORT --plots docs --markdown docs/benchmarks.md``
re-renders it without measuring again.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.bench.report import (
    batch_scaling_table,
    batch_table,
    breakdown_table,
    ceiling_table,
    growth_table,
    load_table,
    overload_table,
    ratio_table,
    transport_table,
)

PREFIX = "benchmarks_"
DESIGN_TEXT = """\
What each part of the act path does to reach these figures (the request route, the store round
trip, the engine hop, batched decoding over the key/value cache, the compiled step, overload
control) and what limits it now: [performance.md](performance.md)."""

PARTS_TEXT = """\
- **parse**: request arrival to a validated body (JSON decoding, pydantic checks);
- **store_read** / **store_write**: session-store calls (metadata read; the atomic append of the step);
- **queue_wait**: waiting for the engine (for the dynamic batch to form, or behind a running forward);
- **forward**: the engine call this act joined (shared by every act of its batch);
- **handoff**: moving the request to the engine thread and its answer back to the event loop (thread
  wake-ups, the GIL, the event loop's turn);
- **other**: the server's total minus the parts above (validation, per-session lock, act-flow Python);
- **serialise + transport**: client latency minus the server's total: response serialisation, HTTP /
  WebSocket framing, both event loops and the loopback network; for the baseline it also holds the
  client encoding the whole context as JSON (the load generator shares the machine's cores)."""

METHOD_TEXT = """\
- One process (`t2mir bench`) generates the load with aiohttp: N concurrent sessions, each following
  the act protocol on its own environment (DarkRoom: held-out tasks in turn), sending its next act
  as soon as the previous answer arrives. Sessions sample their actions as the server does by
  default (a seed per session and step); the baseline draws the same samples from the same seeds.
- Before a row is measured its sessions are *prefilled*: they play closed episodes (by default
  enough to fill the model's context; this run's number is under Machine), plus a random number of
  steps, so episode boundaries (where t2mir rebuilds a session's cache) are staggered. The baseline replays the very same
  sessions, cloned at the end of the prefill (same histories, same env states).
- After the warm-up, the window counts the acts that completed inside it; `/metrics` (batch sizes,
  cache hits) and the CPU time of each process are read at both ends of the window.
- The servers run with one intra-op torch thread each (the server default); the load generator,
  both servers and redis-server share the machine's cores.
- Cost growth is measured in-process after the servers stopped (`server/bench/growth.py`)."""


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the benchmark targets that this run measured."""
    out = []
    ratio = next((r for r in report["ratios"] if r["sessions"] == 64 and r["transport"] == "http"), None)
    if ratio and ratio["throughput_ratio"] is not None:
        measured = f"{ratio['throughput_ratio']:.1f}x"
        out.append(
            ("throughput at 64 sessions >= 10x baseline", measured, _verdict(ratio["throughput_ratio"] >= 10))
        )
    one = next(
        (r for r in report["runs"] if (r["target"], r["sessions"], r["transport"]) == ("t2mir", 1, "http")),
        None,
    )
    if one and one["latency_ms"]["p50"] is not None:
        p50 = one["latency_ms"]["p50"]
        store = report["config"]["store"]
        verdict = _verdict(p50 <= P50_TARGET_MS) + (
            "" if store == "redis" else f" (store: {store}, not Redis)"
        )
        out.append(
            (f"p50 act latency at 1 session <= {P50_TARGET_MS:g} ms (HTTP + Redis)", f"{p50:.2f} ms", verdict)
        )
    out += _serving_targets(report)
    growth = report.get("growth")
    if growth and len(growth["rows"]) > 1:
        last = growth["rows"][-1]
        measured = f"x{last['cached_growth']:.2f} for x{last['context_growth']:.0f} context"
        verdict = _verdict(growth["cached_at_most_linear"])
        out.append(("cached per-act cost grows at most linearly (10% tolerance)", measured, verdict))
    out += _model_targets((growth or {}).get("batches"))
    return out


BATCH_RATIO_TARGET = 3.0
"""Most a cached step of the largest batch may cost over one session's (issue: 32 sessions, 1,200 tokens)."""
FULL_OVER_CACHED_TARGET = 20.0
"""Least the full forward may cost over one session's eager cached step at that context."""


def _model_targets(batches: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The in-process step targets: batch scaling and full forward over cached step."""
    if not batches:
        return []
    last, tokens = batches["rows"][-1], f"{batches['context_tokens']:,} tokens"
    return [
        (f"cached step of {last['batch']} sessions <= {BATCH_RATIO_TARGET:g}x one session's ({tokens})",
         f"{last['over_first']:.2f}x", _verdict(last["over_first"] <= BATCH_RATIO_TARGET)),
        (f"full forward >= {FULL_OVER_CACHED_TARGET:g}x an eager cached step at batch 1 ({tokens})",
         f"{batches['full_over_cached']:.1f}x", _verdict(batches["full_over_cached"] >= FULL_OVER_CACHED_TARGET)),
    ]  # fmt: skip


P50_TARGET_MS = 3.0
"""One session's p50 act latency over HTTP with Redis, default flags."""
CEILING_SHARE_TARGET = 0.4
CEILING_SHARE_STRETCH = 0.6


def _serving_targets(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Ceiling share at 64 sessions, WebSocket against HTTP, answered p99 and lost steps under overload."""
    out = []
    at64 = next(
        (r for r in report["runs"] if (r["target"], r["sessions"], r["transport"]) == ("t2mir", 64, "http")),
        None,
    )
    if at64 and at64.get("ceiling_share") is not None:
        share = at64["ceiling_share"]
        verdict = _verdict(share >= CEILING_SHARE_TARGET)
        if share >= CEILING_SHARE_STRETCH:
            verdict += f" (stretch {CEILING_SHARE_STRETCH:g} met)"
        out.append((f"acts/s at 64 sessions (HTTP) >= {CEILING_SHARE_TARGET:g} of GET /healthz/s at 64 "
                    f"connections (stretch {CEILING_SHARE_STRETCH:g})", f"{share:.2f}", verdict))  # fmt: skip
    pairs = report.get("transport_ratios") or []
    if pairs:
        measured = ", ".join(
            f"x{p['sessions']}: {p['ws_over_http']:.2f}" for p in pairs if p["ws_over_http"] is not None
        )
        ok = all(p["ws_over_http"] is not None and p["ws_over_http"] > 1.0 for p in pairs)
        out.append(("WebSocket acts/s above HTTP at every session count", measured, _verdict(ok)))
    overload = report.get("overload")
    if overload and overload.get("deadline_ms") and overload["deadline_path_ms"]["p99"] is not None:
        p99, deadline = overload["deadline_path_ms"]["p99"], overload["deadline_ms"]
        client = overload["latency_ms"]["p99"]
        out.append((f"under {overload['factor']:g}x overload, answered acts' server time p99 < the "
                    f"{deadline:g} ms deadline", f"{p99:.0f} ms (client p99 {client:.0f} ms)",
                    _verdict(p99 < deadline)))  # fmt: skip
    if overload:
        lost = f"{overload['lost_steps']} of {overload['acknowledged_steps']}"
        out.append(("under overload, no acknowledged step lost", lost, _verdict(overload["lost_steps"] == 0)))
    return out


def _header(report: dict[str, Any]) -> list[str]:
    label = report["label"]
    if "preliminary" not in label.lower():
        return ["# Benchmarks", "", f"> {label}", ""]
    return ["# Benchmarks", "", f"> **{label}**", ">",
            "> Short runs on a machine busy with other jobs: they show that the tooling works and the",
            "> order of magnitude, not final figures. Rerun the command below on a quiet machine.", ""]  # fmt: skip


def _machine(report: dict[str, Any]) -> list[str]:
    m, c = report["machine"], report["config"]
    model = c.get("model") or {}
    flags = " ".join(c["server_args"]) or "(defaults)"
    return ["## Machine", "",
            f"- CPU: {m['cpu_model']}, {m['cores']} cores; load average {m['load_average']} at the start, "
            f"{m.get('load_average_end', '-')} after the load runs",
            f"- Python {m['python']}, torch {m['torch']}, device: {m['device']}; {m['platform']}",
            f"- Measured {report['created']}",
            f"- Model: `{model.get('name')}` v{model.get('version')} ({model.get('backbone')}), checkpoint "
            f"`{c['checkpoint']}`; context {model.get('context_episodes')} episodes x "
            f"{model.get('max_episode_steps')} steps",
            f"- Env: {c['env']}; store: {c['store']}; torch threads per server: {c['torch_threads']}; "
            f"t2mir server flags: `{flags}`",
            f"- {c['warmup_s']:g} s warm-up, then a {c['duration_s']:g} s measured window per row; "
            f"closed episodes prefilled per session: {c['prefill_episodes']}", "",
            "## Command", "", "```", report["command"], "```", "",
            "`t2mir bench --from-json REPORT.json --plots docs --markdown docs/benchmarks.md` re-renders this",
            "page from a saved report.", ""]  # fmt: skip


def _load(report: dict[str, Any], figs: dict[str, str]) -> list[str]:
    runs = report["runs"]
    lines = ["## Latency and throughput", "", load_table(runs, markdown=True), ""]
    lines += [f"![{k}]({figs[k]})" for k in ("latency", "throughput") if k in figs] + [""]
    lines += ["Latency is measured by the client (request sent to answer read). `acts/s` counts actions",
              "answered inside the window; server CPU is in percent of one core.", ""]  # fmt: skip
    if report.get("ceiling"):
        lines += _ceiling(report)
    if report["ratios"]:
        lines += ["## Against the naive baseline", "",
                  "The baseline (`server/bench/baseline.py`) is what a stateless policy server does: every call",
                  "carries the session's whole context (kept episodes + open episode, as JSON), the server rebuilds",
                  "the tokens and recomputes the full forward at batch 1, one request at a time. Same checkpoint,",
                  "same sessions (replayed from the same histories), same load generator; always over HTTP.", ""]  # fmt: skip
        if report["parity"] is not None:
            p = report["parity"]
            lines += [f"Parity check before the load: {p['acts']} acts of one session sent to both "
                      f"servers, {p['mismatches']} different actions.", ""]  # fmt: skip
        lines += [ratio_table(report["ratios"], markdown=True), ""]
    lines += ["## Where the time of one act goes", "",
              "Mean milliseconds per act, from the `timings` each server returns with every answer.", "",
              breakdown_table(runs, markdown=True), "", PARTS_TEXT, ""]  # fmt: skip
    if any(r["batch"] for r in runs):
        lines += ["### Batching", "", "Engine calls by batch size (t2mir, from `t2mir_batch_size`).", "",
                  batch_table(runs, markdown=True), ""]  # fmt: skip
    return lines


CEILING_TEXT = """\
The ceiling row loads the same server, in the same run, with `GET /healthz` (a route that only
answers) on as many keep-alive connections as the largest session count, each sending its next
request once the previous answer is read: same load generator, warm-up and window as the act
rows. It is what the server's HTTP stack and event loop, with this load generator on the same
cores, can answer with no act work at all. *ceiling share*: an act row's acts/s over that rate."""


def _ceiling(report: dict[str, Any]) -> list[str]:
    lines = ["## Against the server's own HTTP ceiling", "", ceiling_table(report["ceiling"], report["runs"],
             markdown=True), "", CEILING_TEXT, ""]  # fmt: skip
    if report.get("transport_ratios"):
        lines += ["### WebSocket against HTTP", "", "The same session counts over both transports (t2mir).",
                  "", transport_table(report["transport_ratios"], markdown=True), ""]  # fmt: skip
    return lines


OVERLOAD_TEXT = """\
Overload control (`server/batcher.py`): each act's answer must be ready (engine call, hand-off and
store write) within the act deadline (`--act-deadline-ms`, `T2MIR_ACT_DEADLINE_MS`, default 500 ms)
of its arrival. An act whose expected wait (the rest of the running engine call, the full batches
queued ahead of it and its own call, sized like recent calls under load, each costed at the 0.9
quantile of recent calls' slowdown, plus the hand-off back to the event loop and the store write
after the call, each at its 0.9 quantile) would pass the deadline, or that finds
`--max-queue` acts queued, is answered 503 `overloaded` with `Retry-After`; so is a queued act whose
call, about to start, would end past its deadline. Nothing is stored and the engine never runs it:
the client resends the same step after `Retry-After`. `t2mir_queue_depth{model}` and
`t2mir_acts_shed_total{model}` show it in `/metrics` and on the dashboard.

The row measures the capacity first (the largest session count acting back to back), then paces
fresh sessions at the given multiple of it (HTTP); shed acts are resent after `Retry-After`.
*answered* latencies are the client's, for 200 answers; *deadline-path* is the server's part of
them (parse, store read, queue wait, forward, hand-back, store write), which the deadline bounds;
the response's serialisation, the transport and the client's own event loop come after it. *lost*: acknowledged steps missing from the store afterwards; *phantom*: stored
steps the client was never answered for. Shed sessions wait at least the 1 s `Retry-After`
(whole seconds), so fewer acts are answered than the capacity while they wait."""


def _overload(row: dict[str, Any]) -> list[str]:
    return ["## Under overload", "", overload_table(row, markdown=True), "", OVERLOAD_TEXT, ""]


def _growth(growth: dict[str, Any], figs: dict[str, str]) -> list[str]:
    pol = growth["policy"]
    lines = ["## Cost growth with context", "",
             f"In-process, batch 1, random weights, d_model {pol['d_model']}, {pol['n_layers']} layers, "
             f"{pol['max_episode_steps']}-step episodes; median of {growth['repeats']} repeats. `cached`: one "
             "step appended to a KV cache holding the context (t2mir, every act inside an episode); `full`: one "
             "forward over the whole context (the baseline, every act).", "",
             growth_table(growth, markdown=True), ""]  # fmt: skip
    lines += [f"![growth]({figs['growth']})", ""] if "growth" in figs else []
    batches = growth.get("batches")
    if batches:
        lines += ["### Batch scaling", "",
                  f"The same policy, one cached step of N sessions over a {batches['context_tokens']:,}-token "
                  f"context each (slots packed, {batches['threads']} thread(s), median of {batches['repeats']}), "
                  f"what `t2mir bench-model` prints; the full forward over that context at batch 1 takes "
                  f"{batches['full_ms']:.2f} ms, {batches['full_over_cached']:.1f}x one session's cached step.", "",
                  batch_scaling_table(batches, markdown=True), ""]  # fmt: skip
    return lines


def render(report: dict[str, Any], path: Path) -> str:
    """The Markdown text for ``report``, to be written at ``path`` (figure links relative to it)."""
    figs = {k: os.path.relpath(v, path.parent) for k, v in (report.get("plots") or {}).items()}
    lines = _header(report) + _machine(report)
    goals = targets(report)
    if goals:
        lines += ["## Targets", "", "| target | measured | |", "|:---|---:|:---|"]
        lines += [f"| {t} | {v} | {ok} |" for t, v, ok in goals] + [""]
    if report["runs"]:
        lines += _load(report, figs)
    if report.get("overload"):
        lines += _overload(report["overload"])
    if report.get("growth"):
        lines += _growth(report["growth"], figs)
    lines += ["## Method", "", METHOD_TEXT, ""]
    lines += ["## How the act path is built", "", DESIGN_TEXT, ""]
    return "\n".join(lines)


def write_markdown(report: dict[str, Any], path: str | Path) -> Path:
    """Write (or regenerate) the document."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(re.sub(r"\n{3,}", "\n\n", render(report, path)))
    return path


# ---------------------------------------------------------------- figures


def _series(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        name = "baseline (naive)" if r["target"] == "baseline" else f"t2mir ({r['transport']})"
        out.setdefault(name, []).append(r)
    return {k: sorted(v, key=lambda r: r["sessions"]) for k, v in out.items()}


T2MIR_COLOR = "tab:blue"
BASELINE_COLOR = "tab:orange"
WS_COLOR = "tab:green"


def _color(name: str) -> str:
    if name.startswith("baseline"):
        return BASELINE_COLOR
    return WS_COLOR if "(ws)" in name else T2MIR_COLOR


def _style(ax: Any, title: str, label: str, xlabel: str, ylabel: str, xs: list[int]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(xs)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    subtitle = textwrap.shorten(label, 80, placeholder="...")
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def write_plots(report: dict[str, Any], directory: str | Path) -> dict[str, str]:
    """Write the figures that have data; returns {figure: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    label = report.get("label", "")
    written: dict[str, str] = {}
    series = _series(report["runs"])
    if series:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for name, rows in series.items():
            xs = [r["sessions"] for r in rows]
            color = _color(name)
            ax.plot(xs, [r["latency_ms"]["p50"] for r in rows], marker="o", color=color, label=f"{name} p50")
            ax.plot(xs, [r["latency_ms"]["p99"] for r in rows], marker="x", linestyle="--",
                    color=color, label=f"{name} p99")  # fmt: skip
        sessions = [r["sessions"] for r in report["runs"]]
        _style(ax, "Act latency", label, "concurrent sessions", "ms per act (client side)", sessions)
        written["latency"] = _save(fig, directory / f"{PREFIX}latency.png")
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for name, rows in series.items():
            xs = [r["sessions"] for r in rows]
            ax.plot(xs, [r["acts_per_s"] for r in rows], marker="o", color=_color(name), label=name)
        _style(ax, "Throughput", label, "concurrent sessions", "acts per second", sessions)
        written["throughput"] = _save(fig, directory / f"{PREFIX}throughput.png")
    growth = report.get("growth")
    if growth and growth["rows"]:
        rows = growth["rows"]
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        xs = [r["episodes"] for r in rows]
        ax.plot(
            xs,
            [r["cached_ms"] for r in rows],
            marker="o",
            color=T2MIR_COLOR,
            label="cached step (t2mir engine)",
        )
        ax.plot(xs, [r["full_ms"] for r in rows], marker="o", color=BASELINE_COLOR,
                label="full forward (naive, every act)")  # fmt: skip
        _style(ax, "Per-act cost against context", label, "context episodes", "ms per act (batch 1)", xs)
        written["growth"] = _save(fig, directory / f"{PREFIX}growth.png")
    return written


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
