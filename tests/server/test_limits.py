"""Limits that protect a server left running, through real servers on both stores and raw sockets:
live-session bound, slow or oversized requests cut off, idle connections closed, unparsable
requests answered in the error format, API keys never logged, documentation behind the key.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from live_backends import Backend, live_backends
from server_process import TEST_API_KEYS
from websockets.sync.client import connect

from server.app import create_app
from server.live_sessions import LiveSessions
from server.logs import log_config, redact
from server.settings import ServerSettings

KEY, OTHER = TEST_API_KEYS
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_SESSIONS = 3
TIMEOUT_S = 1.0
ARGS = [
    "--cache-slots", "4",
    "--max-sessions", str(MAX_SESSIONS),
    "--header-timeout", str(TIMEOUT_S),
    "--body-timeout", str(TIMEOUT_S),
    "--keep-alive", "1",
    "--max-header-bytes", "4096",
    "--log-level", "debug",
]  # fmt: skip


@pytest.fixture(scope="module")
def backends(request, tiny_checkpoint) -> Iterator[dict[str, Backend]]:
    try:
        redis_url = request.getfixturevalue("redis_server").url
    except pytest.skip.Exception:
        redis_url = None
    with live_backends([tiny_checkpoint], redis_url, args=ARGS) as running:
        yield running


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request, backends) -> Backend:
    if request.param not in backends:
        pytest.skip("redis-server not installed")
    return backends[request.param]


def read_response(sock: socket.socket, limit_s: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    sock.settimeout(limit_s)
    t0 = time.monotonic()
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


def error_of(response: bytes) -> tuple[int, dict]:
    """Status and JSON error body of a raw HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)["error"]


def open_socket(backend: Backend) -> socket.socket:
    return socket.create_connection(("127.0.0.1", backend.server.port), timeout=10)


def test_live_sessions_are_bounded(backend):
    with httpx.Client(base_url=backend.url, headers=AUTH, timeout=30) as http:
        ids = [http.post("/sessions", json={}).json()["session_id"] for _ in range(MAX_SESSIONS)]
        refused = http.post("/sessions", json={})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_sessions"
        assert int(refused.headers["retry-after"]) > 0
        assert http.post("/sessions", json={"session_id": ids[0]}).status_code == 409  # counted once
        assert http.delete(f"/sessions/{ids[0]}").status_code == 204
        replacement = http.post("/sessions", json={})
        assert replacement.status_code == 201, replacement.text
        for session_id in [*ids[1:], replacement.json()["session_id"]]:
            assert http.delete(f"/sessions/{session_id}").status_code == 204


def test_live_session_count_forgets_idle_and_refused_sessions():
    clock = [0.0]
    live = LiveSessions(2, ttl_seconds=10.0, clock=lambda: clock[0])
    assert live.reserve("a") and live.reserve("b")
    assert not live.reserve("a")  # already counted
    with pytest.raises(Exception, match="maximum of 2"):
        live.reserve("c")
    clock[0] = 6.0
    live.touch("a")
    clock[0] = 11.0  # b idle for 11 s, a for 5 s
    assert live.reserve("c") and len(live) == 2
    live.release("c")
    assert len(live) == 1


