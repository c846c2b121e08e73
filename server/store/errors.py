"""Errors raised by the session stores.

The server maps them onto HTTP answers: `SessionExists` -> 409, `InvalidSessionId` /
`InvalidRecord` -> 422, `StoreUnavailable` -> 503 with ``Retry-After: retry_after``.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error a session store raises."""


class SessionExists(StoreError):
    """`create` was called with a session id that is already taken."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists")
        self.session_id = session_id


class InvalidSessionId(StoreError, ValueError):
    """The session id does not match `SESSION_ID_PATTERN` (see `validate_session_id`)."""

    def __init__(self, session_id: object) -> None:
        super().__init__(f"invalid session id {session_id!r}: expected 1-128 characters of [A-Za-z0-9_.:-]")
        self.session_id = session_id


class InvalidRecord(StoreError, ValueError):
    """A record, response or metadata dict cannot be stored (wrong type, NaN/inf, not JSON)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StoreUnavailable(StoreError):
    """The backing store cannot be reached or refuses writes right now; retry later.

    Raised for refused connections, timeouts, and Redis LOADING / READONLY / MASTERDOWN / OOM /
    BUSY answers. An operation that raised it either happened completely or not at all (every
    write is one Lua script), so a client may simply retry the same step.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
