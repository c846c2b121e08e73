"""The Redis store beyond one node: a real Redis Cluster (3 masters, a replica each), and
replica-acknowledged writes (``wait_replicas``, Redis ``WAIT``).

The store contract itself runs on the cluster through the ``store_harness`` parametrization
(tests/server/test_store_contract.py); here: slot layout, WAIT semantics and its failure mode,
and a master SIGKILLed under load with every acknowledged step counted afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from redis import Redis as SyncRedis
from redis_server import (
    RedisClusterServers,
    RedisServer,
    redis_server_binary,
    start_replicated,
)

from server.store import (
    AppendRequest,
    RedisSessionStore,
    Retention,
    SessionMeta,
    StepRecord,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio

EPISODE = 8
"""Steps per episode in the drivers (the last one is the done record)."""


def meta(sid: str) -> SessionMeta:
    """A session that keeps every closed episode (so every step can be counted afterwards)."""
    return SessionMeta(sid, "owner", "m", "v1", "dpt", Retention("last", 10_000), created_at=1.0)


def action_of(sid: str, step: int) -> int:
    """The action the driver records for ``step`` (differs between sessions and steps)."""
    return (sum(map(ord, sid)) * 31 + step) % 1000


def rec(sid: str, step: int) -> StepRecord:
    """Step ``step`` of the driver's episodes: ``EPISODE`` records, the last one done."""
    at = step % EPISODE
    done = at == EPISODE - 1
    return StepRecord(
        step, [float(step), 1.0], None if at == 0 else 0.5, None if done else action_of(sid, step), done
    )


@dataclass
class Tally:
    """What a load driver saw: acknowledged steps per session and refused attempts."""

    acked: dict[str, list[int]] = field(default_factory=dict)
    unavailable: int = 0
    wrong_answers: list[str] = field(default_factory=list)


async def drive(
    store: RedisSessionStore, sid: str, tally: Tally, stop: asyncio.Event, deadline: float
) -> None:
    """Append steps 0, 1, ... to ``sid`` until ``stop``; a refused step is retried as is."""
    acked = tally.acked.setdefault(sid, [])
    step = 0
    while not stop.is_set():
        assert time.monotonic() < deadline, f"{sid}: step {step} not acknowledged in time"
        try:
            out = await store.append(sid, rec(sid, step), {"action": action_of(sid, step)})
        except StoreUnavailable:
            tally.unavailable += 1
            await asyncio.sleep(0.02)
            continue
        if out.status == "duplicate" and out.response != {"action": action_of(sid, step)}:
            tally.wrong_answers.append(f"{sid}:{step} answered {out.response}")
        elif out.status not in ("appended", "duplicate"):
            tally.wrong_answers.append(f"{sid}:{step} {out.status}")
            return
        acked.append(step)
        step += 1


async def count_lost_and_duplicated(store: RedisSessionStore, tally: Tally) -> tuple[int, int]:
    """Compare what was acknowledged with what the store holds: (lost, duplicated) steps."""
    lost = duplicated = 0
    for sid, acked in tally.acked.items():
        state = await store.load(sid)
        assert state is not None, sid
        records = [r for e in state.episodes for r in e.records] + state.current
        steps = [r.step for r in records]
        duplicated += len(steps) - len(set(steps))
        lost += len(set(acked) - set(steps))
        assert steps == list(range(state.meta.next_step)), f"{sid}: stored steps out of order"
        assert acked == list(range(len(acked))) and state.meta.next_step in (len(acked), len(acked) + 1)
        for r in records:
            assert r.action == (None if r.done else action_of(sid, r.step)), f"{sid}:{r.step}"
    return lost, duplicated


# --- layout ---------------------------------------------------------------------------------


