"""Faults end to end with two real server replicas on one Redis master that has a replica, the
servers acknowledging a step only once the Redis replica has it (``T2MIR_REDIS_WAIT_REPLICAS=1``).

Every driver records each acknowledged (session, step, action) and compares it afterwards with
what Redis holds: acknowledged steps lost or duplicated must be 0.

- a WebSocket session whose server is SIGKILLed mid-episode continues on the other server;
- a server SIGKILLed under HTTP load;
- the Redis replica not confirming in time: 503 + Retry-After, and the retry of the same step
  answers once the replica is back;
- Redis reaching ``maxmemory`` (noeviction): 503 + Retry-After, nothing lost, recovery once
  memory is freed.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from redis import Redis
from redis.exceptions import OutOfMemoryError
from redis_server import RedisServer, redis_server_binary, start_replicated
from server_process import TEST_API_KEYS, ServerClient, ServerProcess

from clients import ConnectionFailed, Session, T2MIRClient
from clients.ws import SyncWebSocketSession
from server.store import RedisSessionStore

KEY = TEST_API_KEYS[0]
EPISODE = 12
"""Acts per episode in the drivers: a reset, steps, and the done act."""


@dataclass
class Cluster:
    """Redis master + replica and two server replicas on the master."""

    master: RedisServer
    replica: RedisServer
    servers: list[ServerProcess]

    def live(self, index: int) -> ServerProcess:
        """Server ``index``, restarted first if a test killed it."""
        server = self.servers[index]
        if not server.running:
            server.start()
        return server


@pytest.fixture(scope="module")
def two_replicas(tiny_checkpoint, tmp_path_factory) -> Iterator[Cluster]:
    if redis_server_binary() is None:
        pytest.skip("redis-server not installed")
    master, replica = start_replicated(
        tmp_path_factory.mktemp("fo-master"), tmp_path_factory.mktemp("fo-replica")
    )
    env = {"T2MIR_API_KEYS": KEY, "T2MIR_REDIS_WAIT_REPLICAS": "1", "T2MIR_REDIS_WAIT_TIMEOUT_MS": "300"}
    servers = [ServerProcess([tiny_checkpoint], redis_url=master.url, env=env) for _ in range(2)]
    try:
        ServerProcess.start_all(servers)
        yield Cluster(master, replica, servers)
    finally:
        for server in servers:
            server.close()
        replica.close()
        master.close()


def observation(step: int) -> list[float]:
    return [float(step % 7), float(step % 5)]


@dataclass
class Acked:
    """Acknowledged (step, action) pairs of one session, in order."""

    session_id: str
    steps: list[tuple[int, object]] = field(default_factory=list)


@dataclass
class Stored:
    """What Redis holds for a session: next step, closed episodes, (step, action) of kept records."""

    next_step: int
    closed_episodes: int
    records: list[tuple[int, object]]


def stored(redis: RedisServer, session_id: str) -> Stored:
    """Read the session back through the store (retention may have dropped old episodes)."""

    async def load() -> Stored:
        store = RedisSessionStore(redis.url)
        try:
            state = await store.load(session_id)
        finally:
            await store.aclose()
        assert state is not None, session_id
        records = [r for e in state.episodes for r in e.records] + state.current
        return Stored(state.meta.next_step, len(state.meta.returns), [(r.step, r.action) for r in records])

    return asyncio.run(load())


def lost_and_duplicated(redis: RedisServer, acked: Acked, in_flight_ok: bool = False) -> tuple[int, int]:
    """Compare a session's acknowledged steps with Redis: (lost, duplicated).

    The store accepts only step == next_step, so it holds steps 0 .. next_step - 1: an
    acknowledged step at or past next_step is lost, and every stored step beyond the acknowledged
    ones a duplicate (a step applied again under a new number), except - with ``in_flight_ok`` -
    the one that was in flight when a server died. The records retention kept must carry the
    acknowledged actions, each step once, and every acknowledged done act must have closed an
    episode.
    """
    held = stored(redis, acked.session_id)
    steps = [s for s, _ in held.records]
    assert len(steps) == len(set(steps)), f"{acked.session_id}: a step is stored twice"
    answers = dict(acked.steps)
    assert all(answers.get(s, a) == a for s, a in held.records), (
        "an acknowledged action differs from the stored one"
    )
    lost = sum(1 for s, _ in acked.steps if s >= held.next_step)
    extra = held.next_step - len(acked.steps)
    duplicated = max(0, extra - (1 if in_flight_ok else 0))
    done_acked = sum(1 for s, _ in acked.steps if s % EPISODE == EPISODE - 1)
    assert held.closed_episodes - done_acked in ((0, 1) if in_flight_ok else (0,))
    return lost, duplicated


def act_once(session: Session, at: int, step: int) -> object:
    """One act of the driver's episodes (``at``: position in the episode)."""
    if at == 0:
        return session.reset(observation(step))
    if at == EPISODE - 1:
        session.end(observation(step), 1.0)
        return None
    return session.step(observation(step), 0.5)


