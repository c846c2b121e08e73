"""Session lifecycle: create, describe, delete; what it shares with the act flow (`SessionDeps`).

A session's store metadata holds ``{"sampling": ..., "action_noise": ..., "client": <the client's
metadata>}`` plus its model family's part (`server.families`; M3DT: ``"m3dt"``); the owner field holds the hash of the API key that created it (see `server.auth`).
A session of another owner is reported exactly like an unknown one (404).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from server.append_coalescer import AppendCoalescer
from server.errors import ApiError, shorten, unavailable
from server.live_sessions import LiveSessions
from server.metrics import ServerMetrics
from server.mirror import HistoryMirror
from server.registry import LoadedModel, ModelRegistry, describe_action
from server.schemas import CreateSessionBody
from server.store import (
    AppendOutcome,
    InvalidRecord,
    InvalidSessionId,
    SessionExists,
    SessionMeta,
    SessionStore,
    StepRecord,
    StoreUnavailable,
    dumps_json,
)
from t2mir_model import check_action_noise

T = TypeVar("T")
log = logging.getLogger("t2mir.server")


def derive_seed(session_id: str, step: int) -> int:
    """The sampling seed of one step: a hash of (session id, step), identical on every replica."""
    digest = hashlib.blake2b(f"{session_id}\x00{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def not_found(session_id: str) -> ApiError:
    """The 404 for an unknown session (or one of another API key)."""
    return ApiError(404, "session_not_found", f"session {shorten(session_id)!r} not found")


def sampling_of(meta: SessionMeta) -> str:
    """'sample' or 'greedy' as stored at creation."""
    return str(meta.metadata.get("sampling", "sample"))


def action_noise_of(meta: SessionMeta) -> float:
    """Exploration noise on continuous actions as stored at creation (0: the tanh mean)."""
    return float(meta.metadata.get("action_noise", 0.0))


class KeyedLocks:
    """One asyncio lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Serialise everything done under ``key`` (FIFO)."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True)
class SessionDeps:
    """What the session and act services work with (one of each per app): the store (and its
    append coalescer), the loaded models, the metrics, this process's history mirror, its per-session locks, its count of live
    sessions and the metadata size limit."""

    store: SessionStore
    appends: AppendCoalescer
    """The store's appends, gathered per event-loop iteration (`ActService` appends through it)."""
    registry: ModelRegistry
    metrics: ServerMetrics
    mirror: HistoryMirror
    locks: KeyedLocks
    live: LiveSessions
    max_metadata_bytes: int

    async def timed(self, op: str, awaitable: Awaitable[T]) -> T:
        """Await a store call, recording its latency; StoreUnavailable becomes a 503 ApiError."""
        t = time.perf_counter()
        try:
            return await awaitable
        except StoreUnavailable as exc:
            raise _unavailable(op, exc) from exc
        finally:
            self.metrics.store_op(op, time.perf_counter() - t)

    async def append(
        self, session_id: str, record: StepRecord, response: dict[str, Any], created_at: float
    ) -> AppendOutcome:
        """`SessionStore.append` through the coalescer, which times its round trips;
        StoreUnavailable becomes a 503 ApiError."""
        try:
            return await self.appends.append(session_id, record, response, created_at)
        except StoreUnavailable as exc:
            raise _unavailable("append", exc) from exc

    async def forget(self, session_id: str, model: LoadedModel | None, created_at: float) -> None:
        """Drop the local mirror and the engine slot of a session."""
        self.mirror.drop(session_id)
        if model is not None and not model.batcher.closed:
            await model.batcher.evict((session_id, created_at))


def _unavailable(op: str, exc: StoreUnavailable) -> ApiError:
    """The 503 for a store call that found the store unavailable (logged)."""
    log.warning("session store unavailable", extra={"op": op, "error": str(exc)[:200]})
    return unavailable(f"session store unavailable ({op}): {exc}", max(exc.retry_after, 1))


