"""The objects one app is made of, created by `create_app` and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from server.act import ActService
from server.append_coalescer import AppendCoalescer
from server.auth import Authenticator
from server.live_sessions import LiveSessions
from server.metrics import ServerMetrics
from server.mirror import HistoryMirror
from server.registry import ModelRegistry
from server.sessions import KeyedLocks, SessionDeps, SessionService
from server.settings import ServerSettings
from server.store import MemorySessionStore, RedisSessionStore, SessionStore


@dataclass
class AppContext:
    """Settings, store, models, services and metrics of one app (no module-level state)."""

    settings: ServerSettings
    metrics: ServerMetrics
    store: SessionStore
    registry: ModelRegistry
    sessions: SessionService
    acts: ActService
    auth: Authenticator

    @classmethod
    def build(cls, settings: ServerSettings, store: SessionStore | None = None) -> AppContext:
        """Wire everything from settings (models are loaded later, at startup); ``store``: the
        session store to use instead of the one the settings name."""
        metrics = ServerMetrics()
        if store is None:
            store = _store_from(settings)
        registry = ModelRegistry(settings, metrics)
        mirror = HistoryMirror(settings.mirror_sessions)
        live = LiveSessions(settings.max_sessions, settings.session_ttl_seconds)
        appends = AppendCoalescer(store, metrics.store_op)
        deps = SessionDeps(
            store, appends, registry, metrics, mirror, KeyedLocks(), live, settings.max_metadata_bytes
        )
        metrics.bind(
            sessions_active=lambda: len(mirror),
            slots_used=registry.slots_used,
            queue_depths=registry.queue_depths,
            decode_reads=registry.decode_reads,
        )
        sessions, acts = SessionService(deps), ActService(deps)
        return cls(settings, metrics, store, registry, sessions, acts, Authenticator(settings.key_values()))


def _store_from(settings: ServerSettings) -> SessionStore:
    """Redis when ``redis_url`` is set, else the in-process store."""
    if settings.redis_url:
        return RedisSessionStore(
            settings.redis_url,
            key_prefix=settings.redis_key_prefix,
            ttl_seconds=settings.session_ttl_seconds,
            cluster=settings.redis_cluster,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
    return MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)


def ctx(conn: HTTPConnection) -> AppContext:
    """The context of the app serving ``conn`` (a Request or a WebSocket)."""
    return conn.app.state.ctx
