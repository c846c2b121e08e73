"""When to retry, and how long to wait, shared by the HTTP and WebSocket clients.

Acts are idempotent by ``step``: a retry resends the very same body, and a server that already
applied it answers with the stored response. So an act is retried after anything that may or may
not have reached the server (a dropped connection, a read timeout) as well as after a 503.
Creating a session without an id is not idempotent (a lost answer would leave an orphan session),
so `create_session` is retried only when the request certainly did not arrive: connection refused,
connect timeout, or a 503 (the server wrote nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({502, 503, 504})
"""Answers worth retrying: the store is down (503) or a proxy lost its upstream (502/504)."""

SAFE_RETRY_STATUSES = frozenset({503})
"""Answers after which even a non-idempotent request was certainly not applied."""

# The request never left this machine (or was never accepted): safe to resend anything.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# The request may have been applied and only its answer lost: resend only idempotent requests.
MAYBE_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request.

    ``retries`` extra attempts follow the first; the n-th retry waits ``backoff * 2**n`` seconds
    (at most ``max_backoff``), or the server's ``Retry-After`` (at most ``max_retry_after``).
    """

    retries: int = 3
    """Extra attempts after the first (0 disables retrying)."""
    backoff: float = 0.2
    """First wait in seconds; doubles with every retry."""
    max_backoff: float = 2.0
    """Longest wait between two attempts when the server gave no Retry-After."""
    max_retry_after: float = 10.0
    """Cap on a server's Retry-After (a client must not stall for minutes on a bad hint)."""

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError(f"retry settings must be >= 0: {self}")

    def can_retry(self, attempt: int) -> bool:
        """True if attempt number ``attempt`` (0 = the first) may be followed by another."""
        return attempt < self.retries

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the retry that follows attempt ``attempt``."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return min(self.backoff * (2**attempt), self.max_backoff)
