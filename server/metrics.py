"""Prometheus metrics of one app (own `CollectorRegistry`, no global state).

Names are DESIGN.md's, prefixed ``t2mir_``. Labels are bounded: status codes, store operations,
model names/versions, layer and expert indices, token modalities; never session ids.

Routers by family: T2MIR's token router (``expert_tokens``) and task router
(``task_expert_weight``); M3DT's soft router (``expert_weight``: summed softmax weights,
``expert_top``: tokens whose highest weight is the expert, ``router_token_entropy``: the mean
per-token entropy of the weights). ``router_load_cv`` / ``router_entropy`` cover every router
(label ``router``: token, task or soft).

Routing statistics arrive as tensors in every `EngineOutput`; `ServerMetrics.record_engine_output`
queues them, and every ``ROUTING_BATCH`` engine calls (or before a scrape) `summarize_routing` sums
them per layer in one pass and they are read back with one ``tolist`` per layer, on the engine's
worker thread (never on the event loop). Summing per act cost a single session about 0.4 ms of the worker's
time right when the event loop answered the act, competing with it for the GIL.
Act answers (status and latency) are queued the same way, and added every ``ACT_BATCH`` answers or
before a scrape, one update per status and per histogram bucket (`observe_all`); the queue waits of
an engine call are added in one call too.
``router_load_cv`` / ``router_entropy`` are computed on an exponentially decaying usage window
(about the last 100 engine calls per model).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from t2mir_model import (
    EngineOutput,
    LayerRoutingSummary,
    LayerStatistics,
    ReadCounts,
    cv_squared,
    normalised_entropy,
    summarize_routing,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RETURN_BUCKETS = (-1000, -500, -200, -100, -50, -20, -10, -5, 0, 5, 10, 20, 50, 100, 200, 500, 1000)
USAGE_DECAY = 0.99
"""Per-engine-call decay of the usage window behind router_load_cv / router_entropy."""
ROUTING_BATCH = 32
"""Engine calls whose routing statistics are queued and summed in one pass (scrapes drain sooner)."""
ACT_BATCH = 64
"""Answered acts whose status and latency are queued and added in one pass (scrapes drain sooner)."""


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for every amount, with one update per bucket touched and one of the
    sum (prometheus_client has no call for several observations; this does what its ``observe``
    does, on the same fields: each amount counts in the first bucket whose bound is at least it)."""
    if not amounts:
        return
    bounds = histogram._upper_bounds
    histogram._sum.inc(math.fsum(amounts))
    for index, count in collections.Counter(bisect.bisect_left(bounds, a) for a in amounts).items():
        histogram._buckets[index].inc(count)


class _WithoutCreated:
    """A collector view of a registry that drops the ``*_created`` samples (noise for dashboards)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """Every metric of the registry, without its ``*_created`` samples."""
        for metric in self.registry.collect():  # fresh objects on every collect
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class _QueueDepth:
    """``t2mir_queue_depth{model}``: read from a callback at scrape time (one series per model)."""

    def __init__(self, depths: Callable[[], Mapping[str, int]]) -> None:
        self.depths = depths

    def collect(self) -> Iterator[Metric]:
        """The gauge family with the current depths."""
        family = GaugeMetricFamily("t2mir_queue_depth", "Acts waiting for an engine call", labels=["model"])
        for model, depth in sorted(self.depths().items()):
            family.add_metric([model], depth)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples (so registering does not call the callback)."""
        yield GaugeMetricFamily("t2mir_queue_depth", "Acts waiting for an engine call", labels=["model"])


class _DecodeReads:
    """``t2mir_decode_reads_total{model,read}`` (``in_place`` / ``gathered`` steps),
    ``t2mir_decode_padding_rows_total{model}`` and ``t2mir_decode_moved_rows_total{model}``: read
    from a callback at scrape time."""

    def __init__(self, reads: Callable[[], Mapping[str, ReadCounts]]) -> None:
        self.reads = reads

    def collect(self) -> Iterator[Metric]:
        """Both counter families with the engines' current counts."""
        steps, padding, moved = self._families()
        for model, counts in sorted(self.reads().items()):
            steps.add_metric([model, "in_place"], counts.in_place)
            steps.add_metric([model, "gathered"], counts.gathered)
            padding.add_metric([model], counts.padding_rows)
            moved.add_metric([model], counts.moved_rows)
        yield from (steps, padding, moved)

    def describe(self) -> Iterator[Metric]:
        """The families without samples (so registering does not call the callback)."""
        yield from self._families()

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "t2mir_decode_reads",
                "Cached decode steps by how they read their slots",
                labels=["model", "read"],
            ),
            CounterMetricFamily(
                "t2mir_decode_padding_rows",
                "Slot-range rows outside the batch read by in-place steps",
                labels=["model"],
            ),
            CounterMetricFamily(
                "t2mir_decode_moved_rows",
                "Cache slots moved so that a batch's sessions sit together",
                labels=["model"],
            ),
        )


