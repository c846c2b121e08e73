"""Python client of the t2mir inference server: HTTP and WebSocket, sync and async.

Depends on httpx, websockets, msgpack and numpy only (never torch); the gymnasium shim imports
gymnasium when it is used. The main names::

    from clients import T2MIRClient, Session, run_episodes
    with T2MIRClient("http://localhost:8000", api_key="...") as client:
        returns = run_episodes(client, env, episodes=10)

Submodules: `clients.http` (clients), `clients.ws` (WebSocket channel), `clients.session` (act
protocol), `clients.gym_shim` (episodes, and `make_env` for ids registered through entry points),
`clients.robot_loop`, `clients.cli` (``t2mir-client``), `clients.demo` (``t2mir demo``), and
`clients.errors` (one exception per server error), and `clients.codes` (the wire protocol's table of
error codes, shared with the server). Every name below is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clients.errors import (
        Conflict,
        ConnectionFailed,
        InvalidRequest,
        PayloadTooLarge,
        ServiceUnavailable,
        SessionExists,
        SessionNotFound,
        StepConflict,
        T2MIRClientError,
        Unauthorized,
    )
    from clients.gym_shim import EpisodeReport, SpaceMismatch, check_spaces, make_env, run_episodes
    from clients.http import AsyncT2MIRClient, T2MIRClient
    from clients.protocol import ActionSpec, ActResult, ModelRef, SessionInfo, SessionState
    from clients.robot_loop import RobotLoopReport, run_robot_loop
    from clients.session import AsyncSession, PendingAct, Session
    from clients.ws import SyncWebSocketSession, WebSocketSession

_ERRORS = (
    "Conflict ConnectionFailed InvalidRequest PayloadTooLarge ServiceUnavailable SessionExists "
    "SessionNotFound StepConflict T2MIRClientError Unauthorized"
)
_LAZY: dict[str, str] = {
    **dict.fromkeys(_ERRORS.split(), "clients.errors"),
    **dict.fromkeys(("AsyncT2MIRClient", "T2MIRClient"), "clients.http"),
    **dict.fromkeys(
        ("ActionSpec", "ActResult", "ModelRef", "SessionInfo", "SessionState"), "clients.protocol"
    ),
    **dict.fromkeys(("AsyncSession", "PendingAct", "Session"), "clients.session"),
    **dict.fromkeys(("WebSocketSession", "SyncWebSocketSession"), "clients.ws"),
    **dict.fromkeys(
        ("run_episodes", "make_env", "check_spaces", "EpisodeReport", "SpaceMismatch"), "clients.gym_shim"
    ),
    **dict.fromkeys(("run_robot_loop", "RobotLoopReport"), "clients.robot_loop"),
}


def __getattr__(name: str) -> Any:
    """Import each part on first use, so ``import clients.codes`` (the server's one import of this
    package) loads neither httpx nor numpy."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")


__all__ = [
    "ActResult",
    "ActionSpec",
    "AsyncSession",
    "AsyncT2MIRClient",
    "Conflict",
    "ConnectionFailed",
    "EpisodeReport",
    "InvalidRequest",
    "ModelRef",
    "PayloadTooLarge",
    "PendingAct",
    "RobotLoopReport",
    "ServiceUnavailable",
    "Session",
    "SessionExists",
    "SessionInfo",
    "SessionNotFound",
    "SessionState",
    "SpaceMismatch",
    "StepConflict",
    "SyncWebSocketSession",
    "T2MIRClient",
    "T2MIRClientError",
    "Unauthorized",
    "WebSocketSession",
    "check_spaces",
    "make_env",
    "run_episodes",
    "run_robot_loop",
]
