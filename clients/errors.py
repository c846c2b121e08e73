"""Exceptions raised by the t2mir clients, one class per kind of server answer.

Every server error is JSON ``{"error": {"code", "message", "field"?, ...}}`` with a code from the
wire protocol's table (`clients.codes`); the client turns it into a `T2MIRClientError` subclass
chosen by the code (``step_conflict``, ``session_exists``), else by the HTTP status (a WebSocket
error frame carries it as ``status``; without one, the table's status for the code is used):

    401/403 Unauthorized   404 SessionNotFound   409 Conflict (StepConflict, SessionExists)
    413 PayloadTooLarge    400/422 InvalidRequest   429/502/503/504 ServiceUnavailable (after retries)

Structured fields are read as fields, never from the message: ``expected_step`` of a step
conflict, ``retry_after`` of a 503 (the ``Retry-After`` header, else the body's field).

`ConnectionFailed` means no answer came back at all (refused, dropped or timed out) after every
retry. Errors found before anything is sent (a NaN observation, a negative step) are
`InvalidRequest` with ``status=None``.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime
from typing import Any

from clients import codes


class T2MIRClientError(Exception):
    """Base class of every client error.

    Attributes:
        status: HTTP status of the answer (None: raised locally, or no answer at all).
        code: the server's error code, e.g. ``"step_conflict"``.
        message: the server's human-readable message.
        field: the offending request field when the server names one (e.g. ``"observation"``).
        body: the full decoded error body, for anything else the server sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        field: str | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body
        where = f" (field {field!r})" if field else ""
        prefix = f"{status} " if status is not None else ""
        super().__init__(f"{prefix}{code}: {message}{where}")


class Unauthorized(T2MIRClientError):
    """401 (or 403): the API key is missing or not accepted."""


class SessionNotFound(T2MIRClientError):
    """404: the session does not exist (or belongs to another API key)."""


class Conflict(T2MIRClientError):
    """409: the request conflicts with the stored state."""


class StepConflict(Conflict):
    """409 ``step_conflict``: the step is out of order; ``expected_step`` is the session's next step."""

    def __init__(self, message: str, *, expected_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.expected_step = expected_step


class SessionExists(Conflict):
    """409 ``session_exists``: the requested ``session_id`` is already taken."""


class PayloadTooLarge(T2MIRClientError):
    """413: the request body is over the server's size limit."""


class InvalidRequest(T2MIRClientError, ValueError):
    """422 / 400: a field is malformed (observation shape, dtype, NaN...). ``field`` names it."""


class ServiceUnavailable(T2MIRClientError):
    """503 (also 429, and 502/504 from a proxy) after every retry; ``retry_after`` is the server's
    hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConnectionFailed(T2MIRClientError):
    """No answer after every retry: refused, dropped or timed out (``code`` says which)."""


_BY_STATUS: dict[int, type[T2MIRClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: SessionNotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: ServiceUnavailable,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}

_BY_CODE: dict[str, type[T2MIRClientError]] = {
    codes.STEP_CONFLICT: StepConflict,
    codes.SESSION_EXISTS: SessionExists,
}


def parse_retry_after(value: Any) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds, possibly fractional, or an HTTP date)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0.0, float(value))
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def error_from_body(status: int | None, body: Any, *, retry_after: float | None = None) -> T2MIRClientError:
    """Build the exception for an error answer.

    Args:
        status: HTTP status (None for a WebSocket error frame: then the frame's ``status``, else the
            table's status for the code).
        body: decoded body: ``{"error": {...}}``, or anything else (text of a proxy's error page).
        retry_after: seconds from the ``Retry-After`` header, if any (else the body's field).
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or (f"http_{status}" if status else "error"))
        message = str(error.get("message") or code)
        field = error.get("field")
        field = str(field) if field is not None else None
        if status is None:
            raw_status = body.get("status")
            row = codes.ERROR_CODES.get(code)
            status = raw_status if isinstance(raw_status, int) else (row.status if row else None)
        if retry_after is None:
            retry_after = parse_retry_after(error.get("retry_after", body.get("retry_after")))
    else:
        error = {}
        code = f"http_{status}" if status else "error"
        message = str(body or code)[:500]
        field = None
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status or 0, T2MIRClientError)
    kwargs: dict[str, Any] = {"status": status, "code": code, "field": field, "body": body}
    if cls is StepConflict:
        expected = error.get("expected_step")
        return StepConflict(message, expected_step=expected if isinstance(expected, int) else None, **kwargs)
    if cls is ServiceUnavailable:
        return ServiceUnavailable(message, retry_after=retry_after, **kwargs)
    return cls(message, **kwargs)
