"""Request-size and body-time limits as a pure ASGI middleware (Content-Length and chunked bodies).

The middleware reads the raw body before the app sees it: a declared ``Content-Length`` above the
limit is refused at once, an undeclared (chunked) body is refused as soon as the bytes received
pass the limit (413), and a body that has not fully arrived ``body_timeout_s`` after the request's
headers is refused with 408 and its connection closed (a client trickling its body cannot hold a
connection and a task). Accepted bodies are replayed to the app unchanged. It also stamps the
request's arrival time (``scope["state"]["t0"]``, perf_counter seconds) for the ``timings`` of act
answers. Slow or oversized request lines and headers are cut off earlier, by the HTTP protocol
(`server.http_protocol`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.errors import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def arrival_time(scope: Scope) -> float:
    """perf_counter() at which the request reached the server (now if unknown)."""
    state = scope.get("state") or {}
    return float(state.get("t0", time.perf_counter()))


class BodyLimitMiddleware:
    """Answer 413 for HTTP bodies larger than ``max_body_bytes``, 408 for bodies slower than
    ``body_timeout_s``; record arrival times."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["t0"] = time.perf_counter()
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, _too_large(declared, self.max_body_bytes))
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_s:g} s"
            await _refuse(send, ApiError(408, "body_timeout", message))
            return
        except ApiError as exc:
            await _refuse(send, exc)
            return
        if body is None:
            return  # the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body (None if the client disconnected); raises ApiError 413 past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(size, self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "too_large", f"request body of at least {size} bytes exceeds the limit of {limit} bytes"
    )


async def _refuse(send: Send, error: ApiError) -> None:
    """Answer ``error`` and ask the server to close the connection (the rest of the body is unread)."""
    payload = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
