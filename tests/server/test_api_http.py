"""The API through real server processes, once on the in-process store and once on Redis (the same
tests: the behaviour is shared). Every error status is produced by a real request and must leave
the stored session exactly as it was.

Concurrency semantics under test: acts of one session are handled one at a time in arrival order,
each judged against the state the previous one left. N concurrent copies of the next step: one
computes and stores the answer, the others return that stored answer (all identical, one
record). Step n and n+1 sent together: either both succeed (n was first) or n+1 gets 409 with
``expected_step = n`` (it was first).
"""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from redis import Redis
from server_process import TEST_API_KEYS, ServerClient, ServerProcess, without_timings
from websockets.sync.client import connect

from server.store.redis_store import KEY_SUFFIXES

KEY, OTHER = TEST_API_KEYS
MAX_BODY = 4096
DARK, SHORT = "darkroom-test", "short-test"


@pytest.fixture(scope="module")
def servers(request, tiny_checkpoint, short_checkpoint, tmp_path_factory):
    """A memory-store and a Redis-store server (API keys on, 4 KiB body limit), started together.

    Without redis-server installed only the memory-store server runs (the Redis cases skip).
    """
    try:
        redis_url = request.getfixturevalue("redis_server").url
    except pytest.skip.Exception:
        redis_url = None
    private = tmp_path_factory.mktemp("reload") / DARK  # the reload test rewrites this copy
    shutil.copytree(tiny_checkpoint, private)
    env = {"T2MIR_API_KEYS": ",".join(TEST_API_KEYS)}
    args = ["--max-body-bytes", str(MAX_BODY), "--cache-slots", "16"]
    prefix = f"api{uuid.uuid4().hex[:8]}"
    running = {"memory": ServerProcess([private, short_checkpoint], args=args, env=env)}
    if redis_url is not None:
        running["redis"] = ServerProcess(
            [tiny_checkpoint, short_checkpoint],
            redis_url=redis_url,
            args=args,
            env={**env, "T2MIR_REDIS_KEY_PREFIX": prefix},
        )
    ServerProcess.start_all(list(running.values()))
    yield {**running, "prefix": prefix, "private": private, "redis_url": redis_url}
    for server in running.values():
        server.close()


@dataclass
class Backend:
    """One server under test and clients for two keys and none."""

    kind: str
    server: ServerProcess
    client: ServerClient
    other: ServerClient
    anon: ServerClient
    redis: Redis | None
    prefix: str

    def snapshot(self, session_id: str) -> dict[str, Any]:
        """Everything observable about a stored session (raw Redis keys too, on Redis)."""
        info = self.client.session(session_id)
        out: dict[str, Any] = {"status": info.status_code, "info": info.json()}
        if self.redis is not None:
            meta, cur, eps, rank, rets = (f"{self.prefix}:{{{session_id}}}:{s}" for s in KEY_SUFFIXES)
            out["raw"] = {
                "meta": self.redis.hgetall(meta),
                "cur": self.redis.lrange(cur, 0, -1),
                "eps": self.redis.hgetall(eps),
                "rank": self.redis.zrange(rank, 0, -1, withscores=True),
                "rets": self.redis.lrange(rets, 0, -1),
            }
        return out


@pytest.fixture(scope="module", params=["memory", "redis"])
def api(request, servers):
    if request.param not in servers:
        pytest.skip("redis-server not installed")
    server = servers[request.param]
    raw = Redis.from_url(servers["redis_url"], decode_responses=True) if request.param == "redis" else None
    backend = Backend(
        request.param,
        server,
        ServerClient(server.url, KEY),
        ServerClient(server.url, OTHER),
        ServerClient(server.url),
        raw,
        servers["prefix"],
    )
    yield backend
    for c in (backend.client, backend.other, backend.anon):
        c.close()
    if raw is not None:
        raw.close()


def new_session(api: Backend, model: str = DARK, **body: Any) -> str:
    response = api.client.create(model=model, **body)
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def obs_at(step: int) -> list[float]:
    return [float(step % 10), float((step * 3) % 10)]


def drive(client: ServerClient, session_id: str, steps: range, episode_start: int = 0) -> list[dict]:
    """Acts for ``steps`` of one open episode that began at ``episode_start``."""
    answers = []
    for step in steps:
        reward = None if step == episode_start else 0.5
        response = client.act(session_id, step, obs_at(step), reward)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def assert_error(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"code", "message"} <= set(error)
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    return error


