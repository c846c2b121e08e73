"""HTTP routes of sessions: create, describe, delete, act."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from server import json_codec
from server.act import parse_act_json
from server.context import ctx
from server.errors import ApiError
from server.limits import ASGIApp, Receive, Scope, Send, arrival_time
from server.openapi import errors, json_body
from server.payload import decode_json, validate_body
from server.schemas import ActBody, ActResponse, CreateSessionBody, SessionInfo

router = APIRouter(tags=["sessions"])


def owner(request: Request) -> str:
    """Dependency: the caller's owner id (401 before anything else when keys are required)."""
    return ctx(request).auth.owner(request.headers)


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionInfo,
    openapi_extra=json_body(CreateSessionBody),
    responses=errors(400, 401, 404, 408, 409, 413, 422, 503),
)
async def create_session(request: Request) -> JSONResponse:
    """Create a session on the current version of a model."""
    c = ctx(request)
    caller = c.auth.owner(request.headers)
    body = validate_body(CreateSessionBody, decode_json(await request.body()))
    return JSONResponse(await c.sessions.create(caller, body), status_code=201)


@router.get("/sessions/{session_id}", response_model=SessionInfo, responses=errors(401, 404, 503))
async def get_session(session_id: str, request: Request, caller: str = Depends(owner)) -> JSONResponse:
    """A session's model, step, episode and the returns of its closed episodes."""
    return JSONResponse(await ctx(request).sessions.get(caller, session_id))


@router.delete("/sessions/{session_id}", status_code=204, responses=errors(401, 404, 503))
async def delete_session(session_id: str, request: Request, caller: str = Depends(owner)) -> Response:
    """Delete a session and everything stored about it."""
    await ctx(request).sessions.delete(caller, session_id)
    return Response(status_code=204)


@router.post(
    "/sessions/{session_id}/act",
    response_model=ActResponse,
    openapi_extra=json_body(ActBody),
    responses=errors(400, 401, 404, 408, 409, 413, 422, 503),
)
async def act(session_id: str, request: Request) -> Response:
    """One step: the observation (and the previous action's reward) in, the action out.

    A retried step returns the stored answer; ``done: true`` closes the episode (``action: null``).
    """
    c = ctx(request)
    t0 = arrival_time(request.scope)
    status = 500
    try:
        caller = c.auth.owner(request.headers)
        body = parse_act_json(await request.body())
        out = await c.acts.act(caller, session_id, body, t0)
        status = 200
        return Response(json_codec.dumps(out), media_type="application/json")
    except ApiError as exc:
        status = exc.status
        return exc.response()  # what the app's ApiError handler answers, also on the fast path
    finally:
        c.metrics.act_done(status, time.perf_counter() - t0)


ACT_PATH = re.compile(r"/sessions/([^/]+)/act")
"""The act route's path, its ``session_id`` as the route matches it (one non-empty segment)."""


class ActFastPath:
    """ASGI middleware: ``POST /sessions/{session_id}/act`` goes straight to `act`, past FastAPI's
    routing, dependency solving and exception middleware (under load at 64 sessions these cost
    about a third of the server's CPU per act, more than parsing, the store and serialisation
    together); every other request goes on to the app. Installed inside the body limits and
    outside nothing else of the act's: `act` answers its own errors, and an unexpected one reaches
    the app's outermost handler (500 ``internal``) as from the route. The route stays registered:
    it is what the OpenAPI document describes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and scope["method"] == "POST":
            match = ACT_PATH.fullmatch(scope["path"])
            if match is not None:
                response = await act(match.group(1), Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
