"""Malformed input never gets a 500 and never changes what is stored: through real servers on both
session stores, over HTTP and WebSocket (JSON text and msgpack binary frames).

Every case answers a 4xx in the error format; afterwards the session it aimed at is exactly as
before (its description and, on Redis, the serialized contents of every key), and a refused
create leaves no session behind. The six reproductions of issue #28 are the ``repro_*`` cases.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
from live_backends import Backend, live_backends
from redis import Redis
from server_process import TEST_API_KEYS
from websockets.sync.client import connect

from server.payload import MAX_DEPTH

KEY = TEST_API_KEYS[0]
AUTH = {"Authorization": f"Bearer {KEY}"}
BIG_INT = "1" + "0" * 400  # an integer literal beyond any float
MAX_METADATA = 1024


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw_act(step: str = "1", observation: str = "[0,0]", reward: str = "0", extra: str = "") -> str:
    """An act body from raw JSON fragments (for literals json.dumps cannot write)."""
    return f'{{"step":{step},"observation":{observation},"reward":{reward}{extra}}}'


@pytest.fixture(scope="module")
def backends(request, tiny_checkpoint) -> Iterator[dict[str, Backend]]:
    try:
        redis_url = request.getfixturevalue("redis_server").url
    except pytest.skip.Exception:
        redis_url = None
    args = ["--cache-slots", "8", "--max-metadata-bytes", str(MAX_METADATA)]
    with live_backends([tiny_checkpoint], redis_url, args=args) as running:
        yield running


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request, backends) -> Backend:
    if request.param not in backends:
        pytest.skip("redis-server not installed")
    return backends[request.param]


@pytest.fixture
def http(backend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, headers=AUTH, timeout=30) as client:
        yield client


def snapshot(backend: Backend, http: httpx.Client, session_id: str) -> dict[str, Any]:
    """Everything observable about a session: its description, and on Redis its raw keys."""
    info = http.get(f"/sessions/{session_id}")
    out: dict[str, Any] = {"status": info.status_code, "info": info.json()}
    if backend.redis_url is not None:
        with Redis.from_url(backend.redis_url) as raw:
            keys = sorted(raw.scan_iter(match=f"{backend.prefix}:{{{session_id}}}:*"))
            out["raw"] = {key: raw.dump(key) for key in keys}
    return out


def session_at_step_one(http: httpx.Client) -> str:
    """A new session whose step 0 is stored (so the next act carries a reward)."""
    session_id = f"m-{uuid.uuid4().hex[:12]}"
    assert http.post("/sessions", json={"session_id": session_id}).status_code == 201
    assert (
        http.post(f"/sessions/{session_id}/act", json={"step": 0, "observation": [0, 0]}).status_code == 200
    )
    return session_id


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code, error


ACT_BODIES = {
    "repro_1_observation_overflow": (raw_act(observation="[" + BIG_INT + ",0]"), 422),
    "repro_1_reward_overflow": (raw_act(reward=BIG_INT), 422),
    "negative_overflow": (raw_act(observation="[-" + BIG_INT + ",0]"), 422),
    "float_literal_overflow": ('{"step":1,"observation":[1e400,0],"reward":0}', 422),
    "nan": ('{"step":1,"observation":[NaN,0],"reward":0}', 422),
    "infinity_reward": ('{"step":1,"observation":[0,0],"reward":-Infinity}', 422),
    "beyond_float32": ('{"step":1,"observation":[1e300,0],"reward":0}', 422),
    "step_overflow": (raw_act(step=BIG_INT), 422),
    "repro_2_nested_1000": (raw_act(observation=nested(1000)), 400),
    "nested_500": (raw_act(observation=nested(500)), 400),
    "nested_100000": (raw_act(observation=nested(100_000)), 400),
    "nested_object_key": (raw_act(extra=',"x":' + nested(MAX_DEPTH + 1)), 400),
    "lone_surrogate_key": ('{"step":1,"observation":[0,0],"reward":0,"\\ud800":1}', 400),
    "lone_surrogate_value": ('{"step":1,"observation":["\\udfff",0],"reward":0}', 400),
    "int_too_long_to_parse": ('{"step":1,"observation":[%s,0],"reward":0}' % ("9" * 5000), 400),
    "not_an_object": ("[1, 2]", 422),
    "null": ("null", 422),
    "truncated": ('{"step":1,', 400),
    "empty": ("", 400),
    "huge_extra_key": ('{"step":1,"observation":[0,0],"reward":0,"%s":1}' % ("k" * 3000), 422),
}


@pytest.mark.parametrize("case", sorted(ACT_BODIES))
def test_malformed_act_bodies_change_nothing(backend, http, case):
    body, status = ACT_BODIES[case]
    session_id = session_at_step_one(http)
    before = snapshot(backend, http, session_id)
    response = http.post(
        f"/sessions/{session_id}/act", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert_error(response, status)
    assert len(response.json()["error"]["message"]) < 1000
    assert snapshot(backend, http, session_id) == before
    ok = http.post(f"/sessions/{session_id}/act", json={"step": 1, "observation": [1, 1], "reward": 0.5})
    assert ok.status_code == 200, ok.text


def test_invalid_utf8_act_body(backend, http):
    session_id = session_at_step_one(http)
    before = snapshot(backend, http, session_id)
    response = http.post(f"/sessions/{session_id}/act", content=b'{"step":1,"observation":[0,0],"\xff":1}')
    assert_error(response, 400, "invalid_json")
    assert snapshot(backend, http, session_id) == before


CREATE_BODIES = {
    "repro_3_lone_surrogate_metadata": ('{"session_id":"%s","metadata":{"a":"\\ud800"}}', 400),
    "lone_surrogate_metadata_key": ('{"session_id":"%s","metadata":{"\\udc00":1}}', 400),
    "lone_surrogate_model": ('{"session_id":"%s","model":"\\ud800"}', 400),
    "deep_metadata": ('{"session_id":"%s","metadata":{"a":' + nested(1000) + "}}", 400),
    "metadata_nan": ('{"session_id":"%s","metadata":{"a":NaN}}', 422),
    "metadata_too_large": ('{"session_id":"%s","metadata":{"a":"' + "x" * MAX_METADATA + '"}}', 422),
    "metadata_not_object": ('{"session_id":"%s","metadata":[1]}', 422),
    "action_noise_overflow": ('{"session_id":"%s","action_noise":' + BIG_INT + "}", 422),
    "action_noise_nan": ('{"session_id":"%s","action_noise":NaN}', 422),
    "unknown_field": ('{"session_id":"%s","x":1}', 422),
}


@pytest.mark.parametrize("case", sorted(CREATE_BODIES))
def test_refused_create_leaves_no_session(backend, http, case):
    template, status = CREATE_BODIES[case]
    session_id = f"c-{uuid.uuid4().hex[:12]}"
    response = http.post("/sessions", content=(template % session_id).encode())
    assert_error(response, status)
    assert_error(http.get(f"/sessions/{session_id}"), 404, "session_not_found")
    assert not [k for k in backend.redis_keys() if session_id in k]


def test_repro_3_session_readable_after_refused_create(backend, http):
    """The issue's exact sequence: the refused create stores nothing, the id stays free."""
    body = b'{"session_id":"x-surrogate","metadata":{"a":"\\ud800"}}'
    assert_error(http.post("/sessions", content=body), 400, "invalid_unicode")
    assert_error(http.get("/sessions/x-surrogate"), 404)
    created = http.post(
        "/sessions", json={"session_id": "x-surrogate", "metadata": {"a": "\u00e9\U0001f600"}}
    )
    assert created.status_code == 201, created.text
    assert http.get("/sessions/x-surrogate").json()["metadata"] == {"a": "\u00e9\U0001f600"}
    assert http.delete("/sessions/x-surrogate").status_code == 204


