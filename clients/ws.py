"""WebSocket channel to one session: ``WS /sessions/{id}/ws``, JSON text or msgpack binary frames.

Each message is an act body and each answer an act response or an ``{"error": {...}}`` frame (the
socket stays open after an error). One act is in flight at a time. When the connection drops or an
answer does not come within ``timeout``, the channel reconnects and resends the same frame (same
``step``), so nothing is applied twice::

    async with WebSocketSession("http://localhost:8000", info.session_id, encoding="msgpack") as ws:
        result = await ws.act(step=0, observation=obs)

`SyncWebSocketSession` wraps it for synchronous code (it runs its own event loop, so do not call it
from inside a running one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from clients.errors import ConnectionFailed, T2MIRClientError, error_from_body, parse_retry_after
from clients.http import USER_AGENT
from clients.protocol import ActResult, act_body
from clients.retry import RETRY_STATUSES, Attempts, RetryPolicy, worth_retrying

ENCODINGS = ("json", "msgpack")


def websocket_url(base_url: str, session_id: str) -> str:
    """``http(s)://host/prefix`` -> ``ws(s)://host/prefix/sessions/{id}/ws``."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"base_url must be http(s):// or ws(s)://, got {base_url!r}")
    path = f"{parts.path}/sessions/{quote(str(session_id), safe='')}/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _decode_frame(message: str | bytes) -> Any:
    if isinstance(message, bytes):
        try:
            return msgpack.unpackb(message, raw=False)
        except (ValueError, msgpack.UnpackException):
            return json.loads(message)
    return json.loads(message)


POLICY_VIOLATION = 1008
"""Close code the server uses after refusing the API key (following an error frame)."""


def _closed_error(exc: ConnectionClosed) -> T2MIRClientError | None:
    """The error a close code stands for (None: just a dropped connection, worth a retry).

    1008 (policy violation) is the server's answer to a missing or unknown API key; application
    codes ``4000 + HTTP status`` (e.g. 4404) are mapped like that status.
    """
    frame = exc.rcvd
    if frame is None:
        return None
    if frame.code == POLICY_VIOLATION:
        status = 401
    elif 4000 <= frame.code < 5000 and (frame.code - 4000) not in RETRY_STATUSES:
        status = frame.code - 4000
    else:
        return None
    body = {
        "error": {"code": f"closed_{frame.code}", "message": frame.reason or "socket closed by the server"}
    }
    return error_from_body(status, body)


class WebSocketSession:
    """Asyncio act channel for one session (see the module docstring).

    Args:
        base_url: server root (``http://``, ``https://``, ``ws://`` or ``wss://``).
        session_id: the session to act on (created beforehand over HTTP).
        api_key: sent as ``Authorization: Bearer KEY`` in the handshake.
        encoding: ``"json"`` (text frames) or ``"msgpack"`` (binary frames).
        timeout: seconds for one attempt (connect + send + answer).
        retries, backoff, max_backoff, max_retry_after, max_elapsed: as for the HTTP client.
        ping_interval: seconds between keepalive pings (None: no pings).
    """

    def __init__(
        self,
        base_url: str,
        session_id: str,
        api_key: str | None = None,
        *,
        encoding: str = "json",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
        max_retry_after: float = 10.0,
        max_elapsed: float | None = 30.0,
        ping_interval: float | None = 20.0,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.url = websocket_url(base_url, session_id)
        self.session_id = session_id
        self.encoding = encoding
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_backoff, max_retry_after, max_elapsed)
        self.headers = {"User-Agent": USER_AGENT}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.ping_interval = ping_interval
        self.connects = 0
        """How many connections were opened (1 + reconnects)."""
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()

    def _encode(self, body: dict[str, Any]) -> str | bytes:
        if self.encoding == "msgpack":
            return msgpack.packb(body, use_bin_type=True)
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    async def connect(self) -> None:
        """Open the socket now (otherwise the first act opens it); retried like an act."""
        async with self._lock:
            await self._attempts(self._open)

    async def _open(self) -> None:
        if self._ws is None:
            self._ws = await connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=self.timeout,
                close_timeout=1.0,
                ping_interval=self.ping_interval,
                user_agent_header=None,
            )
            self.connects += 1

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(OSError, TimeoutError, ConnectionClosed):
                await asyncio.wait_for(ws.close(), 1.0)

    async def act(self, step: int, observation: Any, reward: Any = None, done: bool = False) -> ActResult:
        """One act; on a drop or timeout, reconnect and resend the same frame (same ``step``)."""
        frame = self._encode(act_body(step, observation, reward, done))

        async def roundtrip() -> Any:
            await self._open()
            assert self._ws is not None
            await self._ws.send(frame)
            return _decode_frame(await self._ws.recv())

        async with self._lock:
            answer = await self._attempts(roundtrip)
        if not isinstance(answer, dict):
            raise T2MIRClientError(f"unexpected frame {answer!r:.200}", code="bad_response")
        return ActResult.from_dict(answer)

    async def _attempts(self, once: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``once`` (connect, or send one frame and read the answer) until it succeeds."""
        attempts = self.policy.attempts()
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await once()
            except InvalidStatus as exc:
                await self._drop()
                delay = self._after_handshake_error(exc, attempts)
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                await self._drop()
                delay = self._after_drop(exc, attempts)
            else:
                if not (isinstance(answer, dict) and "error" in answer):
                    return answer
                error = error_from_body(None, answer)
                wait = (
                    attempts.next_delay(getattr(error, "retry_after", None))
                    if worth_retrying(error, True)
                    else None
                )
                if wait is None:
                    raise error
                delay = wait
            await asyncio.sleep(delay)

    def _after_handshake_error(self, exc: InvalidStatus, attempts: Attempts) -> float:
        status = exc.response.status_code
        retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
        raw = exc.response.body or b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode(errors="replace")
        error = error_from_body(status, body, retry_after=retry_after)
        delay = attempts.next_delay(retry_after) if worth_retrying(error, True) else None
        if delay is None:
            raise error
        return delay

    def _after_drop(self, exc: Exception, attempts: Attempts) -> float:
        if isinstance(exc, ConnectionClosed) and (error := _closed_error(exc)) is not None:
            raise error
        delay = attempts.next_delay()
        if delay is not None:
            return delay
        code = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
        raise ConnectionFailed(
            f"websocket {self.url} failed after {attempts.made} attempt(s): {type(exc).__name__}: {exc}",
            code=code,
        ) from exc

    async def close(self) -> None:
        """Close the socket (the session itself stays on the server)."""
        await self._drop()

    async def __aenter__(self) -> WebSocketSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SyncWebSocketSession:
    """Blocking wrapper over `WebSocketSession` (same arguments), with its own event loop.

    Its loop runs only during a call, so keepalive pings are off by default (``ping_interval``);
    a socket the server closed while idle is reopened by the next act (same step resent).
    """

    def __init__(self, base_url: str, session_id: str, api_key: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("ping_interval", None)
        self._runner = asyncio.Runner()
        self._session = WebSocketSession(base_url, session_id, api_key, **kwargs)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def connects(self) -> int:
        return self._session.connects

    def _run(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._runner.run(make())
        raise RuntimeError("SyncWebSocketSession cannot run inside an event loop; use WebSocketSession")

    def act(self, step: int, observation: Any, reward: Any = None, done: bool = False) -> ActResult:
        return self._run(lambda: self._session.act(step, observation, reward, done))

    def close(self) -> None:
        try:
            self._run(self._session.close)
        finally:
            self._runner.close()

    def __enter__(self) -> SyncWebSocketSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
