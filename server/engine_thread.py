"""The engine's own thread: runs submitted calls one at a time, in order, off the event loop.

A lighter `ThreadPoolExecutor` of one thread for the act path. Work goes in through a
`queue.SimpleQueue` and each result comes back as an asyncio future settled by one
``loop.call_soon_threadsafe``, with no `concurrent.futures.Future` (and its condition variable
and callback chaining) in between: at one session this hop is a visible part of an act
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("t2mir.server")
T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None"]
"""(function, arguments, the caller's future; None for a posted call)."""


class EngineThreadStopped(RuntimeError):
    """`EngineThread.stop` was called: no new work is taken."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Event loop: hand a call's outcome to its future (unless its caller cancelled it)."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class EngineThread:
    """One worker thread, started on the first call; ``setup`` runs on it before any call."""

    def __init__(self, name: str, setup: Callable[[], None] | None = None) -> None:
        self.name = name
        self._setup = setup
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` behind the calls already queued; its result (or exception) as a
        future of the running event loop."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put((fn, args, future))
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` with no result to wait for; an exception it raises is logged."""
        self._put((fn, args, None))

    def stop(self) -> None:
        """Run what is queued, then end the thread (waits for it); later calls raise."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._stopped:
                raise EngineThreadStopped(f"{self.name} is stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        broken: BaseException | None = None
        if self._setup is not None:
            try:
                self._setup()
            except BaseException as exc:  # every call then fails with it instead of hanging
                log.error("%s: setup failed", self.name, exc_info=exc)
                broken = EngineThreadStopped(f"{self.name}: setup failed: {type(exc).__name__}: {exc}")
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, future = job
            error: BaseException | None = broken
            result: Any = None
            if broken is None:
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the caller, like an executor does
                    error = exc
            if future is None:
                if error is not None:
                    log.error("%s: posted call failed", self.name, exc_info=error)
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                future.get_loop().call_soon_threadsafe(_settle, future, result, error)
