"""Optional API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

With no keys configured every caller is the anonymous owner ``""``. With keys, a request without
a valid key gets 401, and a session belongs to the key that created it: the store keeps only a
hash of that key (`owner_of`), so neither the store nor the logs ever hold a key in clear.
With keys, the API documentation needs a key too (`DocsGuard`) unless the settings make it public.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ApiError

ANONYMOUS = ""


def owner_of(key: str) -> str:
    """The owner id stored for sessions created with ``key`` (a truncated SHA-256, hex)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent (Bearer token first, then X-API-Key), or None."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    """Maps request headers to an owner id, or raises 401."""

    def __init__(self, keys: list[str]) -> None:
        self._owners = {owner_of(k): k for k in keys}

    @property
    def enabled(self) -> bool:
        """True when API keys are configured."""
        return bool(self._owners)

    def owner(self, headers: Mapping[str, str]) -> str:
        """Owner id of the caller; raises `ApiError` 401 when keys are required and none is valid."""
        if not self._owners:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise _unauthorized("missing API key (send 'Authorization: Bearer KEY' or 'X-API-Key')")
        owner = owner_of(key)
        expected = self._owners.get(owner)
        if expected is None or not hmac.compare_digest(expected.encode(), key.encode()):
            raise _unauthorized("invalid API key")
        return owner


class DocsGuard:
    """ASGI middleware: the API documentation (``paths``: ``/docs``, ``/redoc``,
    ``/openapi.json``...) answers only callers with a valid key, like the API itself."""

    def __init__(self, app: ASGIApp, auth: Authenticator, paths: frozenset[str]) -> None:
        self.app = app
        self.auth = auth
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http" and scope["path"] in self.paths:
            try:
                self.auth.owner(Headers(scope=scope))
            except ApiError as exc:
                await exc.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
