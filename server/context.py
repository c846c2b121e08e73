"""The objects one app is made of, created by `create_app` and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from server.act import ActService
from server.auth import Authenticator
from server.metrics import ServerMetrics
from server.registry import ModelRegistry
from server.sessions import SessionService
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
    def build(cls, settings: ServerSettings) -> AppContext:
        """Wire everything from settings (models are loaded later, at startup)."""
        metrics = ServerMetrics()
        store: SessionStore
        if settings.redis_url:
            store = RedisSessionStore(
                settings.redis_url,
                key_prefix=settings.redis_key_prefix,
                ttl_seconds=settings.session_ttl_seconds,
            )
        else:
            store = MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)
        registry = ModelRegistry(settings, metrics)
        sessions = SessionService(store, registry, metrics, settings)
        metrics.bind(sessions_active=lambda: len(sessions.mirror), slots_used=registry.slots_used)
        return cls(
            settings,
            metrics,
            store,
            registry,
            sessions,
            ActService(sessions),
            Authenticator(settings.key_values()),
        )


def ctx(conn: HTTPConnection) -> AppContext:
    """The context of the app serving ``conn`` (a Request or a WebSocket)."""
    return conn.app.state.ctx