async def test_sessions_spread_over_masters_and_keep_one_slot(redis_cluster: RedisClusterServers) -> None:
    store = RedisSessionStore(redis_cluster.url, cluster=True)
    try:
        owners = set()
        for i in range(24):
            sid = f"spread-{i}"
            await store.create(meta(sid))
            assert (await store.append(sid, rec(sid, 0), {"a": 0})).status == "appended"
            keys = store.keys(sid)
            assert len({store.client.keyslot(k) for k in keys}) == 1
            owners.add(redis_cluster.master_of_key(keys[0]))
            assert await store.delete(sid)
        assert len(owners) == redis_cluster.masters
    finally:
        await store.aclose()


# --- WAIT: one master and its replica ------------------------------------------------------


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and one replica of it (no persistence)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    master, replica = start_replicated(
        tmp_path_factory.mktemp("wait-master"), tmp_path_factory.mktemp("wait-replica")
    )
    try:
        yield master, replica
    finally:
        replica.close()
        master.close()


@pytest.fixture
async def waiting_store(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[RedisSessionStore]:
    """A store on the master that waits for 1 replica, 1.5 s at most (loopback replication takes
    well under a millisecond; the margin is for a busy machine)."""
    master, _ = replicated
    store = RedisSessionStore(master.url, wait_replicas=1, wait_timeout_ms=1500)
    await store.client.flushall()
    try:
        yield store
    finally:
        await store.aclose()


async def test_acknowledged_step_is_on_the_replica(
    waiting_store: RedisSessionStore, replicated: tuple[RedisServer, RedisServer]
) -> None:
    _, replica = replicated
    await waiting_store.create(meta("w1"))
    with SyncRedis.from_url(replica.url, decode_responses=True) as on_replica:
        for step in range(20):
            assert (await waiting_store.append("w1", rec("w1", step), {"s": step})).status == "appended"
            # no polling: WAIT returned, so the replica already applied the step
            assert on_replica.hget(waiting_store.keys("w1")[0], "next_step") == str(step + 1)


async def test_unconfirmed_step_is_refused_then_its_retry_answers_the_stored_response(
    waiting_store: RedisSessionStore, replicated: tuple[RedisServer, RedisServer]
) -> None:
    _, replica = replicated
    await waiting_store.create(meta("w2"))
    assert (await waiting_store.append("w2", rec("w2", 0), {"s": 0})).status == "appended"
    replica.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="0 of 1 replica"):
            await waiting_store.append("w2", rec("w2", 1), {"s": 1})
        assert time.monotonic() - started < 3.0  # the WAIT timeout, not a hang
        with pytest.raises(StoreUnavailable):  # the retry waits for the replica again
            await waiting_store.append("w2", rec("w2", 1), {"s": 1})
    finally:
        replica.resume()
    out = await waiting_store.append("w2", rec("w2", 1), {"s": 1})
    assert (out.status, out.response) == ("duplicate", {"s": 1})  # it was stored, exactly once
    state = await waiting_store.load("w2")
    assert state is not None and [r.step for r in state.current] == [0, 1]
    assert (await waiting_store.append("w2", rec("w2", 2), {"s": 2})).status == "appended"


async def test_batched_appends_are_acknowledged_once_the_replica_has_them(
    waiting_store: RedisSessionStore, replicated: tuple[RedisServer, RedisServer]
) -> None:
    """`append_many` waits once for the whole pipeline; unconfirmed, every append of it is refused
    and each retry answers its stored response."""
    _, replica = replicated
    sessions = ["b1", "b2", "b3"]
    for sid in sessions:
        await waiting_store.create(meta(sid))
    outcomes = await waiting_store.append_many([AppendRequest(s, rec(s, 0), {"s": 0}) for s in sessions])
    assert [getattr(o, "status", o) for o in outcomes] == ["appended"] * 3
    with SyncRedis.from_url(replica.url, decode_responses=True) as on_replica:
        assert [on_replica.hget(waiting_store.keys(s)[0], "next_step") for s in sessions] == ["1"] * 3
    replica.pause()
    try:
        with pytest.raises(StoreUnavailable, match="0 of 1 replica"):
            await waiting_store.append_many([AppendRequest(s, rec(s, 1), {"s": 1}) for s in sessions])
    finally:
        replica.resume()
    outcomes = await waiting_store.append_many([AppendRequest(s, rec(s, 1), {"s": 1}) for s in sessions])
    assert [(getattr(o, "status", o), getattr(o, "response", o)) for o in outcomes] == [
        ("duplicate", {"s": 1})
    ] * 3


