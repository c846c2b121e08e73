"""Python client of the t2mir inference server: HTTP and WebSocket, sync and async.

Depends on httpx, websockets, msgpack and numpy only (never torch); the gymnasium shim imports
gymnasium when it is used. The main names::

    from clients import T2MIRClient, Session, run_episodes
    with T2MIRClient("http://localhost:8000", api_key="...") as client:
        returns = run_episodes(client, env, episodes=10)

Submodules: `clients.http` (clients), `clients.ws` (WebSocket channel), `clients.session` (act
protocol), `clients.gym_shim` (episodes, and `make_env` for ids registered through entry points),
`clients.robot_loop`, `clients.cli` (``t2mir-client``), `clients.demo` (``t2mir demo``), and
`clients.errors` (one exception per server error).
"""

from __future__ import annotations

from typing import Any

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
from clients.http import AsyncT2MIRClient, T2MIRClient
from clients.protocol import ActionSpec, ActResult, ModelRef, SessionInfo, SessionState
from clients.session import AsyncSession, PendingAct, Session

_LAZY = {
    "WebSocketSession": "clients.ws",
    "SyncWebSocketSession": "clients.ws",
    "run_episodes": "clients.gym_shim",
    "make_env": "clients.gym_shim",
    "check_spaces": "clients.gym_shim",
    "EpisodeReport": "clients.gym_shim",
    "SpaceMismatch": "clients.gym_shim",
    "run_robot_loop": "clients.robot_loop",
    "RobotLoopReport": "clients.robot_loop",
}


def __getattr__(name: str) -> Any:
    """Import the WebSocket, gymnasium and robot-loop parts only when first used."""
    if name in _LAZY:
        import importlib

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