# ---------------------------------------------------------------------------------- basics
def test_health_docs_and_models(api):
    assert api.anon.http.get("/healthz").status_code == 200
    assert api.anon.http.get("/readyz").json()["status"] == "ready"
    assert_error(api.anon.http.get("/docs"), 401, "unauthorized")  # keys on: the docs need one too
    assert_error(api.anon.http.get("/openapi.json"), 401, "unauthorized")
    assert api.client.http.get("/docs").status_code == 200
    paths = api.client.http.get("/openapi.json").json()["paths"]
    assert {"/sessions", "/sessions/{session_id}", "/sessions/{session_id}/act", "/models"} <= set(paths)
    assert "requestBody" in paths["/sessions/{session_id}/act"]["post"]
    models = api.client.http.get("/models").json()["models"]
    assert {m["name"] for m in models} == {DARK, SHORT}
    for m in models:  # eager test servers; AD models say how their context treats unrewarded episodes
        assert m["compiled_step"] is False
        assert m["unrewarded_context"] == "keep" if m["backbone"] == "ad" else "unrewarded_context" not in m
    assert_error(api.client.http.get("/nope"), 404, "not_found")


def test_create_get_delete(api):
    sid = f"sess-{uuid.uuid4().hex[:8]}"
    response = api.client.create(model=DARK, session_id=sid, metadata={"robot": "r2", "goal": [1, 2]})
    assert response.status_code == 201, response.text
    body = response.json()
    current = next(
        m for m in api.client.http.get("/models").json()["models"] if m["name"] == DARK and m["current"]
    )
    assert body["model"] == {"name": DARK, "version": current["version"]}
    assert (body["backbone"], body["observation_dim"], body["action"]) == (
        "ad",
        2,
        {"kind": "discrete", "n": 5},
    )
    assert (body["session_id"], body["step"], body["sampling"], body["metadata"]) == (
        sid,
        0,
        "sample",
        {"robot": "r2", "goal": [1, 2]},
    )
    assert api.client.session(sid).json()["step"] == 0
    assert_error(api.client.create(model=DARK, session_id=sid), 409, "session_exists")
    assert_error(api.client.create(model=DARK, session_id="bad/id"), 422, field="session_id")
    assert_error(api.client.create(model="nope"), 404, "unknown_model")
    assert_error(api.client.create(), 422, field="model")  # two models loaded: name one
    assert_error(api.client.create(model=DARK, sampling="creative"), 422, field="sampling")
    assert api.client.delete(sid).status_code == 204
    assert_error(api.client.session(sid), 404, "session_not_found")
    assert_error(api.client.delete(sid), 404)


def test_episode_bookkeeping_and_greedy(api):
    sid = new_session(api, model=SHORT, sampling="greedy")
    drive(api.client, sid, range(0, 4))
    done = api.client.act(sid, 4, obs_at(4), 1.5, done=True).json()
    assert (done["action"], done["episode"], done["episode_return"]) == (None, 0, 3.0)
    drive(api.client, sid, range(5, 7), episode_start=5)
    info = api.client.session(sid).json()
    assert (info["step"], info["episode"], info["episode_steps"], info["returns"]) == (7, 1, 2, [3.0])
    assert info["sampling"] == "greedy" and info["episode_return"] == 0.5


# ---------------------------------------------------------------------------------- errors
def test_auth_errors(api):
    sid = new_session(api)
    drive(api.client, sid, range(0, 2))
    before = api.snapshot(sid)
    assert_error(api.anon.create(model=DARK), 401, "unauthorized")
    assert api.anon.create(model=DARK).headers["www-authenticate"] == "Bearer"
    assert_error(api.anon.act(sid, 2, obs_at(2), 0.5), 401)
    assert_error(ServerClient(api.server.url, "wrong").act(sid, 2, obs_at(2), 0.5), 401)
    assert_error(api.anon.http.get("/models"), 401)
    assert_error(api.other.act(sid, 2, obs_at(2), 0.5), 404, "session_not_found")
    assert_error(api.other.session(sid), 404)
    assert_error(api.other.delete(sid), 404)
    x_key = api.anon.http.get(f"/sessions/{sid}", headers={"X-API-Key": KEY})
    assert x_key.status_code == 200
    assert api.anon.http.get("/metrics").status_code == 200  # scrapes need no key
    assert api.snapshot(sid) == before