def test_websocket_session_fails_over_to_the_other_replica(two_replicas: Cluster) -> None:
    a, b = two_replicas.live(0), two_replicas.live(1)
    session_id = f"wsfo-{uuid.uuid4().hex[:8]}"
    client_a = T2MIRClient(a.url, KEY, timeout=2.0, retries=1, backoff=0.05)
    client_b = T2MIRClient(b.url, KEY, timeout=5.0, retries=3, backoff=0.05)
    session = Session.create(client_a, session_id=session_id, websocket=True)
    acked = Acked(session_id)
    total, kill_after = 4 * EPISODE, EPISODE + EPISODE // 2  # dies mid-way through the 2nd episode
    killer = threading.Thread(
        target=lambda: (wait_for(lambda: len(acked.steps) >= kill_after), a.proc.kill())
    )
    failovers = 0
    try:
        killer.start()
        while session.next_step < total:
            step = session.next_step
            try:
                action = (
                    act_once(session, step % EPISODE, step) if session.pending is None else session.retry()
                )
            except ConnectionFailed:
                # the socket to A died (and A is gone): same session, same pending step, on B
                assert session.pending is not None and failovers == 0
                failovers += 1
                session.channel.close()
                session.client, session.channel = (
                    client_b,
                    SyncWebSocketSession(b.url, session_id, KEY, timeout=5.0, retries=3, backoff=0.05),
                )
                continue
            acked.steps.append((step, action))
        killer.join()
    finally:
        session.close()
        client_a.close()
        client_b.close()
    lost, duplicated = lost_and_duplicated(two_replicas.master, acked)
    print(
        f"\nwebsocket failover: {len(acked.steps)} steps acknowledged, lost {lost}, duplicated {duplicated}"
    )
    assert failovers == 1 and not a.running
    assert [s for s, _ in acked.steps] == list(range(total))
    assert (lost, duplicated) == (0, 0)
    with ServerClient(b.url, KEY) as c:
        assert c.session(session_id).json()["step"] == total


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_server_killed_under_load_loses_nothing(two_replicas: Cluster) -> None:
    server = two_replicas.live(1)
    sessions = [Acked(f"kill-{i}-{uuid.uuid4().hex[:6]}") for i in range(4)]
    with ServerClient(server.url, KEY) as c:
        for s in sessions:
            assert c.create(session_id=s.session_id).status_code == 201

    def hammer(acked: Acked) -> None:
        with ServerClient(server.url, KEY, timeout=10) as mine:
            for step in range(100_000):
                at = step % EPISODE
                try:
                    response = mine.act(
                        acked.session_id,
                        step,
                        observation(step),
                        None if at == 0 else 0.5,
                        done=at == EPISODE - 1,
                    )
                except httpx.HTTPError:
                    return  # the server died
                assert response.status_code == 200, response.text
                acked.steps.append((step, response.json()["action"]))

    with ThreadPoolExecutor(len(sessions)) as pool:
        futures = [pool.submit(hammer, s) for s in sessions]
        wait_for(lambda: all(len(s.steps) >= 2 * EPISODE for s in sessions))
        server.proc.kill()
        for f in futures:
            f.result()
    counts = [lost_and_duplicated(two_replicas.master, s, in_flight_ok=True) for s in sessions]
    acked_total = sum(len(s.steps) for s in sessions)
    lost, duplicated = map(sum, zip(*counts, strict=True))
    print(
        f"\nserver SIGKILL: {acked_total} steps acknowledged over 4 sessions, lost {lost}, duplicated {duplicated}"
    )
    assert (lost, duplicated) == (0, 0)


