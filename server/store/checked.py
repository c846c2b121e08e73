"""What both session stores do before they reach their backend: the argument checks of the
`SessionStore` protocol, in one place.

An invalid session id is refused by `create` (`InvalidSessionId`) and unknown to every other
call; a malformed record, response or metadata raises `InvalidRecord` before anything is written
(for an append, even when the session is unknown). A store subclasses `CheckedStore` and
implements the backend calls, which receive valid ids and normalised, JSON-encoded arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from server.store.errors import InvalidRecord, StoreError
from server.store.models import (
    AppendOutcome,
    AppendRequest,
    SessionMeta,
    SessionState,
    StepRecord,
    dumps_json,
    encode_json,
    is_valid_session_id,
    normalize_record,
    validate_session_id,
)

CheckedAppend = tuple[str, StepRecord, str, float | None]
"""An append as `CheckedStore._append` takes it: valid session id, normalised record, response
JSON, creation time."""


class CheckedStore(ABC):
    """The `SessionStore` calls that take arguments, checked here and stored by the subclass."""

    async def create(self, meta: SessionMeta) -> None:
        """Store a new empty session; raise `SessionExists` / `InvalidSessionId` / `InvalidRecord`."""
        validate_session_id(meta.session_id)
        await self._create(meta, dumps_json(meta.metadata, "metadata"))

    async def load(self, session_id: str) -> SessionState | None:
        """Full state or None; refreshes the TTL (see `SessionStore.load`)."""
        return await self._load(session_id) if is_valid_session_id(session_id) else None

    async def get_meta(self, session_id: str) -> SessionMeta | None:
        """Metadata with progress fields, or None; does not touch the TTL."""
        return await self._get_meta(session_id) if is_valid_session_id(session_id) else None

    async def append(
        self, session_id: str, record: StepRecord, response: dict[str, Any], created_at: float | None = None
    ) -> AppendOutcome:
        """Atomic, idempotent append keyed on ``record.step`` (see `SessionStore.append`)."""
        rec = normalize_record(record)
        response_json = encode_json(response, "response")
        if not is_valid_session_id(session_id):
            return AppendOutcome("missing")
        return await self._append(session_id, rec, response_json, created_at)

    async def append_many(self, appends: Sequence[AppendRequest]) -> list[AppendOutcome | StoreError]:
        """Several appends in one backend round trip (see `SessionStore.append_many`)."""
        outcomes: list[AppendOutcome | StoreError] = []
        checked: list[CheckedAppend] = []
        slots: list[int] = []  # where each checked append's outcome goes
        for append in appends:
            try:
                rec = normalize_record(append.record)
                response_json = encode_json(append.response, "response")
            except InvalidRecord as exc:
                outcomes.append(exc)
                continue
            if not is_valid_session_id(append.session_id):
                outcomes.append(AppendOutcome("missing"))
                continue
            slots.append(len(outcomes))
            outcomes.append(AppendOutcome("missing"))  # replaced below
            checked.append((append.session_id, rec, response_json, append.created_at))
        if checked:
            for slot, outcome in zip(slots, await self._append_many(checked), strict=True):
                outcomes[slot] = outcome
        return outcomes

    async def delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed."""
        return await self._delete(session_id) if is_valid_session_id(session_id) else False

    @abstractmethod
    async def _create(self, meta: SessionMeta, metadata_json: str) -> None:
        """Store a new empty session of a valid id, its metadata as JSON; raise `SessionExists`."""

    @abstractmethod
    async def _load(self, session_id: str) -> SessionState | None:
        """`SessionStore.load` of a valid id."""

    @abstractmethod
    async def _get_meta(self, session_id: str) -> SessionMeta | None:
        """`SessionStore.get_meta` of a valid id."""

    @abstractmethod
    async def _append(
        self, session_id: str, record: StepRecord, response_json: str, created_at: float | None
    ) -> AppendOutcome:
        """`SessionStore.append` of a normalised record, with its response as JSON, to a valid id."""

    @abstractmethod
    async def _append_many(self, appends: list[CheckedAppend]) -> list[AppendOutcome | StoreError]:
        """`SessionStore.append_many` of checked appends (as `_append` takes them), one round trip."""

    @abstractmethod
    async def _delete(self, session_id: str) -> bool:
        """`SessionStore.delete` of a valid id."""
