"""The engine thread: calls run in order on one thread, outcomes reach the event loop's futures."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from server.engine_thread import EngineThread, EngineThreadStopped


def test_calls_run_in_order_on_one_thread_after_setup():
    seen: list[tuple[str, object]] = []

    def setup() -> None:
        seen.append(("setup", threading.current_thread().name))

    def work(i: int) -> int:
        time.sleep(0.001 * (5 - i))  # later calls are shorter: order comes from the queue alone
        seen.append(("call", threading.current_thread().name))
        return i * i

    async def main() -> list[int]:
        worker = EngineThread("t2mir-test", setup=setup)
        try:
            return list(await asyncio.gather(*(worker.call(work, i) for i in range(5))))
        finally:
            worker.stop()

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]
    assert seen[0] == ("setup", "t2mir-test")
    assert seen[1:] == [("call", "t2mir-test")] * 5
    assert threading.current_thread().name != "t2mir-test"


def test_an_exception_reaches_its_caller_and_the_thread_goes_on():
    def fail() -> None:
        raise ValueError("bad input")

    async def main() -> int:
        worker = EngineThread("t2mir-test")
        try:
            with pytest.raises(ValueError, match="bad input"):
                await worker.call(fail)
            return await worker.call(lambda: 7)
        finally:
            worker.stop()

    assert asyncio.run(main()) == 7


def test_a_posted_failure_is_logged_not_raised(caplog):
    def fail() -> None:
        raise RuntimeError("hook broke")

    async def main() -> str:
        worker = EngineThread("t2mir-test")
        try:
            worker.post(fail)
            return await worker.call(lambda: "still running")
        finally:
            worker.stop()

    with caplog.at_level(logging.ERROR, logger="t2mir.server"):
        assert asyncio.run(main()) == "still running"
    assert any("posted call failed" in r.message and r.exc_info for r in caplog.records)


def test_a_cancelled_caller_does_not_break_the_thread():
    release = threading.Event()

    async def main() -> int:
        worker = EngineThread("t2mir-test")
        try:
            blocked = worker.call(release.wait)
            blocked.cancel()
            release.set()
            return await worker.call(lambda: 3)  # settling the cancelled future raised nothing
        finally:
            worker.stop()

    assert asyncio.run(main()) == 3


def test_stop_runs_what_is_queued_then_refuses_work():
    done: list[int] = []

    async def main() -> None:
        worker = EngineThread("t2mir-test")
        worker.call(time.sleep, 0.01)
        worker.post(done.append, 1)
        worker.stop()
        assert done == [1]
        with pytest.raises(EngineThreadStopped):
            worker.call(lambda: None)
        with pytest.raises(EngineThreadStopped):
            worker.post(lambda: None)

    asyncio.run(main())


def test_a_failed_setup_fails_every_call_instead_of_hanging():
    def setup() -> None:
        raise OSError("no such device")

    async def main() -> None:
        worker = EngineThread("t2mir-test", setup=setup)
        try:
            for _ in range(2):
                with pytest.raises(EngineThreadStopped, match="setup failed: OSError: no such device"):
                    await asyncio.wait_for(worker.call(lambda: 1), 5)
        finally:
            worker.stop()

    asyncio.run(main())


def test_stop_before_any_call_starts_no_thread():
    worker = EngineThread("t2mir-never-started")
    worker.stop()
    assert all(t.name != "t2mir-never-started" for t in threading.enumerate())
