"""When to retry, and how long to wait, shared by the HTTP and WebSocket clients.

Acts are idempotent by ``step``: a retry resends the very same body, and a server that already
applied it answers with the stored response. So an act is retried after anything that may or may
not have reached the server (a dropped connection, a read timeout) as well as after a 503.
Creating a session without an id is not idempotent (a lost answer would leave an orphan session),
so `create_session` is retried only when the request certainly did not arrive: connection refused,
connect timeout, or an error answer whose code says nothing was applied (``retry`` in
`clients.codes`).

Waits grow exponentially with full jitter (a uniform draw below ``backoff * 2**n``, capped), so
clients that lost the same server do not come back in lockstep; a server's ``Retry-After`` is a
lower bound on the wait (capped by ``max_retry_after``). Retrying stops after ``retries`` extra attempts or once ``max_elapsed`` seconds would be
exceeded, whichever comes first.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from clients import codes
from clients.errors import ServiceUnavailable, T2MIRClientError

RETRY_STATUSES = frozenset({502, 503, 504})
"""Answers worth retrying an idempotent request after: the server could not answer now (503), or a
proxy in front of it lost its upstream (502/504)."""

SAFE_RETRY_STATUSES = frozenset({503})
"""Statuses without a known code after which even a non-idempotent request was certainly not applied."""

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
    """How often and how long to retry one request (see the module docstring)."""

    retries: int = 3
    """Extra attempts after the first (0 disables retrying)."""
    backoff: float = 0.2
    """Upper end of the first wait in seconds; doubles with every retry."""
    max_backoff: float = 2.0
    """Largest upper end of a wait when the server gave no Retry-After."""
    max_retry_after: float = 10.0
    """Cap on a server's Retry-After (a client must not stall for minutes on a bad hint)."""
    max_elapsed: float | None = 30.0
    """No retry starts later than this many seconds after the first attempt (None: no time bound)."""
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)
    """Source of the jitter (seed it for reproducible waits)."""

    def __post_init__(self) -> None:
        values = (self.retries, self.backoff, self.max_backoff, self.max_retry_after, self.max_elapsed or 0)
        if min(values) < 0:
            raise ValueError(f"retry settings must be >= 0: {self}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the retry that follows attempt ``attempt`` (0 = the first)."""
        jittered = self.rng.uniform(0.0, min(self.backoff * (2**attempt), self.max_backoff))
        if retry_after is None:
            return jittered
        return max(jittered, min(max(retry_after, 0.0), self.max_retry_after))

    def attempts(self) -> Attempts:
        """A fresh retry state for one request."""
        return Attempts(self)


class Attempts:
    """The retry state of one request: how many attempts were made and since when."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.made = 1
        """Attempts made so far (the first counts)."""
        self.started = time.monotonic()

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Seconds to wait before one more attempt, or None when the policy allows no more."""
        if self.made > self.policy.retries:
            return None
        delay = self.policy.delay(self.made - 1, retry_after)
        limit = self.policy.max_elapsed
        if limit is not None and time.monotonic() - self.started + delay > limit:
            return None
        self.made += 1
        return delay


def worth_retrying(error: T2MIRClientError, idempotent: bool) -> bool:
    """True if the request that got the error answer ``error`` should be sent again.

    A code of the table decides by its ``retry`` flag (the server applied nothing); an answer
    without one (a proxy's 502/503/504 page) is retried if the request is idempotent, or for a 503.
    """
    if not isinstance(error, ServiceUnavailable):
        return False
    row = codes.ERROR_CODES.get(error.code)
    if row is not None:
        return row.retry
    return error.status in (RETRY_STATUSES if idempotent else SAFE_RETRY_STATUSES)
