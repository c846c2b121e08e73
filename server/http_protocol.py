"""uvicorn's httptools HTTP/1.1 protocol with the limits uvicorn lacks, and JSON errors.

uvicorn times out idle keep-alive connections but not a connection that never finishes its
request line and headers (nothing is armed before the first request, and any byte received
disarms the keep-alive timer), so a client sending its headers one byte at a time holds a
connection forever; it also answers a request it cannot parse with a plain-text 400.
`GuardedHttpProtocol` adds:

- a header deadline: from the connection's opening, and from each later request's first byte,
  the request line and headers must be complete within ``header_timeout_s`` (else 408);
- a header size bound: at most ``max_header_bytes`` received before the headers are complete
  (else 431);
- the error format of the API (``{"error": {"code", "message"}}``) for these answers and for the
  400 uvicorn sends for an unparsable request.

Each of these answers closes the connection. Bodies are bounded in time and size by
`server.limits.BodyLimitMiddleware`. Pass `protocol_factory(...)` as uvicorn's ``http``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class HeaderLimits:
    """How long and how large a request's line and headers may be."""

    timeout_s: float
    max_bytes: int


class GuardedHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with a header deadline and size bound, and JSON error answers."""

    def __init__(self, *args: Any, limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection; its first request's headers are due within the timeout."""
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (and its header deadline)."""
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse the request if its headers pass ``max_bytes`` unfinished."""
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > self.limits.max_bytes:
            self._refuse(431, "headers_too_large", f"request headers exceed {self.limits.max_bytes} bytes")

    def on_message_begin(self) -> None:
        """A request starts: its headers are due within the timeout."""
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        """The request's headers are in: no more header deadline or size bound for it."""
        self._disarm_header_timer()
        self._awaiting_headers = False
        self._header_bytes = 0
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """The response went out: the next request's headers are counted from now."""
        self._awaiting_headers = True
        self._header_bytes = 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, in the API's error format."""
        self._refuse(400, "invalid_http", msg)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        message = f"request headers not received within {self.limits.timeout_s:g} s"
        self._refuse(408, "header_timeout", message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with an error body (unless a response is under way) and close."""
        self._disarm_header_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(error_response(status, code, message))
        self.transport.close()


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``{"error": {"code", "message"}}``, closing."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def protocol_factory(limits: HeaderLimits) -> partial[GuardedHttpProtocol]:
    """What to pass as uvicorn's ``http`` (it calls it with its own arguments per connection)."""
    return partial(GuardedHttpProtocol, limits=limits)
