"""The real t2mir server for the client tests, and the few faults that cannot be produced for real.

`LiveServer` is the real FastAPI app (`server.app`), with the in-process store or a real Redis,
served by uvicorn on a free port in a background thread, over real HTTP and WebSocket. Both load two tiny random checkpoints: ``darkroom`` (2-d observations, 5 discrete
actions, 100-step episodes; the default model) and ``cheetah`` (3-d observations, 2-d continuous
actions in [-1, 1]). API keys are on: ``KEY`` and ``OTHER``.

`FaultInjector` wraps the real app and only injects what a real server does not do on demand:

- ``unavailable``: answer 503 ``store_unavailable`` with ``Retry-After`` without passing the request
  on (a real store outage is tested too, by stopping Redis);
- ``delay``: let the app answer, then hold the answer back ``seconds`` (beyond a client's timeout);
- ``drop``: let the app apply the act, then cut the connection before the answer.

It also records what passed through: act requests per ``(session_id, step)``, the action of each
answered step, and the ids of created sessions.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import uvicorn
from model_factory import write_checkpoint
from redis_server import RedisServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clients import codes
from server.app import create_app
from server.settings import ServerSettings
from t2mir_model import ActionSpec, ObservationSpec

KEY, OTHER = "key-one", "key-two"
DARK, CHEETAH = "darkroom", "cheetah"
MAX_BODY = 16_384


@dataclass
class Fault:
    """One injected fault (see the module docstring); ``step`` None matches any step."""

    kind: str
    step: int | None = None
    times: int = 1
    seconds: float = 0.0
    retry_after: int = 0
    on: str = "act"


def _step_of(body: Any) -> int | None:
    step = body.get("step") if isinstance(body, dict) else None
    return step if isinstance(step, int) else None


class FaultInjector:
    """ASGI wrapper of the real app: injects `Fault`s and records acts (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.faults: list[Fault] = []
        self.requests: Counter[tuple[str, int]] = Counter()
        self.actions: dict[tuple[str, int], Any] = {}
        self.created: list[str] = []
        self._lock = threading.Lock()

    def add(self, kind: str, **kwargs: Any) -> None:
        """Inject a fault into the next matching request(s)."""
        with self._lock:
            self.faults.append(Fault(kind, **kwargs))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take(self, on: str, step: int | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.on == on and fault.step in (None, step):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, session_id: str, step: int | None, answer: Any) -> None:
        if step is not None:
            self.requests[(session_id, step)] += 1
            if isinstance(answer, dict) and "action" in answer:
                self.actions[(session_id, step)] = answer["action"]

    @staticmethod
    def _unavailable(fault: Fault) -> dict[str, Any]:
        message = "injected outage"
        return {
            "error": {"code": codes.STORE_UNAVAILABLE, "message": message, "retry_after": fault.retry_after}
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope.get("path", "").strip("/").split("/")
        if scope["type"] == "http" and scope["method"] == "POST" and parts[0] == "sessions":
            if parts == ["sessions"]:
                await self._http(scope, receive, send, "create", None)
                return
            if len(parts) == 3 and parts[2] == "act":
                await self._http(scope, receive, send, "act", parts[1])
                return
        if scope["type"] == "websocket" and len(parts) == 3:
            await self._websocket(scope, receive, send, parts[1])
            return
        await self.app(scope, receive, send)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, on: str, session_id: str | None
    ) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            step = _step_of(json.loads(raw)) if on == "act" else None
        except ValueError:
            step = None
        fault = self._take(on, step)
        if fault is not None and fault.kind == "unavailable":
            if session_id is not None:
                self._record(session_id, step, None)
            await _send_json(send, 503, self._unavailable(fault), {"Retry-After": str(fault.retry_after)})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, replay, hold)
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        status = held[0]["status"] if held else 500
        answer = json.loads(body) if body and 200 <= status < 300 else None
        if session_id is not None:
            self._record(session_id, step, answer)
        elif status == 201 and isinstance(answer, dict):
            self.created.append(answer["session_id"])
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        for message in held:
            await send(message)
            if fault is not None and fault.kind == "drop":
                raise ConnectionAbortedError("injected fault: connection dropped after the act was applied")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, session_id: str) -> None:
        current: dict[str, Any] = {"fault": None, "step": None}

        async def faulty_receive() -> Message:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                binary = message.get("bytes") is not None
                try:
                    body = msgpack.unpackb(message["bytes"]) if binary else json.loads(message["text"])
                except ValueError:
                    body = None
                step = _step_of(body)
                fault = self._take("act", step)
                if fault is None or fault.kind != "unavailable":
                    current.update(fault=fault, step=step)
                    return message
                self._record(session_id, step, None)
                frame = {**self._unavailable(fault), "status": 503, "retry_after": fault.retry_after}
                if binary:
                    await send({"type": "websocket.send", "bytes": msgpack.packb(frame)})
                else:
                    await send({"type": "websocket.send", "text": json.dumps(frame)})

        async def faulty_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                data = message.get("bytes")
                answer = msgpack.unpackb(data) if data is not None else json.loads(message["text"])
                self._record(session_id, current["step"], answer)
                fault, current["fault"] = current["fault"], None
                if fault is not None and fault.kind == "drop":
                    await send({"type": "websocket.close", "code": 1011})
                    return
                if fault is not None and fault.kind == "delay":
                    await asyncio.sleep(fault.seconds)
            await send(message)

        await self.app(scope, faulty_receive, faulty_send)


