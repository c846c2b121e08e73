"""In-process session store: the embedded default for single-process use (demo, laptop, tests).

Same protocol and semantics as the Redis store. Each session is an immutable `_Entry`; a write
builds the new entry completely (arguments checked by `CheckedStore`, then `state_after_append`)
and then swaps it in under a lock, so a failing call changes nothing and concurrent callers
(tasks or threads) never see a half-applied append. Returned objects are copies: callers may
mutate them freely.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from server import json_codec
from server.store.checked import CheckedAppend, CheckedStore
from server.store.errors import SessionExists, StoreError
from server.store.models import (
    AppendOutcome,
    Episode,
    SessionMeta,
    SessionState,
    StepRecord,
    state_after_append,
)


@dataclass
class _Entry:
    """One session. Everything but ``expires_at`` is replaced, never mutated."""

    state: SessionState  # its meta's metadata is a placeholder: see metadata_json
    metadata_json: str
    last_response_json: str | None  # what copies of state.meta.last_response are made from
    expires_at: float | None


class MemorySessionStore(CheckedStore):
    """Dict-backed `SessionStore` with a lazily enforced idle TTL.

    Args:
        ttl_seconds: idle time after which a session disappears (None: never). Every `load` and
            `append` restarts the countdown. An expired session is dropped when next touched, and
            every expired one by a sweep that a `create` or `append` runs at most once per TTL.
        clock: monotonic clock in seconds, injectable for tests.
    """

    def __init__(
        self, *, ttl_seconds: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0 or None")
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Entry] = {}
        self._next_sweep = clock() + (ttl_seconds or 0.0)

    # -- helpers (call with the lock held) -------------------------------------------------

    def _deadline(self) -> float | None:
        return None if self._ttl is None else self._clock() + self._ttl

    def _live(self, session_id: str) -> _Entry | None:
        entry = self._sessions.get(session_id)
        if entry is not None and entry.expires_at is not None and self._clock() >= entry.expires_at:
            del self._sessions[session_id]
            return None
        return entry

    def _maybe_sweep(self) -> None:
        if self._ttl is not None and self._clock() >= self._next_sweep:
            self._purge()
            self._next_sweep = self._clock() + self._ttl

    def _purge(self) -> int:
        now = self._clock()
        dead = [k for k, e in self._sessions.items() if e.expires_at is not None and now >= e.expires_at]
        for key in dead:
            del self._sessions[key]
        return len(dead)

    @staticmethod
    def _last_response(entry: _Entry) -> dict[str, Any] | None:
        return None if entry.last_response_json is None else json_codec.loads(entry.last_response_json)

    @classmethod
    def _meta_out(cls, entry: _Entry) -> SessionMeta:
        meta = entry.state.meta
        last_response = cls._last_response(entry)
        metadata = json_codec.loads(entry.metadata_json)
        return replace(meta, metadata=metadata, last_response=last_response, returns=list(meta.returns))

    # -- backend (arguments checked by `CheckedStore`) ---------------------------------------

    async def _create(self, meta: SessionMeta, metadata_json: str) -> None:
        session_id = meta.session_id
        identity = (meta.owner, meta.model, meta.model_version, meta.backbone, meta.retention)
        fresh = SessionMeta(session_id, *identity, created_at=float(meta.created_at))
        with self._lock:
            self._maybe_sweep()
            if self._live(session_id) is not None:
                raise SessionExists(session_id)
            state = SessionState(fresh, [], [])
            self._sessions[session_id] = _Entry(state, metadata_json, None, self._deadline())

    async def _load(self, session_id: str) -> SessionState | None:
        """Full state (copies) or None; refreshes the TTL."""
        with self._lock:
            entry = self._live(session_id)
            if entry is None:
                return None
            entry.expires_at = self._deadline()
        episodes = [Episode(e.index, e.ret, [r.copy() for r in e.records]) for e in entry.state.episodes]
        return SessionState(self._meta_out(entry), episodes, [r.copy() for r in entry.state.current])

    async def _get_meta(self, session_id: str) -> SessionMeta | None:
        with self._lock:
            entry = self._live(session_id)
        return None if entry is None else self._meta_out(entry)

    async def _append(
        self, session_id: str, rec: StepRecord, response_json: str, created_at: float | None
    ) -> AppendOutcome:
        with self._lock:
            self._maybe_sweep()
            entry = self._live(session_id)
            if entry is None:
                return AppendOutcome("missing")
            meta = entry.state.meta
            if created_at is not None and created_at != meta.created_at:
                return AppendOutcome("conflict", next_step=meta.next_step)
            entry.expires_at = self._deadline()
            if meta.last_step is not None and rec.step == meta.last_step:
                return AppendOutcome("duplicate", response=self._last_response(entry))
            if rec.step != meta.next_step:
                return AppendOutcome("conflict", next_step=meta.next_step)
            state = state_after_append(entry.state, rec, json_codec.loads(response_json))
            self._sessions[session_id] = _Entry(state, entry.metadata_json, response_json, entry.expires_at)
        return AppendOutcome("appended")

    async def _append_many(self, appends: list[CheckedAppend]) -> list[AppendOutcome | StoreError]:
        """One `_append` after the other (each under the lock): no round trip to save here."""
        outcomes: list[AppendOutcome | StoreError] = []
        for append in appends:
            try:
                outcomes.append(await self._append(*append))
            except StoreError as exc:  # this append's own refusal (InvalidRecord)
                outcomes.append(exc)
        return outcomes

    async def _delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed (and had not expired)."""
        with self._lock:
            existed = self._live(session_id) is not None
            self._sessions.pop(session_id, None)
        return existed

    async def ping(self) -> None:
        """Always usable."""

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- extras --------------------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Drop every expired session now; return how many were dropped."""
        with self._lock:
            return self._purge()

    def __len__(self) -> int:
        """Number of stored sessions (expired ones not yet purged included)."""
        return len(self._sessions)
