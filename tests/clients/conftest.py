"""A small fake t2mir server (real HTTP + WebSocket on a free port) for the client tests.

It implements the act protocol of DESIGN.md with a trivial deterministic policy, strictly: steps
must come in order, a repeated last step gets the stored answer (and is counted as a duplicate),
the first act of an episode carries no reward, later ones must. Errors use the server's format
``{"error": {"code", "message", "field"?}}`` with 401/404/409/413/422/503 (+ Retry-After).

Faults are injected per test: ``server.add_fault(kind, step=..., ...)`` with kinds

- ``unavailable``: answer 503 + Retry-After, apply nothing;
- ``delay``: sleep ``seconds`` before handling (``after=True``: apply first, then sleep);
- ``drop``: apply the act, then drop the connection without a complete answer.

``on="create"`` puts an ``unavailable`` or ``drop`` fault on ``POST /sessions`` instead of acts.

It is a raw ASGI app run by uvicorn in a background thread, started once per test session.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
import uvicorn

MODELS: dict[str, dict[str, Any]] = {
    "darkroom": {"backbone": "ad", "observation_dim": 2, "action": {"kind": "discrete", "n": 5}},
    "cheetah": {
        "backbone": "dpt",
        "observation_dim": 3,
        "action": {"kind": "continuous", "dim": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]},
    },
}
MAX_BODY = 16_384


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.headers = status, extra.pop("headers", {})
        self.body = {"error": {"code": code, "message": message, **extra}}


@dataclass
class Fault:
    kind: str
    step: int | None = None
    times: int = 1
    seconds: float = 0.0
    after: bool = False
    retry_after: str = "0"
    on: str = "act"


@dataclass
class FakeSession:
    session_id: str
    model: str
    owner: str | None
    next_step: int = 0
    episode: int = 0
    in_episode: bool = False
    current_return: float = 0.0
    returns: list[float] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    duplicates: int = 0
    last: dict[str, Any] | None = None


def policy(model: str, step: int, observation: list[float]) -> Any:
    """Deterministic 'model': discrete from the step and observation; continuous partly out of bounds."""
    spec = MODELS[model]["action"]
    if spec["kind"] == "discrete":
        return (3 * step + round(sum(observation))) % spec["n"]
    return [(-1) ** i * 0.5 * (1 + step % 3) for i in range(spec["dim"])]


class FakeServer:
    def __init__(self) -> None:
        self.sessions: dict[str, FakeSession] = {}
        self.api_keys: set[str] | None = None
        self.expected_step_field = True
        self.ws_error_status = True  # WS error frames carry "status" (False: the code must say)
        self.ws_reject_handshake = False
        self.faults: list[Fault] = []
        self.act_requests = 0
        self._counter = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- test controls ------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.api_keys = None
            self.expected_step_field = True
            self.ws_error_status = True
            self.ws_reject_handshake = False
            self.act_requests = 0

    def add_fault(self, kind: str, **kwargs: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, **kwargs))

    def _take_fault(self, on: str, step: Any = None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.on == on and fault.step in (None, step):
                    fault.times -= 1
                    return fault
        return None

    # -- protocol -----------------------------------------------------------------------------------

    def _owner(self, headers: dict[str, str]) -> str | None:
        if self.api_keys is None:
            return None
        auth = headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip()
        if not auth.startswith("Bearer ") or key not in self.api_keys:
            raise HTTPError(401, "unauthorized", "missing or unknown API key")
        return key

    def _session(self, session_id: str, owner: str | None) -> FakeSession:
        session = self.sessions.get(session_id)
        if session is None or session.owner != owner:
            raise HTTPError(404, "session_not_found", f"no session {session_id!r}")
        return session

    def create(self, body: Any, owner: str | None) -> dict[str, Any]:
        model = body.get("model") or "darkroom"
        if model not in MODELS:
            raise HTTPError(422, "validation_error", f"unknown model {model!r}", field="model")
        session_id = body.get("session_id")
        if session_id is None:
            self._counter += 1
            session_id = f"s{self._counter}"
        if session_id in self.sessions:
            raise HTTPError(409, "session_exists", f"session {session_id!r} exists")
        self.sessions[session_id] = FakeSession(session_id, model, owner)
        return {
            "session_id": session_id,
            "model": {"name": model, "version": "1"},
            **MODELS[model],
        }

    def state(self, session: FakeSession) -> dict[str, Any]:
        return {
            "session_id": session.session_id,
            "step": session.next_step,
            "episode": session.episode,
            "returns": session.returns,
            "model": {"name": session.model, "version": "1"},
        }

    def act(self, session: FakeSession, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise HTTPError(422, "validation_error", "body must be an object")
        step = body.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise HTTPError(422, "validation_error", "step must be an int >= 0", field="step")
        observation = body.get("observation")
        values = [observation] if isinstance(observation, int | float) else observation
        dim = MODELS[session.model]["observation_dim"]
        if (
            not isinstance(values, list)
            or len(values) != dim
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
            )
        ):
            raise HTTPError(
                422, "validation_error", f"observation must be {dim} finite numbers", field="observation"
            )
        if session.last is not None and step == session.last["step"]:
            session.duplicates += 1
            return session.last
        if step != session.next_step:
            extra = {"expected_step": session.next_step} if self.expected_step_field else {}
            raise HTTPError(
                409,
                "step_conflict",
                f"step out of order: expected step {session.next_step}, got {step}",
                **extra,
            )
        reward, done = body.get("reward"), bool(body.get("done", False))
        if not session.in_episode and (reward is not None or done):
            raise HTTPError(
                422, "validation_error", "the first act of an episode has no reward", field="reward"
            )
        if session.in_episode and not isinstance(reward, int | float):
            raise HTTPError(422, "validation_error", "reward required after the first act", field="reward")
        episode = session.episode
        session.applied.append(step)
        if session.in_episode:
            session.current_return += reward
        else:
            session.in_episode, session.current_return = True, 0.0
        action = None if done else policy(session.model, step, [float(v) for v in values])
        if done:
            session.returns.append(session.current_return)
            session.episode += 1
            session.in_episode = False
        session.next_step = step + 1
        session.last = {
            "session_id": session.session_id,
            "step": step,
            "episode": episode,
            "action": action,
            "timings": {"total_ms": 0.1},
        }
        return session.last

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, parts = scope["method"], scope["path"].strip("/").split("/")
        status, payload, extra_headers, drop = 200, None, {}, False
        try:
            if len(raw) > MAX_BODY:
                raise HTTPError(413, "payload_too_large", f"body over {MAX_BODY} bytes")
            if parts == ["healthz"] or parts == ["readyz"]:
                payload = {"status": "ok"}
            elif parts == ["models"]:
                payload = {"models": [{"name": name, **spec} for name, spec in MODELS.items()]}
            else:
                owner = self._owner(headers)
                body = json.loads(raw) if raw else {}
                if parts == ["sessions"] and method == "POST":
                    fault = self._take_fault("create")
                    if fault is not None and fault.kind == "unavailable":
                        raise HTTPError(503, "store_unavailable", "store down", headers={"Retry-After": "0"})
                    status, payload = 201, self.create(body, owner)
                    drop = fault is not None and fault.kind == "drop"
                elif len(parts) == 2 and parts[0] == "sessions":
                    session = self._session(parts[1], owner)
                    if method == "DELETE":
                        del self.sessions[parts[1]]
                        status = 204
                    else:
                        payload = self.state(session)
                elif len(parts) == 3 and parts[0] == "sessions" and parts[2] == "act":
                    self.act_requests += 1
                    session = self._session(parts[1], owner)
                    payload, drop = await self._faulty_act(session, body)
                else:
                    raise HTTPError(404, "not_found", f"no route {method} {scope['path']}")
        except HTTPError as exc:
            status, payload, extra_headers = exc.status, exc.body, exc.headers
        data = json.dumps(payload).encode() if payload is not None else b""
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        response_headers += [(k.encode(), v.encode()) for k, v in extra_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        if drop:
            raise ConnectionAbortedError("fake server drops the connection (injected fault)")
        await send({"type": "http.response.body", "body": data})

    async def _faulty_act(self, session: FakeSession, body: Any) -> tuple[dict[str, Any], bool]:
        """The act with this request's fault (if any) applied; returns (answer, drop the connection)."""
        fault = self._take_fault("act", body.get("step") if isinstance(body, dict) else None)
        if fault is not None and fault.kind == "unavailable":
            raise HTTPError(
                503, "store_unavailable", "store down", headers={"Retry-After": fault.retry_after}
            )
        if fault is not None and fault.kind == "delay" and not fault.after:
            await asyncio.sleep(fault.seconds)
        answer = self.act(session, body)
        if fault is not None and fault.kind == "delay" and fault.after:
            await asyncio.sleep(fault.seconds)
        return answer, fault is not None and fault.kind == "drop"

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        parts = scope["path"].strip("/").split("/")
        await receive()  # websocket.connect
        try:
            owner = self._owner(headers)
        except HTTPError as exc:
            if self.ws_reject_handshake:  # refuse the upgrade itself (HTTP 403)
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.accept"})  # like the real server: error frame, close 1008
            await send({"type": "websocket.send", "text": json.dumps({**exc.body, "status": exc.status})})
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            binary = message.get("bytes") is not None
            body = msgpack.unpackb(message["bytes"]) if binary else json.loads(message["text"])
            drop = False
            try:
                self.act_requests += 1
                session = self._session(parts[1], owner)
                answer, drop = await self._faulty_act(session, body)
            except HTTPError as exc:
                answer = {**exc.body, "status": exc.status} if self.ws_error_status else exc.body
                if "Retry-After" in exc.headers:
                    answer["retry_after"] = int(exc.headers["Retry-After"])
            if drop:
                await send({"type": "websocket.close", "code": 1011})
                return
            if binary:
                await send({"type": "websocket.send", "bytes": msgpack.packb(answer)})
            else:
                await send({"type": "websocket.send", "text": json.dumps(answer)})

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self, lifespan="off", log_level="critical", http="h11", ws="websockets-sansio", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)


@pytest.fixture(scope="session")
def _fake_server_instance() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_server(_fake_server_instance: FakeServer) -> Iterator[FakeServer]:
    """The shared fake server, with faults and API keys cleared before and after the test."""
    _fake_server_instance.reset()
    yield _fake_server_instance
    _fake_server_instance.reset()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Run async tests on asyncio only."""
    return "asyncio"
