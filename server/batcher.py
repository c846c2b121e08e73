"""Dynamic batching of act requests into engine calls (DESIGN.md decision 10).

One `Batcher` per loaded model version owns that version's engine and one dedicated worker
thread; every engine call (forwards, evictions, warm-up) runs on that thread, so the engine is
never touched from two threads and the event loop never blocks on a forward.

Scheduling: a request that finds nothing else queued runs at once. While a forward runs, new
requests queue up and the next call takes them together (up to ``max_batch_size``). When several
requests are queued, the batch may wait for more, but only until ``max_wait_ms`` after the oldest
queued request arrived, so a lone request never waits out the window and requests that already
waited behind a forward do not wait again. A session (request ``key``) appears at most once per
engine call; a second request for the same key stays queued for the next call, in order.

Overload control: each request has a deadline, ``deadline_ms`` after its arrival in the server
(``submit``'s ``arrived``; 0 turns deadlines off), by which its answer should be ready: its engine
call, the hand-off back to the event loop, and what the caller does after it (the act's store
write, reported through `Batcher.observe_after_call`).
A request is refused with `Overloaded` (the server answers 503 with ``Retry-After``), and the
engine never runs it:

- at admission, when the queue already holds ``max_queue`` requests, or when the expected wait
  (`server.call_cost.expected_wait`: the rest of the running call, the full batches queued ahead,
  then its own call, each costed at a high quantile of the recent engine calls, plus the hand-off
  back to the event loop and the time after the call, each at a high quantile) would end past its
  deadline;
- at dispatch, when the call about to start (same costs) would end past its deadline (the
  estimate at admission was too low, e.g. after a burst or a slow call): its answer would be late
  anyway, and the slot goes to a request that can still make it.

The estimates only learn from calls that run, so an idle engine always runs what it is given: a
request that finds nothing queued or running (and whose deadline has not already passed) is
admitted whatever the estimates say, and is not shed at dispatch. Without this, one slow call (a
cold start, a stall for CPU, a slow store write) that raised the estimates past the deadline would
shed every later act of an idle server, and no call would ever bring them down again. Under load
the engine is never idle, so this changes nothing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from server.call_cost import CallCost, Quantile, expected_wait
from server.engine_thread import EngineThread, EngineThreadStopped

log = logging.getLogger("t2mir.server")
T = TypeVar("T")


class Keyed(Protocol):
    """A request names the session it belongs to; one engine call holds a session at most once."""

    @property
    def key(self) -> Hashable:
        """The session's identity."""
        ...


class HasResults(Protocol):
    """An engine call's output: one result per request, in request order."""

    @property
    def results(self) -> Sequence[Any]:
        """The per-request results."""
        ...


ReqT = TypeVar("ReqT", bound=Keyed)
ResT = TypeVar("ResT")
OutT = TypeVar("OutT", bound=HasResults)
ReqT_contra = TypeVar("ReqT_contra", bound=Keyed, contravariant=True)
OutT_co = TypeVar("OutT_co", bound=HasResults, covariant=True)


class EngineLike(Protocol[ReqT_contra, OutT_co]):
    """What the batcher needs from an engine: ``act(requests)`` -> output with ``results``."""

    def act(self, requests: Sequence[ReqT_contra]) -> OutT_co:
        """One result per request, in order, as ``output.results``."""
        ...

    def evict(self, key: Hashable) -> None:
        """Forget a session's cached state."""
        ...


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class Overloaded(RuntimeError):
    """The request was refused before the engine ran it: its deadline could not be met, or the
    queue is full. ``retry_after``: seconds after which the queue is expected to take it."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class BatchResult(Generic[ResT]):
    """One request's result and how it was served."""

    result: ResT
    queue_wait: float  # seconds from submit to the start of its engine call
    forward: float  # seconds the engine call took
    batch_size: int


@dataclass
class _Item(Generic[ReqT, ResT]):
    request: ReqT
    future: asyncio.Future[BatchResult[ResT]]
    enqueued: float
    deadline: float  # perf_counter() by which its answer should be ready (inf: none)
    sheddable: bool = True  # False: admitted by an idle engine, runs whatever the estimates say