class SessionService:
    """``POST /sessions``, ``GET /sessions/{id}``, ``DELETE /sessions/{id}``."""

    def __init__(self, deps: SessionDeps) -> None:
        self.deps = deps

    async def owned_meta(self, owner: str, session_id: str) -> SessionMeta:
        """The session's metadata if it exists and belongs to ``owner``; else 404."""
        meta = await self.deps.timed("get_meta", self.deps.store.get_meta(session_id))
        if meta is None:
            self.deps.live.release(session_id)
        if meta is None or meta.owner != owner:
            raise not_found(session_id)
        return meta

    def info(self, meta: SessionMeta) -> dict[str, Any]:
        """JSON description of a session (see `SessionInfo`)."""
        model = self.deps.registry.get(meta.model, meta.model_version)
        config = model.config if model is not None else None
        family = model.family if model is not None else None
        return {
            "session_id": meta.session_id,
            "model": {"name": meta.model, "version": meta.model_version},
            "backbone": meta.backbone,
            "variant": model.engine.variant if model is not None else None,
            "env_id": config.env_id if config else None,
            "observation_dim": family.observation_dim(meta) if family else None,
            "action": describe_action(family.action_spec(meta)) if family else None,
            "max_episode_steps": config.max_episode_steps if config else None,
            "sampling": sampling_of(meta),
            "action_noise": action_noise_of(meta),
            "step": meta.next_step,
            "episode": meta.episode,
            "episode_steps": meta.episode_steps,
            "episode_return": meta.episode_return,
            "returns": list(meta.returns),
            "metadata": meta.metadata.get("client", {}),
            "created_at": meta.created_at,
            **(family.describe_session(meta) if family else {}),
        }

    async def create(self, owner: str, body: CreateSessionBody) -> dict[str, Any]:
        """Create a session on the current version of the requested model."""
        await self.deps.registry.sweep()
        model = self.deps.registry.resolve(body.model)
        family_metadata = model.family.create_metadata(body)
        session_id = body.session_id or uuid.uuid4().hex
        sampling = body.sampling or "sample"
        if not model.discrete:
            sampling = "greedy"  # continuous heads are deterministic (tanh mean) plus action_noise
        action_noise = model.default_action_noise if body.action_noise is None else body.action_noise
        try:
            check_action_noise(action_noise, model.config.action)
        except ValueError as exc:
            raise ApiError(422, "invalid_field", str(exc), field="action_noise") from exc
        self._check_metadata(body.metadata)
        meta = SessionMeta(
            session_id=session_id,
            owner=owner,
            model=model.name,
            model_version=model.version,
            backbone=model.backbone,
            retention=model.retention,
            metadata={
                "sampling": sampling,
                "action_noise": action_noise,
                "client": body.metadata,
                **family_metadata,
            },
        )
        counted = self.deps.live.reserve(session_id)
        try:
            await self._store_new(meta)
        except BaseException:
            if counted:
                self.deps.live.release(session_id)
            raise
        model.last_used = time.monotonic()
        return self.info(meta)

    async def _store_new(self, meta: SessionMeta) -> None:
        """``store.create``, its refusals as ApiErrors."""
        session_id = meta.session_id
        try:
            await self.deps.timed("create", self.deps.store.create(meta))
        except SessionExists as exc:
            raise ApiError(
                409, "session_exists", f"session {session_id!r} already exists", field="session_id"
            ) from exc
        except InvalidSessionId as exc:
            raise ApiError(422, "invalid_field", str(exc), field="session_id") from exc
        except InvalidRecord as exc:
            raise ApiError(422, "invalid_field", f"metadata: {exc}", field="metadata") from exc

    def _check_metadata(self, metadata: dict[str, Any]) -> None:
        """422 unless ``metadata`` is finite JSON of at most ``max_metadata_bytes`` (UTF-8)."""
        try:
            size = len(dumps_json(metadata, "metadata").encode())
        except InvalidRecord as exc:
            raise ApiError(422, "invalid_field", f"metadata: {exc}", field="metadata") from exc
        limit = self.deps.max_metadata_bytes
        if size > limit:
            raise ApiError(
                422,
                "metadata_too_large",
                f"metadata of {size} bytes (as JSON) exceeds the limit of {limit} bytes",
                field="metadata",
            )

    async def get(self, owner: str, session_id: str) -> dict[str, Any]:
        """Describe a session."""
        return self.info(await self.owned_meta(owner, session_id))

    async def delete(self, owner: str, session_id: str) -> None:
        """Delete a session (its store state, mirror and engine slot)."""
        deps = self.deps
        async with deps.locks.hold(session_id):
            meta = await self.owned_meta(owner, session_id)
            await deps.timed("delete", deps.store.delete(session_id))
            deps.live.release(session_id)
            await deps.forget(session_id, deps.registry.get(meta.model, meta.model_version), meta.created_at)