def test_every_error_leaves_the_session_unchanged(api):
    sid = new_session(api, model=SHORT)
    drive(api.client, sid, range(0, 3))
    before = api.snapshot(sid)
    c = api.client
    assert_error(c.act("no-such-session", 0, obs_at(0)), 404, "session_not_found")
    error = assert_error(c.act(sid, 5, obs_at(5), 0.5), 409, "step_conflict", "step")
    assert error["expected_step"] == 3
    assert assert_error(c.act(sid, 1, obs_at(1), 0.5), 409)["expected_step"] == 3
    assert_error(c.act(sid, 3, [1.0, 2.0, 3.0], 0.5), 422, "invalid_observation", "observation")
    assert_error(c.act(sid, 3, [1.0, "x"], 0.5), 422, "invalid_observation", "observation")
    assert_error(c.act(sid, 3, obs_at(3)), 422, "missing_field", "reward")
    assert_error(c.act(sid, 3, obs_at(3), "high"), 422, field="reward")
    nan = c.http.post(f"/sessions/{sid}/act", content=b'{"step": 3, "observation": [NaN, 1], "reward": 0.5}')
    assert_error(nan, 422, "invalid_observation", "observation")
    assert_error(
        c.http.post(
            f"/sessions/{sid}/act", json={"step": 3, "observation": [1, 2], "reward": 0.5, "extra": 1}
        ),
        422,
        field="extra",
    )
    assert_error(c.http.post(f"/sessions/{sid}/act", content=b'{"step": 3,'), 400, "invalid_json")
    big = {"step": 3, "observation": [0.0] * 2000, "reward": 0.5}
    assert_error(c.http.post(f"/sessions/{sid}/act", json=big), 413, "too_large")

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    assert_error(c.http.post(f"/sessions/{sid}/act", content=chunks()), 413, "too_large")  # chunked
    assert api.snapshot(sid) == before
    # the episode limit: step t = 4 would exceed max_episode_steps = 4
    drive(api.client, sid, range(3, 4))
    before = api.snapshot(sid)
    assert_error(c.act(sid, 4, obs_at(4), 0.5), 422, "episode_too_long", "step")
    assert api.snapshot(sid) == before
    assert c.act(sid, 4, obs_at(4), 0.5, done=True).status_code == 200
    before = api.snapshot(sid)
    assert_error(c.act(sid, 5, obs_at(5), 0.5), 422, "invalid_reward", "reward")  # no reward at a first step
    assert_error(c.act(sid, 5, obs_at(5), 0.5, done=True), 422)
    assert api.snapshot(sid) == before


def test_retried_steps_are_idempotent(api):
    sid = new_session(api)
    first = drive(api.client, sid, range(0, 3))
    after = api.snapshot(sid)
    retry = api.client.act(sid, 2, obs_at(2), 0.5)
    assert retry.status_code == 200
    assert without_timings(retry.json()) == without_timings(first[-1])
    # a retry is answered from the store even with a different body: the step is the key
    assert without_timings(api.client.act(sid, 2, [9.0, 9.0], 0.0).json()) == without_timings(first[-1])
    assert api.snapshot(sid) == after


def test_concurrent_requests_for_one_session_are_serialised(api):
    sid = new_session(api)
    drive(api.client, sid, range(0, 2))

    def post(step: int) -> tuple[int, dict]:
        with ServerClient(api.server.url, KEY) as c:
            r = c.act(sid, step, obs_at(step), 0.5)
            return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        same = list(pool.map(post, [2] * 8))
    assert {status for status, _ in same} == {200}
    assert len({json.dumps(without_timings(b), sort_keys=True) for _, b in same}) == 1
    assert api.client.session(sid).json()["step"] == 3  # exactly one record for step 2
    for _ in range(3):
        step = api.client.session(sid).json()["step"]
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(post, [step, step + 1]))
        assert outcomes[0][0] == 200
        if outcomes[1][0] == 200:
            assert api.client.session(sid).json()["step"] == step + 2
        else:
            assert outcomes[1][0] == 409 and outcomes[1][1]["error"]["expected_step"] == step
            assert api.client.session(sid).json()["step"] == step + 1