def test_slowloris_body_is_cut_off(backend):
    """A body trickling in one byte at a time gets 408 once the body timeout has passed."""
    with open_socket(backend) as sock:
        sock.sendall(
            b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        t0 = time.monotonic()
        response = b""
        while time.monotonic() - t0 < 10 * TIMEOUT_S:
            try:
                sock.sendall(b" ")
            except OSError:
                break
            sock.settimeout(0.25)
            try:
                response += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in response:
                break
        rest, _ = read_response(sock, 5)
        elapsed = time.monotonic() - t0
    status, error = error_of(response + rest)
    assert (status, error["code"]) == (408, "body_timeout")
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 4


def test_slow_headers_are_cut_off(backend):
    with open_socket(backend) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        for _ in range(int(10 * TIMEOUT_S / 0.2)):
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            sock.settimeout(0.01)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                continue
        response, _ = read_response(sock, 5)
        elapsed = time.monotonic() - t0
    status, error = error_of(response)
    assert (status, error["code"]) == (408, "header_timeout")
    assert elapsed < TIMEOUT_S + 4


def test_silent_connection_is_closed(backend):
    with open_socket(backend) as sock:
        response, elapsed = read_response(sock, 10)
    assert error_of(response)[0] == 408
    assert elapsed < TIMEOUT_S + 4


def test_idle_keep_alive_connection_is_closed(backend):
    with open_socket(backend) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response, elapsed = read_response(sock, 10)
    assert response.startswith(b"HTTP/1.1 200")
    assert elapsed < 1 + 4  # --keep-alive 1


def test_oversize_headers_get_431(backend):
    with open_socket(backend) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n")
        response, _ = read_response(sock)
    status, error = error_of(response)
    assert (status, error["code"]) == (431, "headers_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x00\xff\r\n\r\n",
    ],
)
def test_invalid_http_gets_the_error_format(backend, request_bytes):
    with open_socket(backend) as sock:
        sock.sendall(request_bytes)
        response, _ = read_response(sock)
    status, error = error_of(response)
    assert (status, error["code"]) == (400, "invalid_http")


def test_api_keys_never_logged(backend):
    """--log-level debug logs WebSocket handshakes; no key (valid or not) appears in any line."""
    wrong = "not-a-key-5e1f9c"
    for headers in (AUTH, {"X-API-Key": OTHER}, {"Authorization": f"Bearer {wrong}"}):
        with connect(
            backend.url.replace("http://", "ws://") + "/sessions/none/ws", additional_headers=headers
        ) as ws:
            if headers["Authorization" if "Authorization" in headers else "X-API-Key"].endswith(wrong):
                assert json.loads(ws.recv(timeout=10))["status"] == 401  # then closed
                continue
            ws.send(json.dumps({"step": 0, "observation": [0, 0]}))
            assert json.loads(ws.recv(timeout=10))["status"] == 404
    httpx.get(f"{backend.url}/models", headers={"X-API-Key": wrong})
    time.sleep(0.2)
    logs = backend.server.logs()
    assert '"level":"debug"' in logs  # debug logging is on
    assert "[redacted]" in logs  # and the handshake headers were there to redact
    for secret in (KEY, OTHER, wrong):
        assert secret not in logs


def test_redact():
    text = "< authorization: Bearer abc.def\n< x-api-key: k1 ('cookie', 'id=7') raw key-alpha here"
    out = redact(text, ["key-alpha"])
    assert "abc.def" not in out and "k1" not in out and "id=7" not in out and "key-alpha" not in out
    assert log_config("info", ["s3cret"])["formatters"]["json"]["secrets"] == ["s3cret"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_the_key(backend, path):
    response = httpx.get(backend.url + path)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert httpx.get(backend.url + path, headers=AUTH).status_code == 200


def test_public_docs_setting(tiny_checkpoint):
    keys = ServerSettings(checkpoints=[str(tiny_checkpoint)], api_keys=["k"])
    public = ServerSettings(checkpoints=[str(tiny_checkpoint)], api_keys=["k"], public_docs=True)
    no_keys = ServerSettings(checkpoints=[str(tiny_checkpoint)])
    for settings, status in ((keys, 401), (public, 200), (no_keys, 200)):
        client = TestClient(create_app(settings))  # no lifespan: docs need no models
        assert client.get("/openapi.json").status_code == status
        assert client.get("/docs").status_code == status


def test_protective_defaults(monkeypatch):
    settings = ServerSettings()
    assert settings.session_ttl_seconds == 86400.0
    assert settings.max_sessions == 10_000
    assert settings.max_metadata_bytes == 16 * 1024
    assert (settings.header_timeout_s, settings.body_timeout_s, settings.keep_alive_s) == (10.0, 30.0, 5)
    assert not settings.public_docs
    monkeypatch.setenv("T2MIR_SESSION_TTL_SECONDS", "0")
    assert ServerSettings().session_ttl_seconds is None  # 0: never
