"""The wire protocol's table of error codes: one row per ``code`` the server can answer with.

Every error the server sends is ``{"error": {"code", "message", "field"?, ...}}`` (a WebSocket error
frame adds ``"status"``). This table is the one source of truth for those codes: the server refuses
to raise an error whose code is not here (or whose HTTP status differs from the row), and the
client maps codes to exception classes and decides what to retry from it. Structured fields that
some errors carry: ``expected_step`` (``step_conflict``: the step the session expects next) and
``retry_after`` (every 503: seconds to wait, also sent as the ``Retry-After`` header).

This module imports nothing but the standard library, so the server may import it (the only import
from ``clients`` the server makes) and the client stays free of server code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    """One error code of the protocol."""

    code: str
    """The machine-readable ``error.code``."""
    status: int | None
    """The HTTP status it is sent with (None: whatever status the HTTP layer refused with)."""
    retry: bool
    """True if resending the very same request (same ``step``) later may succeed: nothing was
    applied and the cause is temporary. False: the same request will be refused again."""
    meaning: str
    """What it says, in one line."""


def _table(*rows: ErrorCode) -> dict[str, ErrorCode]:
    return {row.code: row for row in rows}


BAD_REQUEST = "bad_request"
INVALID_JSON = "invalid_json"
INVALID_MSGPACK = "invalid_msgpack"
TOO_DEEP = "too_deep"
INVALID_UNICODE = "invalid_unicode"
INVALID_HTTP = "invalid_http"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
SESSION_NOT_FOUND = "session_not_found"
UNKNOWN_MODEL = "unknown_model"
UNKNOWN_TASK = "unknown_task"
METHOD_NOT_ALLOWED = "method_not_allowed"
TIMEOUT = "timeout"
HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
CONFLICT = "conflict"
STEP_CONFLICT = "step_conflict"
SESSION_EXISTS = "session_exists"
MODEL_UNAVAILABLE = "model_unavailable"
NAME_CHANGED = "name_changed"
VERSION_LOADED = "version_loaded"
TOO_LARGE = "too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
HEADERS_TOO_LARGE = "headers_too_large"
INVALID_REQUEST = "invalid_request"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
INVALID_OBSERVATION = "invalid_observation"
INVALID_REWARD = "invalid_reward"
UNSUPPORTED_OPTION = "unsupported_option"
EPISODE_TOO_LONG = "episode_too_long"
METADATA_TOO_LARGE = "metadata_too_large"
TOO_MANY_REQUESTS = "too_many_requests"
INTERNAL = "internal"
ENGINE_ERROR = "engine_error"
RELOAD_FAILED = "reload_failed"
STORE_UNAVAILABLE = "store_unavailable"
SHUTTING_DOWN = "shutting_down"
OVERLOADED = "overloaded"
NOT_READY = "not_ready"
TOO_MANY_SESSIONS = "too_many_sessions"
UNAVAILABLE = "unavailable"
HTTP_ERROR = "error"

ERROR_CODES: dict[str, ErrorCode] = _table(
    ErrorCode(BAD_REQUEST, 400, False, "the request is malformed"),
    ErrorCode(INVALID_JSON, 400, False, "the body (or WebSocket text frame) is not valid JSON"),
    ErrorCode(INVALID_MSGPACK, 400, False, "the WebSocket binary frame is not valid msgpack"),
    ErrorCode(TOO_DEEP, 400, False, "arrays and objects in the body nest deeper than 32 levels"),
    ErrorCode(INVALID_UNICODE, 400, False, "a string holds a lone UTF-16 surrogate"),
    ErrorCode(INVALID_HTTP, 400, False, "the HTTP parser cannot read the request"),
    ErrorCode(UNAUTHORIZED, 401, False, "the API key is missing or not accepted"),
    ErrorCode(FORBIDDEN, 403, False, "the API key may not do this"),
    ErrorCode(NOT_FOUND, 404, False, "no such route"),
    ErrorCode(SESSION_NOT_FOUND, 404, False, "no such session (or it belongs to another API key)"),
    ErrorCode(UNKNOWN_MODEL, 404, False, "the named model is not loaded"),
    ErrorCode(UNKNOWN_TASK, 404, False, "the model ships no task prompt of that name (`field`: task)"),
    ErrorCode(
        METHOD_NOT_ALLOWED, 405, False, "the route does not take this method; `Allow` lists those it takes"
    ),
    ErrorCode(TIMEOUT, 408, False, "the request did not arrive in time"),
    ErrorCode(
        HEADER_TIMEOUT, 408, False, "the request line and headers did not arrive within the header timeout"
    ),
    ErrorCode(BODY_TIMEOUT, 408, False, "the body did not arrive within the body timeout"),
    ErrorCode(CONFLICT, 409, False, "the request conflicts with the stored state"),
    ErrorCode(STEP_CONFLICT, 409, False, "the step is out of order; `expected_step` is the next one"),
    ErrorCode(SESSION_EXISTS, 409, False, "the requested session_id is taken"),
    ErrorCode(MODEL_UNAVAILABLE, 409, False, "the session's model version is no longer loaded here"),
    ErrorCode(NAME_CHANGED, 409, False, "a reloaded checkpoint carries another model name"),
    ErrorCode(VERSION_LOADED, 409, False, "a reloaded checkpoint's version is already loaded"),
    ErrorCode(TOO_LARGE, 413, False, "the body or message is over the size limit"),
    ErrorCode(UNSUPPORTED_MEDIA_TYPE, 415, False, "the body's content type is not accepted"),
    ErrorCode(HEADERS_TOO_LARGE, 431, False, "the request line and headers are over the size limit"),
    ErrorCode(INVALID_REQUEST, 422, False, "the body is not what the route takes"),
    ErrorCode(MISSING_FIELD, 422, False, "a required field (`field`) is absent"),
    ErrorCode(INVALID_FIELD, 422, False, "a field (`field`) has a wrong type or value"),
    ErrorCode(INVALID_OBSERVATION, 422, False, "the observation has the wrong size or a bad value"),
    ErrorCode(INVALID_REWARD, 422, False, "the reward is bad, or sent at an episode's first step"),
    ErrorCode(
        UNSUPPORTED_OPTION, 422, False, "a create option (`field`) that the model's family does not take"
    ),
    ErrorCode(EPISODE_TOO_LONG, 422, False, "the episode reached max_episode_steps; send done=true"),
    ErrorCode(METADATA_TOO_LARGE, 422, False, "the session metadata is over the size limit"),
    ErrorCode(TOO_MANY_REQUESTS, 429, True, "rate limited; retry later"),
    ErrorCode(INTERNAL, 500, False, "unexpected server error"),
    ErrorCode(ENGINE_ERROR, 500, False, "the model's engine failed on this act"),
    ErrorCode(RELOAD_FAILED, 500, False, "reloading a model failed (the old version still serves)"),
    ErrorCode(STORE_UNAVAILABLE, 503, True, "the session store is unreachable; nothing was applied"),
    ErrorCode(SHUTTING_DOWN, 503, True, "the model version is shutting down; nothing was applied"),
    ErrorCode(OVERLOADED, 503, True, "the act would miss the server's deadline; nothing was applied"),
    ErrorCode(NOT_READY, 503, True, "readiness: models not loaded yet or store unreachable"),
    ErrorCode(TOO_MANY_SESSIONS, 503, True, "the server holds its maximum of live sessions"),
    ErrorCode(UNAVAILABLE, 503, True, "the service cannot answer now"),
    ErrorCode(HTTP_ERROR, None, False, "any other status refused by the HTTP layer"),
)
"""Every error code, by code."""