def test_metadata_at_the_size_limit_is_accepted(http):
    metadata = {"a": "x" * (MAX_METADATA - len('{"a":""}'))}
    response = http.post("/sessions", json={"metadata": metadata})
    assert response.status_code == 201, response.text
    assert http.get(f"/sessions/{response.json()['session_id']}").json()["metadata"] == metadata


ODD_IDS = [
    "",
    " ",
    "a/b",
    "{tag}",
    "a b",
    "\u00e9",
    "x" * 129,
    "x" * 100_000,
    "x" * 2_000_000,
    "a\nb",
    "\x00",
    "..%2F",
]


@pytest.mark.parametrize("session_id", ODD_IDS, ids=lambda s: repr(s)[:20])
def test_odd_session_ids_refused(backend, http, session_id):
    response = http.post("/sessions", json={"session_id": session_id})
    assert_error(response, 413 if len(session_id) > 1_000_000 else 422)
    assert not any("{" + session_id + "}" in key for key in backend.redis_keys())


@pytest.mark.parametrize("path", ["x" * 5000, "%FF", "%ED%A0%80", "a%00b", "%7Btag%7D", "..", "a%2Fb"])
def test_odd_ids_in_paths_are_unknown(http, path):
    for method in ("GET", "DELETE"):
        response = http.request(method, f"/sessions/{path}")
        assert response.status_code in (404, 405), response.text
        assert len(response.json()["error"]["message"]) < 200
    response = http.post(f"/sessions/{path}/act", json={"step": 0, "observation": [0, 0]})
    assert response.status_code == 404, response.text