class ServerMetrics:
    """Every series the server exports, registered on a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        kw: dict[str, Any] = {"namespace": "t2mir", "registry": r}
        per_layer = ["model", "layer", "router"]
        self.act_requests = Counter("act_requests", "Act requests by HTTP status", ["status"], **kw)
        self.act_latency = Histogram(
            "act_latency_seconds", "Act latency in the server", buckets=LATENCY_BUCKETS, **kw
        )
        self.batch_size = Histogram("batch_size", "Requests per engine call", buckets=BATCH_BUCKETS, **kw)
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time from queueing to engine call", buckets=LATENCY_BUCKETS, **kw
        )
        self.sessions_active = Gauge(
            "sessions_active", "Sessions with an in-memory history mirror on this replica", **kw
        )
        self.kv_hits = Counter("kv_cache_hits", "Acts decoded incrementally from a cache slot", **kw)
        self.kv_misses = Counter("kv_cache_misses", "Acts that rebuilt a session's context", **kw)
        self.kv_slots_used = Gauge("kv_cache_slots_used", "KV-cache slots holding a session", **kw)
        self.store_latency = Histogram(
            "store_latency_seconds", "Session-store call latency", ["op"], buckets=LATENCY_BUCKETS, **kw
        )
        self.episode_return = Histogram(
            "episode_return", "Returns of closed episodes", ["model"], buckets=RETURN_BUCKETS, **kw
        )
        self.expert_tokens = Counter(
            "expert_tokens",
            "Token-router expert selections by token modality",
            [*per_layer, "modality", "expert"],
            **kw,
        )
        self.task_expert_weight = Counter(
            "task_expert_weight", "Summed task-router gate weights", ["model", "layer", "expert"], **kw
        )
        self.expert_weight = Counter(
            "expert_weight", "Summed soft-router (M3DT) expert weights", ["model", "layer", "expert"], **kw
        )
        self.expert_top = Counter(
            "expert_top",
            "Tokens whose highest soft-router (M3DT) weight is the expert",
            ["model", "layer", "expert"],
            **kw,
        )
        self.router_token_entropy = Gauge(
            "router_token_entropy",
            "Mean per-token entropy of the soft router's weights, normalised to [0, 1]",
            per_layer,
            **kw,
        )
        self.router_load_cv = Gauge(
            "router_load_cv", "Coefficient of variation of expert usage", per_layer, **kw
        )
        self.router_entropy = Gauge("router_entropy", "Normalised entropy of expert usage", per_layer, **kw)
        self.model_info = Gauge("model_info", "Loaded model versions", ["model", "version", "backbone"], **kw)
        self.acts_shed = Counter(
            "acts_shed", "Acts refused with 503 overloaded (deadline or queue bound)", ["model"], **kw
        )
        self._lock = threading.Lock()
        self._acts: list[tuple[int, float | None]] = []
        self._pending: list[tuple[str, list[Sequence[LayerStatistics]]]] = []
        self._usage: dict[tuple[str, int, str], torch.Tensor] = {}
        self._children: dict[tuple[int | str, ...], Counter] = {}

    # ------------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The text exposition of every series (without the ``*_created`` timestamps), after adding
        any queued act answers and routing statistics (the server drains the latter off the event
        loop before)."""
        self.drain_acts()
        self.drain_routing()
        return generate_latest(_WithoutCreated(self.registry))

    def bind(
        self,
        sessions_active: Callable[[], float],
        slots_used: Callable[[], float],
        queue_depths: Callable[[], Mapping[str, int]] | None = None,
        decode_reads: Callable[[], Mapping[str, ReadCounts]] | None = None,
    ) -> None:
        """Read the live gauges from callbacks at scrape time (``queue_depths``, ``decode_reads``:
        per model)."""
        self.sessions_active.set_function(sessions_active)
        self.kv_slots_used.set_function(slots_used)
        if queue_depths is not None:
            self.registry.register(_QueueDepth(queue_depths))
        if decode_reads is not None:
            self.registry.register(_DecodeReads(decode_reads))

    # ------------------------------------------------------------------ models
    def model_loaded(self, model: str, version: str, backbone: str) -> None:
        """Mark a model version as loaded."""
        self.model_info.labels(model, version, backbone).set(1)
        self.acts_shed.labels(model)  # the series exists (at 0) before the first shed act

    def model_unloaded(self, model: str, version: str, backbone: str) -> None:
        """Remove a model version's info series."""
        with contextlib.suppress(KeyError):
            self.model_info.remove(model, version, backbone)

    # ------------------------------------------------------------------ requests
    def act_done(self, status: int, seconds: float | None) -> None:
        """Count an act answer (and its latency when it reached the act flow): queued, and added
        with the others every ``ACT_BATCH`` answers or at the next scrape (`drain_acts`)."""
        with self._lock:
            self._acts.append((status, seconds))
            full = len(self._acts) >= ACT_BATCH
        if full:
            self.drain_acts()

    def drain_acts(self) -> None:
        """Add the queued act answers to the series: one update per status and per bucket."""
        with self._lock:
            acts, self._acts = self._acts, []
        for status, count in collections.Counter(status for status, _ in acts).items():
            self.act_requests.labels(str(status)).inc(count)
        observe_all(self.act_latency, [seconds for _, seconds in acts if seconds is not None])

    def act_shed(self, model: str) -> None:
        """Count an act refused by overload control."""
        self.acts_shed.labels(model).inc()

    def store_op(self, op: str, seconds: float) -> None:
        """Record one store call's latency."""
        self.store_latency.labels(op).observe(seconds)

    def episode_closed(self, model: str, ret: float) -> None:
        """Record the return of a closed episode."""
        self.episode_return.labels(model).observe(ret)

    # ------------------------------------------------------------------ engine (worker thread)
    def record_engine_output(self, model: str, output: EngineOutput, waits: list[float]) -> None:
        """Batch size, queue waits and cache hits of one engine call; its routing statistics are
        queued and summed with those of other calls (`drain_routing`)."""
        self.batch_size.observe(len(output.results))
        observe_all(self.queue_wait, waits)
        hits = sum(1 for r in output.results if r.cache_hit)
        if hits:
            self.kv_hits.inc(hits)
        if len(output.results) - hits:
            self.kv_misses.inc(len(output.results) - hits)
        with self._lock:
            self._pending.append((model, output.routing))
            full = len(self._pending) >= ROUTING_BATCH
        if full:
            self.drain_routing()

    def drain_routing(self) -> None:
        """Add the queued routing statistics to the series, summed per model (one pass per model)."""
        with self._lock:
            pending, self._pending = self._pending, []
        by_model: dict[str, list[list[Sequence[LayerStatistics]]]] = {}
        for model, routing in pending:
            by_model.setdefault(model, []).append(routing)
        for model, calls in by_model.items():
            summaries = summarize_routing(forward for call in calls for forward in call)
            self._add_summaries(model, summaries, len(calls))

    def _add_summaries(self, model: str, summaries: list[LayerRoutingSummary], calls: int) -> None:
        """Add per-layer routing summaries (of ``calls`` engine calls) to the series."""
        with self._lock:
            for summary in summaries:
                label = str(summary.layer)
                if summary.token_counts is not None:
                    for modality, row in zip(summary.modalities, summary.token_counts.tolist(), strict=True):
                        for e, value in enumerate(row):
                            if value:
                                self._child(self.expert_tokens, model, label, "token", modality, str(e)).inc(
                                    value
                                )
                if summary.task_weights is not None:
                    for e, value in enumerate(summary.task_weights.tolist()):
                        if value:
                            self._child(self.task_expert_weight, model, label, str(e)).inc(value)
                if summary.expert_weights is not None:
                    self._add_soft(model, label, summary)
                for router, usage in summary.usage().items():
                    self._update_usage(model, summary.layer, router, usage, calls)

    def _add_soft(self, model: str, label: str, summary: LayerRoutingSummary) -> None:
        """One layer's soft-router series (caller holds the lock)."""
        assert summary.expert_weights is not None
        weights = summary.expert_weights.tolist()
        top = summary.expert_top.tolist() if summary.expert_top is not None else []
        for e, value in enumerate(weights):
            if value:
                self._child(self.expert_weight, model, label, str(e)).inc(value)
        for e, value in enumerate(top):
            if value:
                self._child(self.expert_top, model, label, str(e)).inc(value)
        if summary.mean_entropy is not None and len(weights) > 1:
            normalised = summary.mean_entropy / math.log(len(weights))
            self.router_token_entropy.labels(model, label, "soft").set(normalised)

    def _child(self, family: Counter, *labels: str) -> Counter:
        """A labelled counter, created once and kept (``labels`` costs a lock and a lookup)."""
        key: tuple[int | str, ...] = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def _update_usage(self, model: str, layer: int, router: str, usage: torch.Tensor, calls: int) -> None:
        key = (model, layer, router)
        previous = self._usage.get(key)
        window = usage if previous is None else previous * USAGE_DECAY**calls + usage
        self._usage[key] = window
        if float(window.sum()) <= 0:
            return
        cv = float(cv_squared(window).sqrt())
        entropy = float(normalised_entropy(window))
        self.router_load_cv.labels(model, str(layer), router).set(cv)
        self.router_entropy.labels(model, str(layer), router).set(entropy)
