"""Faults end to end: a real server on its own real redis-server (AOF, fsync always), which the
test stops and restarts; then a graceful shutdown under load.

While Redis is down every session call answers 503 with Retry-After and nothing changes; once
Redis is back the server recovers by itself and the session continues with the actions an
uninterrupted run gives.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis import Redis
from redis_server import RedisServer
from server_process import TEST_API_KEYS, ServerClient, ServerProcess
from websockets.sync.client import connect

from server.store.redis_store import KEY_SUFFIXES

KEY = TEST_API_KEYS[0]


@pytest.fixture(scope="module")
def faulty(tiny_checkpoint, tmp_path_factory):
    redis = RedisServer(
        tmp_path_factory.mktemp("redis-faults"), "--appendonly", "yes", "--appendfsync", "always"
    )
    redis.start()
    server = ServerProcess([tiny_checkpoint], redis_url=redis.url, env={"T2MIR_API_KEYS": KEY})
    try:
        server.start()
        yield redis, server
    finally:
        server.close()
        redis.close()


def raw_state(redis: RedisServer, session_id: str) -> dict:
    with Redis.from_url(redis.url, decode_responses=True) as r:
        meta, cur, eps, rank, rets = (f"t2mir:{{{session_id}}}:{s}" for s in KEY_SUFFIXES)
        return {
            "meta": r.hgetall(meta),
            "cur": r.lrange(cur, 0, -1),
            "eps": r.hgetall(eps),
            "rank": r.zrange(rank, 0, -1, withscores=True),
            "rets": r.lrange(rets, 0, -1),
        }


def play(c: ServerClient, session_id: str, steps: range) -> list[int]:
    out = []
    for step in steps:
        response = c.act(session_id, step, [float(step % 10), 2.0], None if step == 0 else 0.0)
        assert response.status_code == 200, response.text
        out.append(response.json()["action"])
    return out


def assert_503(response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "store_unavailable"


def test_store_outage_answers_503_then_recovers(faulty):
    redis, server = faulty
    session_id = f"outage-{uuid.uuid4().hex[:8]}"
    with ServerClient(server.url, KEY) as c:
        assert c.create(session_id=session_id).status_code == 201
        reference = play(c, session_id, range(0, 10))
        assert c.delete(session_id).status_code == 204
        assert c.create(session_id=session_id).status_code == 201
        first = play(c, session_id, range(0, 5))
        before = (raw_state(redis, session_id), c.session(session_id).json())

        redis.stop()
        assert_503(c.act(session_id, 5, [5.0, 2.0], 0.0))
        assert_503(c.session(session_id))
        assert_503(c.create())
        assert_503(c.delete(session_id))
        assert c.http.get("/readyz").status_code == 503
        assert c.http.get("/healthz").status_code == 200
        with connect(
            f"{server.ws_url}/sessions/{session_id}/ws", additional_headers={"X-API-Key": KEY}
        ) as ws:
            ws.send(json.dumps({"step": 5, "observation": [5.0, 2.0], "reward": 0.0}))
            frame = json.loads(ws.recv())
            assert (frame["status"], frame["error"]["code"]) == (503, "store_unavailable")
            assert frame["retry_after"] >= 1

        redis.start()
        deadline = time.monotonic() + 20
        while c.http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "server did not recover"
            time.sleep(0.1)
        assert (raw_state(redis, session_id), c.session(session_id).json()) == before
        assert first + play(c, session_id, range(5, 10)) == reference
        metrics = c.metrics()
        assert 't2mir_act_requests_total{status="503"}' in metrics
    assert '"msg":"session store unavailable"' in server.logs()


def test_graceful_shutdown_answers_what_it_accepted(faulty):
    redis, server = faulty
    sessions = [f"drain-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    with ServerClient(server.url, KEY) as c:
        for session_id in sessions:
            assert c.create(session_id=session_id).status_code == 201

    episode = 30  # act steps per episode, then one done=true request: stays under max_episode_steps

    def hammer(session_id: str) -> list[int]:
        statuses = []
        with ServerClient(server.url, KEY, timeout=10) as mine:
            for step in range(100 * (episode + 1)):  # far more than the server answers before it stops
                at = step % (episode + 1)
                observation, reward = [float(at % 10), 1.0], None if at == 0 else 0.0
                try:
                    response = mine.act(session_id, step, observation, reward, done=at == episode)
                except httpx.HTTPError:
                    break  # the server stopped accepting
                statuses.append(response.status_code)
                if response.status_code != 200:
                    break
        return statuses

    with ThreadPoolExecutor(len(sessions)) as pool:
        futures = [pool.submit(hammer, s) for s in sessions]
        time.sleep(1.0)
        rc = server.stop()
        results = [f.result() for f in futures]
    assert rc is not None
    for session_id, statuses in zip(sessions, results, strict=True):
        ok = [s for s in statuses if s == 200]
        assert statuses[: len(ok)] == ok and set(statuses[len(ok) :]) <= {503}  # no 500, nothing odd
        stored = raw_state(redis, session_id)
        assert int(stored["meta"]["next_step"]) == len(ok)  # acknowledged == stored, nothing half-written
        assert len(stored["cur"]) == len(ok) % (episode + 1)
        assert len(stored["rets"]) == len(ok) // (episode + 1)
    logs = server.logs()
    records = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["msg"] == "shutdown complete" for r in records)
    assert KEY not in logs