def assert_503(response: httpx.Response, code: str = "store_unavailable") -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == code


def test_unconfirmed_step_answers_503_and_its_retry_the_stored_answer(two_replicas: Cluster) -> None:
    server = two_replicas.live(0)
    session_id = f"wait-{uuid.uuid4().hex[:8]}"
    with ServerClient(server.url, KEY) as c:
        assert c.create(session_id=session_id).status_code == 201
        assert c.act(session_id, 0, observation(0)).status_code == 200
        two_replicas.replica.pause()
        try:
            assert_503(c.act(session_id, 1, observation(1), 0.5))
        finally:
            two_replicas.replica.resume()
        retried = c.act(session_id, 1, observation(1), 0.5)
        assert retried.status_code == 200, retried.text
        assert c.act(session_id, 2, observation(2), 0.5).status_code == 200
        assert c.session(session_id).json()["step"] == 3
    held = stored(two_replicas.master, session_id)
    assert (held.next_step, [s for s, _ in held.records]) == (3, [0, 1, 2])


def fill_until_refused(admin: Redis) -> list[str]:
    """Write ballast keys, smaller and smaller, until even a tiny write is refused (OOM)."""
    keys: list[str] = []
    for size in (256 * 1024, 16 * 1024, 1024, 16):
        while True:
            key = f"ballast:{len(keys)}"
            try:
                admin.set(key, "x" * size)
            except OutOfMemoryError:
                break
            keys.append(key)
    with pytest.raises(OutOfMemoryError):
        admin.set("ballast:probe", "1")
    return keys


def test_redis_maxmemory_answers_503_loses_nothing_and_recovers(two_replicas: Cluster) -> None:
    server, master = two_replicas.live(0), two_replicas.master
    session_id = f"oom-{uuid.uuid4().hex[:8]}"
    acked = Acked(session_id)
    admin = Redis.from_url(master.url, decode_responses=True)
    with ServerClient(server.url, KEY) as c:
        assert c.create(session_id=session_id).status_code == 201

        def act(step: int) -> httpx.Response:
            at = step % EPISODE
            return c.act(
                session_id, step, observation(step), None if at == 0 else 0.5, done=at == EPISODE - 1
            )

        step = 0
        for step in range(EPISODE + 3):
            response = act(step)
            assert response.status_code == 200, response.text
            acked.steps.append((step, response.json()["action"]))
        try:
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", str(used + 4 * 1024 * 1024))
            ballast = fill_until_refused(admin)
            refused = act(step + 1)
            assert_503(refused)
            assert c.http.get("/readyz").status_code in (200, 503)  # answers, whatever it says
        finally:
            admin.delete(*ballast)
            admin.config_set("maxmemory", "0")
        for later in range(step + 1, 3 * EPISODE):  # the refused step first: same step, now accepted
            response = act(later)
            assert response.status_code == 200, response.text
            acked.steps.append((later, response.json()["action"]))
    admin.close()
    lost, duplicated = lost_and_duplicated(master, acked)
    print(
        f"\nmaxmemory: {len(acked.steps)} steps acknowledged, 1 refused (503), lost {lost}, duplicated {duplicated}"
    )
    assert (lost, duplicated) == (0, 0)
