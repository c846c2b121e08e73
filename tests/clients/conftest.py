"""Fixtures of the client tests: the real server on both session stores, and client flavours.

``live_server`` is parametrized over the session stores: the in-process store, and a real
``redis-server`` with an append-only file (so stopping and restarting it keeps the sessions).
``make_flavour`` builds clients of the parametrized flavour (see `live_server.Flavour`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import FLAVOURS, KEY, Flavour, LiveServer, server_settings, write_models
from redis_server import RedisServer, redis_server_binary


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_models(tmp_path_factory.mktemp("client-models"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with an append-only file, so a stop and restart keeps every session."""
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    server = RedisServer(
        tmp_path_factory.mktemp("client-redis"), "--appendonly", "yes", "--appendfsync", "always"
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _servers(model_dirs: list[Path], request: pytest.FixtureRequest) -> Iterator[dict[str, LiveServer]]:
    started: dict[str, LiveServer] = {}
    try:
        started["memory"] = LiveServer(server_settings(model_dirs), "memory").start()
        if redis_server_binary() is not None:
            redis = request.getfixturevalue("redis_server")
            started["redis"] = LiveServer(server_settings(model_dirs, redis.url), "redis", redis).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(params=["memory", "redis"])
def live_server(request: pytest.FixtureRequest, _servers: dict[str, LiveServer]) -> Iterator[LiveServer]:
    """The real server on each session store, its injected faults cleared before and after."""
    if request.param not in _servers:
        pytest.skip("redis-server not installed")
    server = _servers[request.param]
    server.faults.clear()
    yield server
    server.faults.clear()


@pytest.fixture
def memory_server(_servers: dict[str, LiveServer]) -> Iterator[LiveServer]:
    """The in-process-store server alone (for tests whose subject is not the store)."""
    server = _servers["memory"]
    server.faults.clear()
    yield server
    server.faults.clear()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Run async tests on asyncio only."""
    return "asyncio"


@pytest.fixture(params=FLAVOURS)
def flavour_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_flavour(flavour_name: str, live_server: LiveServer) -> Iterator[Any]:
    """Builds clients of the parametrized flavour on ``live_server`` (closed at teardown)."""
    made: list[Flavour] = []

    def make(key: str | None = KEY, **options: Any) -> Flavour:
        made.append(Flavour(flavour_name, live_server.url, key, **options))
        return made[-1]

    yield make
    for flavour in made:
        flavour.close()
