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


async def wait_entered(engine: FakeEngine, timeout: float = 5.0) -> None:
    give_up = time.perf_counter() + timeout
    while not engine.entered.is_set():
        assert time.perf_counter() < give_up, "the engine was never called"
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


async def test_acts_expected_to_miss_the_deadline_are_refused_before_queueing():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=1300)
    first = asyncio.ensure_future(batcher.submit(Req("a")))
    await wait_entered(engine)
    for _ in range(5):
        batcher.cost.observe(1, 0.300)  # d(n) = 300 ms per request (no spread: proportional)
    admitted = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bcd"]
    await asyncio.sleep(0)
    assert batcher.queued == 3  # the rest of a's call (300 ms), then a call of 1, 2, 3: 600, 900, 1200 ms
    late = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "efg"]
    outcomes = await asyncio.gather(*late, return_exceptions=True)
    assert all(isinstance(o, Overloaded) for o in outcomes)  # 300 + a call of 4 (1200 ms) > 1300 ms
    retry = [o.retry_after for o in outcomes if isinstance(o, Overloaded)]
    assert retry == pytest.approx([0.2] * 3, abs=0.05)  # less the ms a's call already ran
    engine.gate.set()  # a's call took a few ms: b, c and d now expect 3 * 250 ms from their arrival
    results = await asyncio.gather(first, *admitted)
    assert [r.result.action for r in results] == list("abcd")
    assert engine.calls == [["a"], ["b", "c", "d"]]  # the shed ones never reached the engine
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
    with pytest.raises(Overloaded):  # its deadline has passed: refused even by an idle engine
        await batcher.submit(Req("b"), arrived=time.perf_counter() - 0.060)
    no_deadline = Batcher(FakeEngine(), max_batch_size=4, max_wait_ms=0)
    assert (await no_deadline.submit(Req("c"), arrived=0.0)).result.action == "c"
    await batcher.close()
    await no_deadline.close()


async def test_the_time_after_a_call_counts_toward_the_deadline():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=100)
    for _ in range(5):
        batcher.cost.observe(1, 0.030)
    assert batcher.expected_wait() == pytest.approx(0.030)
    for _ in range(10):
        batcher.observe_after_call(0.080)  # the store write after each call: 30 + 80 ms > 100 ms
    assert batcher.expected_wait() == pytest.approx(0.110)
    first = asyncio.ensure_future(batcher.submit(Req("a")))  # an idle engine runs it anyway
    await wait_entered(engine)
    with pytest.raises(Overloaded):  # behind a running call, the estimate decides
        await batcher.submit(Req("b"))
    engine.gate.set()
    assert (await first).result.action == "a"
    await batcher.close()


async def test_an_idle_engine_serves_whatever_a_stale_estimate_says_and_the_estimate_recovers():
    engine = FakeEngine()
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=100)
    for _ in range(20):
        batcher.cost.observe(1, 0.900)  # one slow start-up: every call expected to take 900 ms
    assert batcher.expected_wait() > 0.1
    for i in range(60):  # one act at a time, as a lone client plays: none is refused
        assert (await batcher.submit(Req(f"s{i}"))).result.action == f"s{i}"
    assert batcher.expected_wait() < 0.1  # the calls that ran brought the estimate down
    await batcher.close()


async def test_acts_queued_behind_a_call_are_shed_at_dispatch_even_when_all_are_late():
    engine = FakeEngine(hold=1)
    batcher = Batcher(engine, max_batch_size=4, max_wait_ms=0, deadline_ms=1000)
    first = asyncio.ensure_future(batcher.submit(Req("a")))  # idle engine: runs whatever the estimates say
    await wait_entered(engine)
    queued = [asyncio.ensure_future(batcher.submit(Req(k))) for k in "bc"]  # no estimate yet: admitted
    await asyncio.sleep(0)
    for _ in range(20):
        batcher.cost.observe(2, 5.0)  # now every call is expected to take 5 s, past both deadlines
    engine.gate.set()
    assert (await first).result.action == "a"
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(o, Overloaded) for o in outcomes)  # the idle rule is for idle engines only
    assert engine.calls == [["a"]]
    assert (await batcher.submit(Req("d"))).result.action == "d"  # idle again: runs, and is measured
    await batcher.close()
