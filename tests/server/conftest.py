"""Fixtures for the server tests: a real redis-server, and session stores over both backends.

Async tests use the anyio pytest plugin (``pytestmark = pytest.mark.anyio``) on asyncio.

- ``redis_server``: one session-wide ``redis-server`` (no persistence) on a free port.
- ``redis_cluster``: one session-wide Redis Cluster (3 masters, a replica each) on free ports.
- ``store_harness``: parametrized over ["memory", "redis", "cluster"]; makes stores of that
  backend, can advance time for TTL tests, and closes everything at teardown. Redis is flushed
  first.
- ``store``: a store from ``store_harness`` with no TTL.
- ``make_checkpoint``: writes a small random checkpoint (DarkRoom spaces unless told otherwise);
  ``tiny_checkpoint``: the session-wide d=32 DarkRoom one (name ``darkroom-test``, version 1);
  ``short_checkpoint``: the same spaces with 4-step episodes (name ``short-test``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from model_factory import write_checkpoint
from redis.asyncio import Redis, RedisCluster
from redis_server import RedisClusterServers, RedisServer, redis_cli_binary, redis_server_binary

from server.store import MemorySessionStore, RedisSessionStore, SessionStore


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Run async tests on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the whole test session (skips if redis-server is missing)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis-shared"), "--appendonly", "no")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster shared by the whole test session: 3 masters with a replica each."""
    if redis_server_binary() is None or redis_cli_binary() is None:
        pytest.skip("redis-server / redis-cli not installed")
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class StoreHarness:
    """Builds stores of one backend and simulates the passage of idle time."""

    def __init__(self, kind: str, redis_url: str | None, admin: Redis | RedisCluster | None) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.admin = admin  # raw client on the same Redis (redis backends only)
        self.clock = FakeClock()
        self._stores: list[Any] = []

    def make(self, ttl_seconds: float | None = None, **kwargs: Any) -> SessionStore:
        """A new store of this backend (closed at teardown)."""
        store: Any
        if self.kind == "memory":
            store = MemorySessionStore(ttl_seconds=ttl_seconds, clock=self.clock, **kwargs)
        else:
            cluster = self.kind == "cluster"
            store = RedisSessionStore(
                self.redis_url or "", ttl_seconds=ttl_seconds, cluster=cluster, **kwargs
            )
        self._stores.append(store)
        return store

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of idle time pass.

        Memory: moves the fake clock. Redis: lowers every key's PTTL by that much (deleting keys
        whose TTL runs out), which is what waiting would do, without the wait.
        """
        if self.admin is None:
            self.clock.now += seconds
            return
        ms = round(seconds * 1000)
        async for key in self.admin.scan_iter(count=1000):
            pttl = await self.admin.pttl(key)
            if pttl < 0:
                continue
            if pttl - ms <= 0:
                await self.admin.delete(key)
            else:
                await self.admin.pexpire(key, pttl - ms)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.aclose()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store_harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    """A `StoreHarness` for each backend; the redis ones start from an empty database."""
    if request.param == "memory":
        harness = StoreHarness("memory", None, None)
    elif request.param == "cluster":
        nodes: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster_admin = RedisCluster.from_url(nodes.url, decode_responses=True)
        await cluster_admin.flushall(target_nodes=RedisCluster.PRIMARIES)
        harness = StoreHarness("cluster", nodes.url, cluster_admin)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        admin = Redis.from_url(server.url, decode_responses=True)
        await admin.flushall()
        harness = StoreHarness("redis", server.url, admin)
    try:
        yield harness
    finally:
        await harness.aclose()
        if harness.admin is not None:
            await harness.admin.aclose()


@pytest.fixture
async def store(store_harness: StoreHarness) -> SessionStore:
    """A store of the parametrized backend, no TTL."""
    return store_harness.make()


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable[..., Path]:
    """`write_checkpoint` as a fixture."""
    return write_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random tiny DarkRoom checkpoint (d=32, 2 layers, 100-step episodes)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "darkroom-test", "darkroom-test", "1")


@pytest.fixture(scope="session")
def short_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DarkRoom spaces, 4-step episodes, 3 context episodes (to reach episode limits quickly)."""
    path = tmp_path_factory.mktemp("ckpt") / "short-test"
    return write_checkpoint(path, "short-test", "1", seed=1, max_episode_steps=4, context_episodes=3)
