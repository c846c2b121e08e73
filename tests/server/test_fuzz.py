"""Schema-driven fuzzing of real servers on both session stores: 0 server errors, every answer as
the OpenAPI document says.

HTTP: schemathesis generates requests for every operation of the server's own ``/openapi.json``
(data that fits the schema and data that does not), including acts on a live session, and checks
each answer: not a server error, a documented status, the documented content type, a body that
matches the documented schema. WebSocket: hypothesis generates act messages (well-formed, nearly
well-formed and arbitrary) sent as JSON text and msgpack binary frames to a live session; every
answer is an act answer or an error frame with a 4xx status. The cases run are counted per store
(at least 2,000 HTTP cases each) and printed.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from live_backends import Backend, live_backends
from server_process import TEST_API_KEYS
from websockets.sync.client import connect

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

AUTH = {"Authorization": f"Bearer {TEST_API_KEYS[0]}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 230
"""Examples per operation with parameters or a body, and generation mode."""
HTTP_CASES_PER_STORE = 2000
WS_EXAMPLES = 400
"""WebSocket messages generated per frame format and store (msgpack cannot carry every one)."""


@pytest.fixture(scope="module")
def backends(request, tiny_checkpoint) -> Iterator[dict[str, Backend]]:
    try:
        redis_url = request.getfixturevalue("redis_server").url
    except pytest.skip.Exception:
        redis_url = None
    with live_backends([tiny_checkpoint], redis_url, args=["--cache-slots", "8"]) as running:
        yield running


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request, backends) -> Backend:
    if request.param not in backends:
        pytest.skip("redis-server not installed")
    return backends[request.param]


def live_session(base_url: str) -> str:
    """A new session with its first step stored."""
    session_id = f"fuzz-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
        assert client.post("/sessions", json={"session_id": session_id}).status_code == 201
        assert (
            client.post(f"/sessions/{session_id}/act", json={"step": 0, "observation": [0, 0]}).status_code
            == 200
        )
    return session_id


def fuzz_operation(strategy: Any, base_url: str, http: requests.Session, examples: int) -> int:
    """Run ``examples`` generated cases of one operation; returns how many ran."""
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal ran
        ran += 1
        headers = {**(case.headers or {}), **AUTH}
        response = case.call(base_url=base_url, session=http, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    with contextlib.suppress(Unsatisfiable):  # e.g. no negative data for a bare string path parameter
        run()
    return ran


def test_http_fuzz(backend):
    document = httpx.get(f"{backend.url}/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(document)
    session_id = live_session(backend.url)
    counts: dict[str, int] = {}
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = operation.label
            has_input = bool(operation.path_parameters or operation.body or operation.query)
            modes = (
                [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_input else [GenerationMode.POSITIVE]
            )
            for mode in modes:
                strategy = operation.as_strategy(generation_mode=mode)
                counts[f"{label} {mode.value}"] = fuzz_operation(
                    strategy, backend.url, http, EXAMPLES if has_input else 5
                )
                if operation.path == "/sessions/{session_id}/act":  # acts on a live session too
                    strategy = operation.as_strategy(
                        generation_mode=mode, path_parameters={"session_id": session_id}
                    )
                    counts[f"{label} {mode.value} live"] = fuzz_operation(
                        strategy, backend.url, http, EXAMPLES
                    )
    total = sum(counts.values())
    print(f"\n{backend.kind}: {total} HTTP cases, 0 server errors: {json.dumps(counts)}")
    assert total >= HTTP_CASES_PER_STORE, counts
    logs = backend.server.logs()
    assert "Traceback" not in logs and '"level":"error"' not in logs, logs[-3000:]


NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20))
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
ACT_LIKE = st.fixed_dictionaries(
    {"step": st.one_of(st.integers(min_value=0, max_value=3), NUMBERS, ANY_JSON)},
    optional={
        "observation": st.one_of(st.lists(NUMBERS, max_size=3), NUMBERS, ANY_JSON),
        "reward": st.one_of(st.none(), NUMBERS, ANY_JSON),
        "done": st.one_of(st.booleans(), ANY_JSON),
        "extra": ANY_JSON,
    },
)
MESSAGES = st.one_of(ACT_LIKE, ACT_LIKE, ANY_JSON)
SURROGATES = st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
)


def _check_answer(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    if "error" in answer:
        assert 400 <= answer["status"] < 500, answer
        assert isinstance(answer["error"]["code"], str) and isinstance(answer["error"]["message"], str)
    else:
        assert {"session_id", "step", "episode", "action", "timings"} <= set(answer), answer


def _ws_fuzz(backend: Backend, binary: bool) -> int:
    session_id = live_session(backend.url)
    url = backend.url.replace("http://", "ws://") + f"/sessions/{session_id}/ws"
    ran = 0
    with connect(url, additional_headers=AUTH, max_size=None) as ws:

        @settings(
            max_examples=WS_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(message=MESSAGES, surrogate=st.one_of(st.none(), SURROGATES))
        def run(message: Any, surrogate: str | None) -> None:
            nonlocal ran
            if surrogate is not None and isinstance(message, dict):
                message = {**message, surrogate: 1}
            if binary:
                try:
                    frame: bytes | str = msgpack.packb(message, use_bin_type=True)
                except (OverflowError, ValueError, TypeError, UnicodeEncodeError):
                    return  # not representable in msgpack (huge ints, surrogates)
            else:
                frame = json.dumps(message, allow_nan=True)
            ran += 1
            ws.send(frame)
            reply = ws.recv(timeout=30)
            answer = msgpack.unpackb(reply, raw=False) if binary else json.loads(reply)
            _check_answer(answer)

        run()
    return ran


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
def test_websocket_fuzz(backend, binary):
    ran = _ws_fuzz(backend, binary)
    print(f"\n{backend.kind} {'msgpack' if binary else 'json'}: {ran} WebSocket messages, 0 server errors")
    assert ran >= WS_EXAMPLES // 4