async def test_batched_appends_on_a_cluster_wait_per_node(redis_cluster: RedisClusterServers) -> None:
    """On a cluster, each append of a batch is acknowledged by its own master's replica."""
    store = RedisSessionStore(redis_cluster.url, cluster=True, wait_replicas=1, wait_timeout_ms=1500)
    sessions = [f"batched-{i}" for i in range(6)]  # spread over the masters
    try:
        for sid in sessions:
            await store.delete(sid)
            await store.create(meta(sid))
        for step in range(3):
            outcomes = await store.append_many(
                [AppendRequest(s, rec(s, step), {"s": step}) for s in sessions]
            )
            assert [getattr(o, "status", o) for o in outcomes] == ["appended"] * len(sessions)
        for sid in sessions:
            assert (await store.get_meta(sid)).next_step == 3  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_without_replicas_every_write_is_refused(replicated: tuple[RedisServer, RedisServer]) -> None:
    master, _ = replicated
    store = RedisSessionStore(master.url, wait_replicas=2, wait_timeout_ms=50)  # only one exists
    try:
        with pytest.raises(StoreUnavailable, match="1 of 2 replica"):
            await store.create(meta("w3"))
    finally:
        await store.aclose()


# --- a cluster master SIGKILLed under load -------------------------------------------------


async def test_master_killed_under_load_loses_and_duplicates_nothing(
    redis_cluster: RedisClusterServers,
) -> None:
    store = RedisSessionStore(redis_cluster.url, cluster=True, wait_replicas=1, wait_timeout_ms=500)
    sessions = [f"failover-{i}" for i in range(12)]
    tally = Tally()
    stop = asyncio.Event()
    try:
        for sid in sessions:
            await store.create(meta(sid))
        victim_key = store.keys(sessions[0])[0]
        victim = redis_cluster.master_of_key(victim_key)
        on_victim = [s for s in sessions if redis_cluster.master_of_key(store.keys(s)[0]) == victim]
        deadline = time.monotonic() + 90
        tasks = [asyncio.create_task(drive(store, sid, tally, stop, deadline)) for sid in sessions]

        async def until(condition: object) -> None:
            while not condition():  # type: ignore[operator]
                assert time.monotonic() < deadline and not any(t.done() for t in tasks)
                await asyncio.sleep(0.02)

        await until(lambda: all(len(tally.acked.get(s, [])) >= 20 for s in sessions))
        redis_cluster.node(victim).kill()  # SIGKILL, mid-load
        killed_at = {s: len(tally.acked[s]) for s in sessions}
        promoted = await asyncio.to_thread(redis_cluster.wait_master_elsewhere, victim, victim_key)
        redis_cluster.node(victim).start()  # back, empty: becomes the promoted master's replica
        await asyncio.to_thread(redis_cluster.wait_healthy)
        await until(lambda: all(len(tally.acked[s]) >= killed_at[s] + 20 for s in sessions))
        stop.set()
        await asyncio.gather(*tasks)
        lost, duplicated = await count_lost_and_duplicated(store, tally)
    finally:
        stop.set()
        await store.aclose()
    acked = sum(map(len, tally.acked.values()))
    print(
        f"\ncluster failover: {acked} steps acknowledged over {len(sessions)} sessions "
        f"({len(on_victim)} on the killed master {victim}, promoted {promoted}), "
        f"{tally.unavailable} refused attempts, lost {lost}, duplicated {duplicated}"
    )
    assert tally.wrong_answers == []
    assert (lost, duplicated) == (0, 0)
    assert on_victim and tally.unavailable > 0  # the kill was felt
