"""The session-store protocol shared by the in-process and the Redis implementations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from server.store.errors import StoreError
from server.store.models import AppendOutcome, AppendRequest, SessionMeta, SessionState, StepRecord


@runtime_checkable
class SessionStore(Protocol):
    """Where a session's metadata, closed episodes and open episode live (DESIGN.md decision 9).

    Every method is a coroutine. Session ids that fail `validate_session_id` are rejected by
    `create` (`InvalidSessionId`) and treated as unknown by every other method. Backend failures
    raise `StoreUnavailable`; nothing is ever left half-written.
    """

    async def create(self, meta: SessionMeta) -> None:
        """Store a new, empty session.

        Only the identity fields of ``meta`` are used (session_id, owner, model, model_version,
        backbone, retention, metadata, created_at); progress fields start from zero.
        Raises `SessionExists` if the id is taken, `InvalidSessionId`, `InvalidRecord`
        (metadata not JSON).
        """
        ...

    async def load(self, session_id: str) -> SessionState | None:
        """The session's full state (meta, retained episodes, open episode), or None if unknown.

        Refreshes the idle TTL.
        """
        ...

    async def get_meta(self, session_id: str) -> SessionMeta | None:
        """The session's metadata (with progress and ``returns``), or None. Does not touch the TTL."""
        ...

    async def append(
        self, session_id: str, record: StepRecord, response: dict[str, Any], created_at: float | None = None
    ) -> AppendOutcome:
        """Append ``record`` (and remember ``response``) atomically and idempotently.

        - unknown session -> "missing";
        - ``created_at`` given and not the session's (it was deleted and created again) ->
          "conflict" with the expected step, nothing changes;
        - ``record.step == meta.last_step`` -> "duplicate" with the stored response, nothing changes;
        - ``record.step != meta.next_step`` -> "conflict" with the expected step, nothing changes;
        - otherwise "appended": the record joins the open episode, its reward is added to the
          episode return; a ``done`` record closes the episode (stored, return appended to
          ``returns``, retention applied, next episode opened).

        Refreshes the idle TTL (also for duplicate / conflict, not for another incarnation). Raises `InvalidRecord` for a
        malformed record or a non-JSON response, before anything is written.
        """
        ...

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[AppendOutcome | StoreError]:
        """Every append of ``appends`` as `append` would do it, in one round trip to the backend.

        Each append is its own atomic, fenced append with its own outcome, in order: an
        `AppendOutcome`, or the `StoreError` that `append` would have raised for it alone
        (`InvalidRecord` before anything of it is written; `StoreUnavailable`). Raises
        `StoreUnavailable` when the round trip itself failed: then any of them may or may not
        have been stored, and each may be retried (a stored one answers "duplicate").
        """
        ...

    async def delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed."""
        ...

    async def ping(self) -> None:
        """Return if the store is usable, raise `StoreUnavailable` otherwise."""
        ...

    async def aclose(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...