def ws_url(backend: Backend, session_id: str) -> str:
    return backend.url.replace("http://", "ws://") + f"/sessions/{session_id}/ws"


WS_TEXT = {
    "repro_1_overflow": raw_act(observation="[" + BIG_INT + ",0]"),
    "reward_overflow": raw_act(reward=BIG_INT),
    "nested_1000": raw_act(observation=nested(1000)),
    "lone_surrogate": '{"step":1,"observation":[0,0],"reward":0,"\\ud800":1}',
    "nan": '{"step":1,"observation":[NaN,0],"reward":0}',
    "not_json": "{oops",
    "not_object": "[]",
}


def _deep_list(depth: int) -> Any:
    out: Any = 0
    for _ in range(depth):
        out = [out]
    return out


WS_BINARY = {
    "nested_1000": msgpack.packb({"step": 1, "observation": _deep_list(1000), "reward": 0}),
    "nan": msgpack.packb({"step": 1, "observation": [float("nan"), 0], "reward": 0}),
    "bytes_value": msgpack.packb({"step": 1, "observation": [b"\x00", 0], "reward": 0}, use_bin_type=True),
    "int_key": msgpack.packb({1: 1, "step": 1, "observation": [0, 0], "reward": 0}),
    "invalid_utf8": b"\x81\xa1\xff\x01",
    "surrogate_utf8": b"\x81\xa3\xed\xa0\x80\x01",
    "truncated": msgpack.packb({"step": 1, "observation": [0, 0]})[:-3],
    "not_msgpack": b"\xc1",
    "ext_type": msgpack.packb({"step": msgpack.ExtType(5, b"x"), "observation": [0, 0]}),
    "huge_uint": msgpack.packb({"step": 2**64 - 1, "observation": [0, 0], "reward": 0}),
}


def test_malformed_websocket_frames_change_nothing(backend, http):
    session_id = session_at_step_one(http)
    before = snapshot(backend, http, session_id)
    with connect(ws_url(backend, session_id), additional_headers=AUTH) as ws:
        for case, text in WS_TEXT.items():
            ws.send(text)
            answer = json.loads(ws.recv(timeout=30))
            assert 400 <= answer["status"] < 500, (case, answer)
            assert {"code", "message"} <= set(answer["error"]), case
        for case, data in WS_BINARY.items():
            ws.send(data)
            answer = msgpack.unpackb(ws.recv(timeout=30), raw=False)
            assert 400 <= answer["status"] < 500, (case, answer)
            assert {"code", "message"} <= set(answer["error"]), case
        assert snapshot(backend, http, session_id) == before
        ws.send(json.dumps({"step": 1, "observation": [1, 1], "reward": 0.5}))
        assert json.loads(ws.recv(timeout=30))["step"] == 1  # the socket still serves


def test_repro_4_openapi_matches_answers(http):
    document = http.get("/openapi.json").json()
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert http.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "400" in document["paths"]["/sessions"]["post"]["responses"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    }, (path, method, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_repro_4_options_and_405_list_every_method(http):
    response = http.options("/sessions/abc")
    assert response.status_code == 204
    assert response.headers["allow"] == "DELETE, GET, OPTIONS"
    response = http.put("/sessions/abc")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, OPTIONS"
    assert http.options("/sessions").headers["allow"] == "OPTIONS, POST"


def test_default_idle_ttl_reaches_the_store(backend, http):
    """Sessions expire after 24 h idle by default (both stores; Redis: the keys' PTTL)."""
    response = http.post("/sessions", json={})
    assert response.status_code == 201
    if backend.redis_url is None:
        return  # the in-process store's TTL is checked in test_limits
    session_id = response.json()["session_id"]
    with Redis.from_url(backend.redis_url) as raw:
        pttl = raw.pttl(f"{backend.prefix}:{{{session_id}}}:meta")
    assert 86_000_000 < pttl <= 86_400_000
