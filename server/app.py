"""The FastAPI application factory.

``create_app(settings)`` wires one `AppContext` (store, models, services, metrics, auth) onto
``app.state.ctx``; models are loaded and warmed up at startup (``/readyz`` turns 200 after), and
shutdown drains acts in progress and every batcher before closing the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from server.auth import DocsGuard
from server.context import AppContext
from server.errors import install_error_handlers
from server.limits import BodyLimitMiddleware
from server.openapi import install_openapi
from server.routes import ActFastPath, ops_router, sessions_router, ws_router
from server.settings import ServerSettings
from server.store import SessionStore

log = logging.getLogger("t2mir.server")


def create_app(
    settings: ServerSettings | None = None,
    store: SessionStore | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """A new app for ``settings`` (default: from ``T2MIR_*`` environment variables); ``store``: a
    session store to use instead of the one the settings name (closed at shutdown); ``on_ready``:
    called once the models are loaded, before the first request (``t2mir serve``: the process's
    collector settings, `server.collector`)."""
    settings = settings or ServerSettings()
    context = AppContext.build(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.checkpoints:
            raise RuntimeError("no checkpoint to serve: pass --checkpoint DIR (or set T2MIR_CHECKPOINTS)")
        torch.set_num_threads(settings.torch_threads)
        store_kind = "redis" if settings.redis_url else "memory"
        try:
            await context.registry.load_all(settings.checkpoints)
            if on_ready is not None:
                on_ready()
            log.info(
                "server ready",
                extra={
                    "store": store_kind,
                    "models": len(context.registry.describe()),
                    "no_cache": settings.no_cache,
                    "compile_step": settings.compile_step,
                },
            )
            yield
        finally:
            log.info("shutting down: draining in-flight acts")
            await context.acts.drain(settings.shutdown_timeout_s)
            await context.registry.aclose()
            await context.store.aclose()
            log.info("shutdown complete")

    app = FastAPI(
        title="t2mir inference server",
        version="0.1.0",
        description="In-context RL agents (T2MIR) as sessions: act over HTTP or WebSocket.",
        lifespan=lifespan,
    )
    app.state.ctx = context
    routers = (sessions_router, ws_router, ops_router)
    install_error_handlers(app, [*app.router.routes, *(r for router in routers for r in router.routes)])
    install_openapi(app)
    app.add_middleware(ActFastPath)  # inside the body limits (the last added is the outermost)
    app.add_middleware(
        BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )
    if context.auth.enabled and not settings.public_docs:
        docs = {app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
        app.add_middleware(DocsGuard, auth=context.auth, paths=frozenset(p for p in docs if p))
    for router in routers:
        app.include_router(router)
    return app