def _init_worker(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency of the server
        pass


class Batcher(Generic[ReqT, ResT, OutT]):
    """Joins concurrent act requests of many sessions into engine calls on one worker thread.

    Typed by the engine's request (``ReqT``), per-request result (``ResT``) and call output
    (``OutT``, whose ``results`` are the ``ResT`` in request order). ``on_output`` is called on the
    worker thread with (output, queue waits) for each successful engine call, after the call's
    results were handed back (metrics never delay an answer); `flush` waits for it.
    """

    def __init__(
        self,
        engine: EngineLike[ReqT, OutT],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        name: str = "engine",
        torch_threads: int = 1,
        on_output: Callable[[OutT, list[float]], None] | None = None,
        deadline_ms: float = 0.0,
        max_queue: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if deadline_ms < 0 or (max_queue is not None and max_queue < 1):
            raise ValueError("deadline_ms must be >= 0 and max_queue >= 1")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self.deadline = deadline_ms / 1000.0
        self.max_queue = max_queue
        self.cost = CallCost()
        self.handoff = Quantile()
        """Seconds an engine call's requests spend around it (to the worker thread and back to the
        event loop), at the `server.call_cost.QUANTILE` of recent calls."""
        self.after_call = Quantile()
        """Seconds from a request's result back on the event loop to its answer (the act's store
        write), at the same quantile: reported by the caller (`observe_after_call`)."""
        self._on_output = on_output
        self._worker = EngineThread(f"t2mir-{name}", setup=functools.partial(_init_worker, torch_threads))
        self._queue: deque[_Item[ReqT, ResT]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = 0  # requests inside the current engine call
        self._running_since = 0.0
        self.calls = 0

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    @property
    def pending(self) -> int:
        """Requests queued or inside the running engine call."""
        return len(self._queue) + self._running

    @property
    def queued(self) -> int:
        """Requests waiting for an engine call (the queue depth)."""
        return len(self._queue)

    def expected_wait(self, now: float | None = None) -> float:
        """Seconds until a request queued now would be answered (`server.call_cost.expected_wait`)."""
        now = time.perf_counter() if now is None else now
        running_for = now - self._running_since
        return expected_wait(
            self.cost, len(self._queue), self.max_batch_size, self._running, running_for, self._tail()
        )

    def observe_after_call(self, seconds: float) -> None:
        """Report the time between one request's result and its answer (see ``after_call``)."""
        self.after_call.observe(seconds)

    def _tail(self) -> float:
        """Seconds an answer takes after its engine call ends: hand-off plus what follows."""
        return self.handoff.value + self.after_call.value

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closing

    async def submit(self, request: ReqT, arrived: float | None = None) -> BatchResult[ResT]:
        """Queue ``request`` (an object with ``.key``) and wait for its result; ``arrived``: the
        perf_counter() at which it reached the server (default now), where its deadline starts.

        Raises `BatcherClosed` after `close`, `Overloaded` when it is shed (module docstring), or
        the exception the engine raised for it.
        """
        if self._closing:
            raise BatcherClosed(f"{self.name} is shutting down")
        now = time.perf_counter()
        if self.max_queue is not None and len(self._queue) >= self.max_queue:
            raise Overloaded(f"{self.name}: {len(self._queue)} acts queued", self.expected_wait(now))
        idle = not self._queue and not self._running  # its call starts at once (module docstring)
        deadline = math.inf
        if self.deadline > 0:
            deadline = (now if arrived is None else arrived) + self.deadline
            wait = self.expected_wait(now)
            if now + wait > deadline and (not idle or now > deadline):
                raise Overloaded(
                    f"{self.name}: expected wait {wait * 1000:.0f} ms passes the {self.deadline * 1000:.0f} ms deadline",
                    now + wait - deadline,
                )
        self.start()
        future: asyncio.Future[BatchResult[ResT]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(request, future, now, deadline, sheddable=not idle))
        self._wakeup.set()
        return await future

    async def run_on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread, after the engine calls already started."""
        return await self._worker.call(fn, *args)

    async def flush(self) -> None:
        """Wait until the output hooks of every finished engine call have run."""
        if not self._closing:
            with contextlib.suppress(EngineThreadStopped):  # closed meanwhile
                await self.run_on_worker(lambda: None)

    async def evict(self, key: Hashable) -> None:
        """Drop ``key``'s engine state (on the engine thread)."""
        await self.run_on_worker(self.engine.evict, key)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking work, finish everything queued and in flight, then stop the thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning("batcher %s: drain timed out with %d queued", self.name, len(self._queue))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(BatcherClosed(f"{self.name} shut down"))
        self._worker.stop()

    # ------------------------------------------------------------------ worker
    async def _loop(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._fill()
            batch = self._take()
            try:
                await self._run(batch)
            except Exception as exc:  # never let the worker die with futures pending
                log.exception("batcher %s: engine call failed", self.name)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)

    def _distinct_keys(self) -> int:
        return len({item.request.key for item in self._queue})

    async def _fill(self) -> None:
        """With other requests already queued, wait (until the oldest is max_wait old) for more."""
        if len(self._queue) < 2 or self.max_wait <= 0:
            return
        deadline = self._queue[0].enqueued + self.max_wait
        while not self._closing and self._distinct_keys() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Item[ReqT, ResT]]:
        """Pop up to max_batch_size items with distinct keys, oldest first; the rest keep order.
        Items whose deadline falls before the call would end are shed (unless admitted by an idle
        engine: module docstring)."""
        batch: list[_Item[ReqT, ResT]] = []
        keys: set[Hashable] = set()
        kept: deque[_Item[ReqT, ResT]] = deque()
        call = self.cost.seconds(min(len(self._queue), self.max_batch_size))
        ends = time.perf_counter() + call + self._tail()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():  # cancelled by its caller before it ran
                continue
            if item.sheddable and item.deadline < ends:
                late = ends - item.deadline
                item.future.set_exception(
                    Overloaded(f"{self.name}: the act would be answered {late * 1000:.0f} ms late", late)
                )
                continue
            if len(batch) < self.max_batch_size and item.request.key not in keys:
                keys.add(item.request.key)
                batch.append(item)
            else:
                kept.append(item)
        self._queue = kept
        return batch

    async def _run(self, batch: list[_Item[ReqT, ResT]]) -> None:
        if not batch:
            return
        start = time.perf_counter()
        waits = [start - item.enqueued for item in batch]
        self._running = len(batch)
        self._running_since = start
        try:
            outcomes, forward, reports = await self.run_on_worker(
                self._call, [i.request for i in batch], waits
            )
        finally:
            self._running = 0
        self.calls += 1
        self.cost.observe(len(batch), forward)
        self.handoff.observe(max(time.perf_counter() - start - forward, 0.0))
        for item, wait, outcome in zip(batch, waits, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(BatchResult(outcome, wait, forward, len(batch)))
        if reports and self._on_output is not None:
            self._worker.post(self._report, reports)  # after the answers, before the next call

    def _call(
        self, requests: list[ReqT], waits: list[float]
    ) -> tuple[list[ResT | Exception], float, list[tuple[OutT, list[float]]]]:
        """Worker thread: one engine call; on failure, isolate the failing request(s).
        Returns (outcomes, forward seconds, outputs for the hook)."""
        t0 = time.perf_counter()
        try:
            output = self.engine.act(requests)
        except Exception as exc:
            for r in requests:  # the engine may have claimed slots before failing
                self.engine.evict(r.key)
            if len(requests) == 1:
                return [exc], time.perf_counter() - t0, []
            outcomes, reports = self._one_by_one(requests, waits)
            return outcomes, time.perf_counter() - t0, reports
        return list(output.results), time.perf_counter() - t0, [(output, waits)]

    def _one_by_one(
        self, requests: list[ReqT], waits: list[float]
    ) -> tuple[list[ResT | Exception], list[tuple[OutT, list[float]]]]:
        outcomes: list[ResT | Exception] = []
        reports: list[tuple[OutT, list[float]]] = []
        for request, wait in zip(requests, waits, strict=True):
            try:
                output = self.engine.act([request])
            except Exception as exc:
                self.engine.evict(request.key)
                outcomes.append(exc)
                continue
            reports.append((output, [wait]))
            outcomes.append(output.results[0])
        return outcomes, reports

    def _report(self, reports: list[tuple[OutT, list[float]]]) -> None:
        """Worker thread: run the output hook; its failure is logged, never raised."""
        hook = self._on_output
        if hook is None:
            return
        for output, waits in reports:
            try:
                hook(output, waits)
            except Exception:
                log.exception("batcher %s: output hook failed", self.name)
