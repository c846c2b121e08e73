"""The bound on live sessions: how many sessions this server process created that are still live.

Neither store can count its sessions cheaply and exactly (a Redis Cluster has no global key
count, and Redis forgets idle sessions by itself), so each process counts what it created: a
session stops counting when this process deletes it, finds it unknown, or has not seen it acted
on for the idle TTL. With one process (the in-process store) that is the exact number of live
sessions; behind a load balancer each replica bounds its own share (a session acted on only
through another replica stops counting here after the TTL, one deleted through another replica
counts here until then).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from server.errors import ApiError


class LiveSessions:
    """Session ids this process created, least recently active first, with their last activity.

    Args:
        limit: most live sessions; `reserve` refuses more.
        ttl_seconds: idle time after which a session no longer counts (None: never).
        clock: monotonic clock in seconds, injectable for tests.
    """

    def __init__(
        self, limit: int, ttl_seconds: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self._ttl = ttl_seconds
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def reserve(self, session_id: str) -> bool:
        """Count ``session_id`` before it is created; True if it was not counted yet (the caller
        `release`s it if the creation fails). Raises ApiError 503 ``too_many_sessions`` at the
        limit."""
        self._expire()
        if session_id in self._seen:
            return False
        if len(self._seen) >= self.limit:
            raise ApiError(
                503,
                "too_many_sessions",
                f"this server holds its maximum of {self.limit} live sessions; delete some or retry later",
                headers={"Retry-After": "60"},
            )
        self._seen[session_id] = self._clock()
        return True

    def touch(self, session_id: str) -> None:
        """Record activity of ``session_id`` (if this process counts it)."""
        if session_id in self._seen:
            self._seen[session_id] = self._clock()
            self._seen.move_to_end(session_id)

    def release(self, session_id: str) -> None:
        """Stop counting ``session_id`` (deleted, or unknown to the store)."""
        self._seen.pop(session_id, None)

    def _expire(self) -> None:
        if self._ttl is None:
            return
        cutoff = self._clock() - self._ttl
        while self._seen:
            oldest, seen = next(iter(self._seen.items()))
            if seen > cutoff:
                return
            del self._seen[oldest]

    def __len__(self) -> int:
        self._expire()
        return len(self._seen)
