"""One error format everywhere: ``{"error": {"code", "message", "field"?, ...}}``.

`ApiError` is raised by the services and routes; `install_error_handlers` maps it, FastAPI's
validation errors, Starlette's HTTP errors and anything unexpected onto that format. WebSocket
handlers turn an `ApiError` into an error frame with `ApiError.frame`. Every code comes from the wire
protocol's table, `clients.codes` (the one module of the client package the server imports): an
`ApiError` with a code that is not in it, or with another status than its row, is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

import clients.codes as codes

log = logging.getLogger("t2mir.server")

_STATUS_CODES = {
    400: codes.BAD_REQUEST,
    401: codes.UNAUTHORIZED,
    403: codes.FORBIDDEN,
    404: codes.NOT_FOUND,
    405: codes.METHOD_NOT_ALLOWED,
    408: codes.TIMEOUT,
    409: codes.CONFLICT,
    413: codes.TOO_LARGE,
    415: codes.UNSUPPORTED_MEDIA_TYPE,
    422: codes.INVALID_REQUEST,
    429: codes.TOO_MANY_REQUESTS,
    500: codes.INTERNAL,
    503: codes.UNAVAILABLE,
}


class ApiError(Exception):
    """An answer other than success: HTTP status, machine-readable code, message, offending field.

    ``code`` must be a row of `clients.codes.ERROR_CODES` sent with that row's status; ``extra``
    keywords become structured fields of the error (e.g. ``expected_step``), and a ``Retry-After``
    header is also sent as the field ``retry_after`` (seconds).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        row = codes.ERROR_CODES.get(code)
        if row is None or (row.status is not None and row.status != status):
            raise ValueError(f"error code {code!r} with status {status} is not in clients.codes.ERROR_CODES")
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body ``{"error": {...}}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        if "Retry-After" in self.headers:
            error["retry_after"] = int(self.headers["Retry-After"])
        return {"error": error}

    def frame(self) -> dict[str, Any]:
        """The WebSocket error frame: the body plus ``status`` (and ``retry_after`` for 503)."""
        out = self.body()
        out["status"] = self.status
        if "Retry-After" in self.headers:
            out["retry_after"] = int(self.headers["Retry-After"])
        return out

    def response(self) -> JSONResponse:
        """The HTTP response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unavailable(message: str, retry_after: float) -> ApiError:
    """503 with a ``Retry-After`` header (whole seconds, at least 1)."""
    seconds = max(1, round(retry_after))
    return ApiError(503, codes.STORE_UNAVAILABLE, message, headers={"Retry-After": str(seconds)})


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis): client input echoed in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed_methods(path: str, routes: Iterable[BaseRoute]) -> list[str]:
    """Every method one of ``routes`` answers on ``path`` (OPTIONS always), sorted."""
    methods = {"OPTIONS"}
    for route in routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods.update(route_methods)
    return sorted(methods)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """Pydantic / FastAPI validation errors -> one 422 (400 for a body that is not JSON)."""
    if not errors:
        return ApiError(422, codes.INVALID_REQUEST, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, codes.INVALID_JSON, "request body is not valid JSON")
    field = shorten(_field_path(first.get("loc", ()))) or None
    message = shorten(str(first.get("msg", "invalid value")), 500)
    if field:
        message = f"{field}: {message}"
    code = codes.MISSING_FIELD if first.get("type") == "missing" else codes.INVALID_FIELD
    if field and field.split(".")[0] == "observation":
        code = codes.INVALID_OBSERVATION
    return ApiError(422, code, message, field=field)


def from_pydantic(exc: ValidationError) -> ApiError:
    """A `pydantic.ValidationError` (WebSocket frames) -> 422."""
    return from_validation_errors(exc.errors(include_url=False))


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Register the handlers that give every error the common format; ``routes``: every HTTP
    route of the app (for the ``Allow`` header of 405 answers and for OPTIONS)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation_errors(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, codes.HTTP_ERROR)
        message = exc.detail if isinstance(exc.detail, str) else code
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # list the methods of every route on the path, not just one
            headers["Allow"] = ", ".join(allowed_methods(request.url.path, routes))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
        return ApiError(exc.status_code, code, message, headers=headers).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, codes.INTERNAL, "internal server error").response()
