"""The batcher with a fake engine (no model): scheduling, batch limits, per-session exclusivity,
failure isolation, draining on shutdown, and overload control (the call-cost fit, the expected
wait, shedding at admission and at dispatch: a shed request never reaches the engine)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from server.batcher import Batcher, BatcherClosed, Overloaded
from server.call_cost import CallCost, expected_wait

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Req:
    key: str
    tag: str = ""


class FakeEngine:
    """Records calls; the first ``hold`` calls block until `release` (to keep a forward running)."""

    def __init__(self, hold: int = 0, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.evicted: list[str] = []
        self.hold = hold
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def act(self, requests):
        self.threads.add(threading.current_thread().name)
        self.calls.append([f"{r.key}{r.tag}" for r in requests])
        if len(self.calls) <= self.hold:
            self.entered.set()
            self.gate.wait(10)
        if self.fail_on is not None and any(r.key == self.fail_on for r in requests):
            raise RuntimeError("boom")
        return SimpleNamespace(
            results=[SimpleNamespace(action=f"{r.key}{r.tag}", cache_hit=False) for r in requests], routing=[]
        )

    def evict(self, key):
        self.evicted.append(key)


async def wait_entered(engine: FakeEngine) -> None:
    while not engine.entered.is_set():
        await asyncio.sleep(0.001)


async def test_lone_request_runs_at_once_even_with_a_long_window():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=60_000)
    result = await asyncio.wait_for(batcher.submit(Req("a")), 10)  # would time out if it waited the window
    assert result.result.action == "a" and result.batch_size == 1
    await batcher.close()
    assert engine.calls == [["a"]]
    assert all(name.startswith("t2mir-") for name in engine.threads)  # ran on the worker thread


async def test_requests_queued_during_a_forward_join_the_next_call():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    rest = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bcd"]
    await asyncio.sleep(0.01)
    engine.gate.set()
    results = await asyncio.gather(first, *rest)
    assert engine.calls == [["a"], ["b", "c", "d"]]
    assert [r.result.action for r in results] == ["a", "b", "c", "d"]
    assert [r.batch_size for r in results] == [1, 3, 3, 3]
    await batcher.close()


async def test_max_batch_size_is_respected():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=2, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    rest = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bcdef"]
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, *rest)
    assert engine.calls == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    await batcher.close()


async def test_a_session_appears_at_most_once_per_call_and_keeps_its_order():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(Req("x", "0")))
    await wait_entered(engine)
    rest = [
        asyncio.ensure_future(batcher.submit(Req(k, t)))
        for k, t in [("a", "1"), ("b", "1"), ("a", "2"), ("a", "3")]
    ]
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, *rest)
    assert engine.calls == [["x0"], ["a1", "b1"], ["a2"], ["a3"]]
    for call in engine.calls:
        keys = [item[0] for item in call]
        assert len(keys) == len(set(keys))
    await batcher.close()


async def test_under_load_the_batch_waits_for_more_within_the_window():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=3, max_wait_ms=60_000)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    b = asyncio.ensure_future(batcher.submit(Req("b")))
    c = asyncio.ensure_future(batcher.submit(Req("c")))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await first
    await asyncio.sleep(0.05)  # b and c are queued together: the batch waits for a third (or the window)
    d = asyncio.ensure_future(batcher.submit(Req("d")))
    await asyncio.wait_for(asyncio.gather(b, c, d), 10)  # full batch: no need to wait the window
    assert engine.calls == [["a"], ["b", "c", "d"]]
    await batcher.close()


async def test_a_failing_request_fails_alone_and_its_slots_are_evicted():
    engine = FakeEngine(hold=1, fail_on="bad")
    batcher = Batcher(engine, max_batch_size=8, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    good = asyncio.ensure_future(batcher.submit(Req("b")))
    bad = asyncio.ensure_future(batcher.submit(Req("bad")))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await first
    assert (await good).result.action == "b"
    with pytest.raises(RuntimeError, match="boom"):
        await bad
    assert "bad" in engine.evicted and "b" in engine.evicted  # the failed batch call may have claimed slots
    assert engine.calls[1:] == [["b", "bad"], ["b"], ["bad"]]
    await batcher.close()


async def test_shutdown_drains_queued_and_in_flight_work():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=2, max_wait_ms=0)
    futures = [asyncio.ensure_future(batcher.submit(Req("a")))]
    await wait_entered(engine)
    futures += [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bcd"]
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    with pytest.raises(BatcherClosed):
        await batcher.submit(Req("late"))
    engine.gate.set()
    await closing
    assert [f.result().result.action for f in futures] == ["a", "b", "c", "d"]
    assert engine.calls == [["a"], ["b", "c"], ["d"]]


async def test_evict_runs_on_the_worker_thread_after_running_calls():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=2, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    evicting = asyncio.ensure_future(batcher.evict("a"))
    await asyncio.sleep(0.01)
    assert engine.evicted == []  # waits for the running forward
    engine.gate.set()
    await first
    await evicting
    assert engine.evicted == ["a"]
    await batcher.close()


def test_call_cost_fits_fixed_and_per_request_cost():
    cost = CallCost()
    assert cost.seconds(8) == 0.0  # nothing measured: nothing is refused
    for n in (1, 4, 16, 2, 8, 32) * 3:
        cost.observe(n, 0.002 + 0.0005 * n)
    assert cost.seconds(1) == pytest.approx(0.0025, rel=1e-6)
    assert cost.seconds(64) == pytest.approx(0.034, rel=1e-6)


def test_call_cost_without_spread_is_proportional_above_the_seen_size():
    cost = CallCost()
    for _ in range(10):
        cost.observe(2, 0.010)
    assert cost.seconds(1) == pytest.approx(0.010)  # never below the measured call
    assert cost.seconds(8) == pytest.approx(0.040)  # no fixed cost assumed: an upper bound


def test_call_cost_follows_recent_calls():
    cost = CallCost()
    for _ in range(50):
        cost.observe(4, 0.100)
    for _ in range(100):
        cost.observe(4, 0.010)
    assert cost.seconds(4) == pytest.approx(0.010, rel=0.1)  # 0.95**100: the old calls weigh 0.6%


def test_expected_wait_counts_the_running_call_full_batches_and_its_own_call():
    cost = CallCost()
    for n in (1, 2, 4) * 3:
        cost.observe(n, 0.010 * n)  # d(n) = 10 ms per request
    assert expected_wait(cost, 0, 4) == pytest.approx(0.010)
    assert expected_wait(cost, 3, 4) == pytest.approx(0.040)  # joins the 3 queued: a call of 4
    assert expected_wait(cost, 9, 4) == pytest.approx(2 * 0.040 + 0.020)
    running = expected_wait(cost, 0, 4, running=2, running_for=0.005)
    assert running == pytest.approx(0.015 + 0.010)
    assert expected_wait(cost, 0, 4, running=2, running_for=1.0) == pytest.approx(0.010)


async def test_acts_expected_to_miss_the_deadline_are_refused_before_queueing():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=900)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    for _ in range(5):
        batcher.cost.observe(1, 0.200)  # d(n) = 200 ms per request (no spread: proportional)
    await asyncio.sleep(0.25)  # the running call is past its estimate
    admitted = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bcd"]
    await asyncio.sleep(0)
    assert batcher.queued == 3  # waits 200, 400, 600 ms; the next would join a call of 4: 800 ms
    late = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "efg"]
    await asyncio.sleep(0)
    assert batcher.queued == 4
    outcomes = await asyncio.gather(*late[1:], return_exceptions=True)
    assert all(isinstance(o, Overloaded) for o in outcomes)  # 4 ahead: 800 + 200 ms > 900 ms
    assert all(o.retry_after == pytest.approx(0.1, abs=0.02) for o in outcomes)
    engine.gate.set()
    results = await asyncio.gather(first, *admitted, late[0])
    assert [r.result.action for r in results] == list("abcde")
    assert engine.calls == [["a"], ["b", "c", "d", "e"]]  # the shed ones never reached the engine
    await batcher.close()


async def test_the_queue_bound_refuses_at_once():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, max_queue=2)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    queued = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bc"]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="2 acts queued"):
        await batcher.submit(Req("d"))
    engine.gate.set()
    await asyncio.gather(first, *queued)
    assert engine.calls == [["a"], ["b", "c"]]
    await batcher.close()


async def test_queued_acts_that_would_answer_late_are_shed_at_dispatch():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=100)
    first = asyncio.ensure_future(batcher.submit(Req("a")))  # no call measured: admitted
    await wait_entered(engine)
    queued = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bc"]  # estimates still 0: admitted
    await asyncio.sleep(0.2)
    engine.gate.set()  # the call measured 200 ms: b and c would end 200+ ms past arrival
    assert (await first).result.action == "a"
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(o, Overloaded) and "late" in str(o) for o in outcomes)
    assert engine.calls == [["a"]]
    assert batcher.queued == 0
    await batcher.close()


async def test_the_deadline_counts_from_arrival():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=50)
    for _ in range(5):
        batcher.cost.observe(1, 0.010)
    assert (await batcher.submit(Req("a"), arrived=time.perf_counter() - 0.030)).result.action == "a"
    with pytest.raises(Overloaded):  # d(1) still >= 8 ms after a's (instant) call
        await batcher.submit(Req("b"), arrived=time.perf_counter() - 0.045)
    no_deadline = Batcher(FakeEngine(), max_batch_size=4, max_wait_ms=0)
    assert (await no_deadline.submit(Req("c"), arrived=0.0)).result.action == "c"
    await batcher.close()
    await no_deadline.close()
