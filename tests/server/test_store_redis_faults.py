"""Redis store: key layout, TTLs, and behaviour when Redis crashes, hangs or refuses writes.

Uses its own redis-server with ``--appendonly yes --appendfsync always`` (acknowledged writes
are on disk), which the tests kill -9, pause and restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import exceptions as rexc
from redis.asyncio import Redis
from redis_server import RedisServer, free_port, redis_server_binary

from server.store import (
    AppendRequest,
    RedisSessionStore,
    Retention,
    SessionMeta,
    StepRecord,
    StoreUnavailable,
    is_unavailable_error,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def aof_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A durable redis-server private to this module."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(
        tmp_path_factory.mktemp("redis-aof"), "--appendonly", "yes", "--appendfsync", "always"
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def admin(aof_server: RedisServer) -> AsyncIterator[Redis]:
    """A raw client on an empty, running database (restarts the server if a test left it down)."""
    if not aof_server.running:
        aof_server.start()
    aof_server.resume()
    client = Redis.from_url(aof_server.url, decode_responses=True)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(aof_server: RedisServer, admin: Redis) -> AsyncIterator[RedisSessionStore]:
    """A store with short timeouts on the durable server."""
    s = RedisSessionStore(aof_server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retries=1)
    try:
        yield s
    finally:
        await s.aclose()


def meta(sid: str = "s1", count: int = 2) -> SessionMeta:
    return SessionMeta(sid, "", "m", "v1", "ad", Retention("best", count))


def rec(step: int, reward: float | None = 1.0, done: bool = False) -> StepRecord:
    return StepRecord(step, [float(step)], reward, None if done else step % 3, done)


async def fill(store: RedisSessionStore, steps: int, episode_len: int = 5, sid: str = "s1") -> None:
    """Append ``steps`` records, closing an episode every ``episode_len`` steps."""
    for step in range(steps):
        pos = step % episode_len
        out = await store.append(
            sid, rec(step, None if pos == 0 else float(step), pos == episode_len - 1), {"a": step}
        )
        assert out.status == "appended"


def snap(state: object) -> str:
    return json.dumps(state.to_dict(), sort_keys=True)  # type: ignore[attr-defined]


async def test_key_layout_and_hash_tag(
    store: RedisSessionStore, admin: Redis, aof_server: RedisServer
) -> None:
    await store.create(meta("a:b.c", count=1))
    await fill(store, 12, sid="a:b.c")
    keys = sorted(await admin.keys("*"))
    assert keys == sorted(f"t2mir:{{a:b.c}}:{k}" for k in ("meta", "cur", "eps", "rank", "rets"))
    types = {k.rsplit(":", 1)[1]: await admin.type(k) for k in keys}
    assert types == {"meta": "hash", "cur": "list", "eps": "hash", "rank": "zset", "rets": "list"}
    assert await admin.hlen("t2mir:{a:b.c}:eps") == 1 and await admin.llen("t2mir:{a:b.c}:rets") == 2
    other = RedisSessionStore(aof_server.url, key_prefix="app2")
    try:
        assert await other.get_meta("a:b.c") is None
        await other.create(meta("a:b.c"))
        assert (await store.get_meta("a:b.c")).next_step == 12
        assert any(k.startswith("app2:{a:b.c}:") for k in await admin.keys("*"))
    finally:
        await other.aclose()
    with pytest.raises(ValueError):
        RedisSessionStore(aof_server.url, key_prefix="x{y}")


async def test_every_key_carries_the_idle_ttl(aof_server: RedisServer, admin: Redis) -> None:
    store = RedisSessionStore(aof_server.url, ttl_seconds=30)
    try:
        await store.create(meta())
        await fill(store, 7)
        keys = store.keys("s1")
        for key in keys:
            assert 25_000 < await admin.pttl(key) <= 30_000, key
            await admin.pexpire(key, 1000)
        await store.load("s1")
        assert min([await admin.pttl(k) for k in keys]) > 25_000
        await store.append("s1", rec(7), {})
        for key in keys:
            await admin.pexpire(key, 1000)
        assert (await store.append("s1", rec(7), {})).status == "duplicate"  # touch on retry too
        assert min([await admin.pttl(k) for k in keys]) > 25_000
    finally:
        await store.aclose()


async def test_real_expiry(aof_server: RedisServer, admin: Redis) -> None:
    store = RedisSessionStore(aof_server.url, ttl_seconds=0.3)
    try:
        await store.create(meta())
        await fill(store, 6)
        await asyncio.sleep(0.45)
        assert await store.get_meta("s1") is None
        assert await admin.dbsize() == 0
    finally:
        await store.aclose()


async def test_script_cache_flush_falls_back_to_load(store: RedisSessionStore, admin: Redis) -> None:
    await store.create(meta())
    await admin.script_flush()
    assert (await store.append("s1", rec(0, None), {"a": 0})).status == "appended"
    await admin.script_flush()
    assert (await store.load("s1")).meta.next_step == 1


async def test_acknowledged_appends_survive_kill_9(store: RedisSessionStore, aof_server: RedisServer) -> None:
    await store.create(meta(count=3))
    await fill(store, 23)
    before = snap(await store.load("s1"))
    aof_server.kill()
    aof_server.start()
    assert snap(await store.load("s1")) == before  # same store object, no restart of it
    assert (await store.append("s1", rec(23), {})).status == "appended"


@pytest.mark.parametrize("retries", [0, 1])
async def test_down_fails_fast_then_recovers(aof_server: RedisServer, admin: Redis, retries: int) -> None:
    store = RedisSessionStore(aof_server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retries=retries)
    try:
        await store.create(meta())
        await fill(store, 8)
        before = snap(await store.load("s1"))
        aof_server.kill()
        calls = {
            "ping": store.ping,
            "create": lambda: store.create(meta("s2")),
            "load": lambda: store.load("s1"),
            "get_meta": lambda: store.get_meta("s1"),
            "append": lambda: store.append("s1", rec(8), {"a": 8}),
            "append_many": lambda: store.append_many(
                [AppendRequest("s1", rec(8), {}), AppendRequest("s2", rec(0), {})]
            ),
            "delete": lambda: store.delete("s1"),
        }
        for name, call in calls.items():
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call()
            assert time.monotonic() - t0 < 2.0, name
        aof_server.start()
        # the failed append and delete left nothing behind; the same object works again
        assert snap(await store.load("s1")) == before
        assert await store.get_meta("s2") is None
        assert (await store.append("s1", rec(8), {"a": 8})).status == "appended"
        await store.ping()
    finally:
        await store.aclose()


async def test_hung_redis_times_out_and_leaves_no_partial_state(
    store: RedisSessionStore, aof_server: RedisServer
) -> None:
    await store.create(meta())
    await fill(store, 4)  # the next record closes an episode: the biggest script
    before = await store.load("s1")
    aof_server.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.append("s1", rec(4, 4.0, done=True), {"a": 4})
        assert time.monotonic() - t0 < 3.0
    finally:
        aof_server.resume()
    # Redis may still run the queued script after SIGCONT: all of it or nothing, never half
    state = await store.load("s1")
    if state.meta.next_step == 4:
        assert snap(state) == snap(before)
        assert (await store.append("s1", rec(4, 4.0, done=True), {"a": 4})).status == "appended"
    else:
        out = await store.append("s1", rec(4, 4.0, done=True), {"a": 4})
        assert out.status == "duplicate" and out.response == {"a": 4}
    state = await store.load("s1")
    assert state.current == [] and state.meta.returns == [10.0] and state.meta.episode == 1
    assert [r.step for r in state.episodes[0].records] == [0, 1, 2, 3, 4]


async def test_read_only_replica_is_unavailable_for_writes(store: RedisSessionStore, admin: Redis) -> None:
    await store.create(meta())
    await fill(store, 3)
    await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        with pytest.raises(StoreUnavailable):
            await store.append("s1", rec(3), {})
        with pytest.raises(StoreUnavailable):
            await store.create(meta("s2"))
        assert (await store.get_meta("s1")).next_step == 3  # reads still served
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")
    assert (await store.append("s1", rec(3), {})).status == "appended"


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (rexc.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (rexc.ConnectionError("refused"), True),
        (rexc.TimeoutError("timeout"), True),
        (rexc.ReadOnlyError("You can't write against a read only replica."), True),
        (rexc.ResponseError("BUSY Redis is busy running a script"), True),
        (rexc.ResponseError("MASTERDOWN Link with MASTER is down"), True),
        (ConnectionRefusedError(), True),
        (rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (rexc.DataError("bad"), False),
    ],
)
def test_unavailable_error_classification(exc: BaseException, unavailable: bool) -> None:
    assert is_unavailable_error(exc) is unavailable