async def _send_json(send: Send, status: int, payload: Any, headers: dict[str, str]) -> None:
    data = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})


class LiveServer:
    """The real app (behind a `FaultInjector`) served by uvicorn in a thread on a free port."""

    def __init__(self, settings: ServerSettings, kind: str, redis: RedisServer | None = None) -> None:
        self.settings = settings
        self.kind = kind
        self.redis = redis
        self.faults = FaultInjector(create_app(settings))
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> LiveServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.faults,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws_max_size=4 * MAX_BODY + 4096,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the {self.kind} server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)


def write_models(directory: Path) -> list[Path]:
    """The two tiny checkpoints every client test server loads."""
    dark = write_checkpoint(directory / DARK, DARK, "1", context_episodes=2)
    cheetah = write_checkpoint(
        directory / CHEETAH,
        CHEETAH,
        "1",
        seed=1,
        observation=ObservationSpec(3),
        action=ActionSpec("continuous", dim=2, low=(-1.0, -1.0), high=(1.0, 1.0)),
        env_id="",
        max_episode_steps=10,
        context_episodes=2,
    )
    return [dark, cheetah]


def server_settings(checkpoints: list[Path], redis_url: str | None = None, **extra: Any) -> ServerSettings:
    """Settings of a client-test server (keys on, 16 KiB bodies, ``darkroom`` the default model)."""
    return ServerSettings(
        checkpoints=[str(c) for c in checkpoints],
        redis_url=redis_url,
        redis_key_prefix=f"clients{uuid.uuid4().hex[:8]}",
        api_keys=[KEY, OTHER],
        max_body_bytes=MAX_BODY,
        default_model=DARK,
        **extra,
    )


class Flavour:
    """One way of using the client: sync or async, acts over HTTP or a WebSocket (json/msgpack).

    Every behaviour test drives all flavours through this thin adapter, so `T2MIRClient`/`Session`
    and `AsyncT2MIRClient`/`AsyncSession` (and their WebSocket channels) cannot drift apart:
    ``run(x)`` is ``x`` for a sync flavour and runs the coroutine ``x`` to completion for an async
    one; ``act`` goes through ``client.act`` (HTTP) or a channel of the session (WebSocket).
    """

    def __init__(self, name: str, url: str, key: str | None = KEY, **client_options: Any) -> None:
        from clients import AsyncT2MIRClient, T2MIRClient

        self.name = name
        self.is_async = name.startswith("async")
        self.websocket = "-ws-" in name
        self.encoding = name.rsplit("-", 1)[1] if self.websocket else "json"
        self._runner = asyncio.Runner() if self.is_async else None
        make = AsyncT2MIRClient if self.is_async else T2MIRClient
        self.client: Any = make(url, key, **client_options)
        self._channels: dict[str, Any] = {}

    def run(self, value: Any) -> Any:
        """The value of a sync call, or the result of an async call's coroutine."""
        return self._runner.run(value) if self._runner is not None else value

    def session(self, **options: Any) -> Any:
        """A new `Session` / `AsyncSession` (over a WebSocket for the ws flavours)."""
        from clients import AsyncSession, Session

        cls = AsyncSession if self.is_async else Session
        return self.run(cls.create(self.client, websocket=self.websocket, encoding=self.encoding, **options))

    def channel(self, session_id: str) -> Any:
        """This flavour's WebSocket channel to ``session_id`` (one per session, reused)."""
        from clients import SyncWebSocketSession, WebSocketSession
        from clients.session import channel_settings

        if session_id not in self._channels:
            cls = WebSocketSession if self.is_async else SyncWebSocketSession
            self._channels[session_id] = cls(**channel_settings(self.client, session_id, self.encoding))
        return self._channels[session_id]

    def act(
        self, session_id: str, step: Any, observation: Any, reward: Any = None, done: bool = False
    ) -> Any:
        """One act over this flavour's transport."""
        if self.websocket:
            return self.run(self.channel(session_id).act(step, observation, reward, done))
        return self.run(self.client.act(session_id, step, observation, reward, done))

    def close(self) -> None:
        for channel in self._channels.values():
            self.run(channel.close())
        if self._runner is not None:
            self.run(self.client.aclose())
            self._runner.close()
        else:
            self.client.close()


FLAVOURS = ["sync-http", "async-http", "sync-ws-json", "async-ws-msgpack"]
