"""Models, health, readiness and metrics routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.context import ctx
from server.errors import ApiError
from server.openapi import errors
from server.routes.sessions import owner

router = APIRouter()


@router.get("/models", tags=["models"], responses=errors(401))
async def list_models(request: Request, caller: str = Depends(owner)) -> dict[str, Any]:
    """Every loaded model version (``current``: the one new sessions get)."""
    return {"models": ctx(request).registry.describe()}


@router.post("/models/{name}/reload", tags=["models"], responses=errors(401, 404, 409))
async def reload_model(name: str, request: Request, caller: str = Depends(owner)) -> dict[str, Any]:
    """Load the model's checkpoint directory again; its version becomes current for new sessions.

    Sessions keep the version they started with; in-flight requests are not dropped.
    """
    registry = ctx(request).registry
    model, previous = await registry.reload(name)
    versions = [m["version"] for m in registry.describe() if m["name"] == name]
    return {"model": name, "version": model.version, "previous": previous, "loaded_versions": versions}


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses={503: {"description": "Not ready (see Retry-After)"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: every model loaded and warmed up, and the session store reachable."""
    c = ctx(request)
    if not c.registry.ready:
        return ApiError(
            503, "not_ready", "models are not loaded yet", headers={"Retry-After": "1"}
        ).response()
    try:
        await c.sessions.deps.timed("ping", c.store.ping())
    except ApiError as exc:
        return ApiError(503, "not_ready", exc.message, headers=exc.headers).response()
    return JSONResponse(
        {"status": "ready", "models": [f"{m['name']}:{m['version']}" for m in c.registry.describe()]}
    )


@router.get(
    "/metrics",
    tags=["ops"],
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition (after the engine statistics of every answered act are in)."""
    c = ctx(request)
    await c.registry.flush()
    return Response(c.metrics.render(), media_type=CONTENT_TYPE_LATEST)