# ---------------------------------------------------------------------------------- websocket
def ws_run(api: Backend, sid: str, steps: range, binary: bool) -> list[Any]:
    actions = []
    with connect(
        f"{api.server.ws_url}/sessions/{sid}/ws", additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        for step in steps:
            message = {"step": step, "observation": obs_at(step)}
            if step > steps.start:
                message["reward"] = 0.5
            ws.send(msgpack.packb(message) if binary else json.dumps(message))
            raw = ws.recv()
            assert isinstance(raw, bytes) == binary
            answer = msgpack.unpackb(raw) if binary else json.loads(raw)
            assert "error" not in answer, answer
            actions.append(answer["action"])
    return actions


def test_http_and_websocket_json_and_msgpack_give_the_same_actions(api):
    sid = f"proto-{uuid.uuid4().hex[:8]}"  # the same id each time: the same sampling seeds
    runs = []
    for mode in ("http", "json", "msgpack"):
        new_session(api, session_id=sid)
        if mode == "http":
            runs.append([a["action"] for a in drive(api.client, sid, range(0, 12))])
        else:
            runs.append(ws_run(api, sid, range(0, 12), binary=mode == "msgpack"))
        assert api.client.delete(sid).status_code == 204
    assert runs[0] == runs[1] == runs[2]


def test_websocket_errors_are_frames_and_the_socket_stays_open(api):
    sid = new_session(api)
    headers = {"Authorization": f"Bearer {KEY}"}
    with connect(f"{api.server.ws_url}/sessions/{sid}/ws", additional_headers=headers) as ws:
        ws.send(json.dumps({"step": 0, "observation": [1, 2, 3]}))
        assert json.loads(ws.recv())["status"] == 422
        ws.send(json.dumps({"step": 4, "observation": [1, 2]}))
        frame = json.loads(ws.recv())
        assert (frame["status"], frame["error"]["expected_step"]) == (409, 0)
        ws.send(b"\xc1not msgpack")
        assert msgpack.unpackb(ws.recv())["status"] == 400
        ws.send("x" * (MAX_BODY + 10))
        assert json.loads(ws.recv())["error"]["code"] == "too_large"
        ws.send(msgpack.packb({"step": 0, "observation": [1, 2]}))
        assert msgpack.unpackb(ws.recv())["step"] == 0
    with connect(f"{api.server.ws_url}/sessions/no-such/ws", additional_headers=headers) as ws:
        ws.send(json.dumps({"step": 0, "observation": [1, 2]}))
        assert json.loads(ws.recv())["status"] == 404
    with connect(
        f"{api.server.ws_url}/sessions/{sid}/ws", additional_headers={"Authorization": f"Bearer {OTHER}"}
    ) as ws:
        ws.send(json.dumps({"step": 1, "observation": [1, 2], "reward": 0.0}))
        assert json.loads(ws.recv())["status"] == 404  # another key's session
    with connect(f"{api.server.ws_url}/sessions/{sid}/ws") as ws:
        assert json.loads(ws.recv())["status"] == 401
    assert api.client.session(sid).json()["step"] == 1


# ---------------------------------------------------------------------------------- reload (memory server)
def test_reload_swaps_weights_for_new_sessions_only(servers, make_checkpoint):
    server: ServerProcess = servers["memory"]
    with ServerClient(server.url, KEY) as c:
        old = c.create(model=DARK).json()
        sid = old["session_id"]
        drive(c, sid, range(0, 3))
        assert_error(c.http.post(f"/models/{DARK}/reload"), 409, "version_loaded")  # same card version
        make_checkpoint(servers["private"], DARK, "2", seed=7)

        def keep_acting() -> list[int]:
            with ServerClient(server.url, KEY) as mine:
                return [mine.act(sid, step, obs_at(step), 0.5).status_code for step in range(3, 23)]

        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(keep_acting)
            reloaded = c.http.post(f"/models/{DARK}/reload")
            statuses = in_flight.result()
        assert reloaded.status_code == 200, reloaded.text
        assert (reloaded.json()["version"], reloaded.json()["previous"]) == ("2", old["model"]["version"])
        assert statuses == [200] * 20  # nothing dropped while the new version loaded
        versions = {
            (m["version"], m["current"]) for m in c.http.get("/models").json()["models"] if m["name"] == DARK
        }
        assert versions == {(old["model"]["version"], False), ("2", True)}
        assert c.session(sid).json()["model"]["version"] == old["model"]["version"]
        assert c.act(sid, 23, obs_at(23), 0.5).status_code == 200
        new = c.create(model=DARK).json()
        assert new["model"]["version"] == "2"
        assert c.act(new["session_id"], 0, obs_at(0)).status_code == 200
        assert_error(c.http.post("/models/nope/reload"), 404)
        info = [line for line in c.metrics().splitlines() if line.startswith("t2mir_model_info{")]
        assert len([line for line in info if f'model="{DARK}"' in line]) == 2
