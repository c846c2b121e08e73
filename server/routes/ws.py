"""``WS /sessions/{id}/ws``: acts over one socket, JSON text frames or msgpack binary frames.

Each message is an act body; each answer is the act response, or an error frame
``{"error": {...}, "status": <http status>, "retry_after"?}``, in the format of the message it
answers (text -> JSON text, binary -> msgpack binary). Errors never close the socket, except a
missing or invalid API key (error frame, then close code 1008). Messages on one socket are
answered in order.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgpack
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server import json_codec
from server.act import parse_act
from server.context import AppContext, ctx
from server.errors import ApiError
from server.payload import decode_json, decode_msgpack

log = logging.getLogger("t2mir.server")
router = APIRouter(tags=["sessions"])

POLICY_VIOLATION = 1008


def decode(data: bytes | str, binary: bool, limit: int) -> Any:
    """Size-check and decode one frame (`server.payload`); raises ApiError 413 / 400."""
    size = len(data.encode() if isinstance(data, str) else data)  # bytes on the wire
    if size > limit:
        raise ApiError(413, "too_large", f"message of {size} bytes exceeds the limit of {limit} bytes")
    return decode_msgpack(data) if binary else decode_json(data)  # type: ignore[arg-type]


async def _answer(
    c: AppContext, owner: str, session_id: str, data: bytes | str, binary: bool
) -> dict[str, Any]:
    t0 = time.perf_counter()
    status = 500
    try:
        body = parse_act(decode(data, binary, c.settings.max_body_bytes))
        out = await c.acts.act(owner, session_id, body, t0)
        status = 200
        return out
    except ApiError as exc:
        status = exc.status
        return exc.frame()
    except Exception:
        log.exception("websocket act failed", extra={"session": session_id})
        return ApiError(500, "internal", "internal server error").frame()
    finally:
        c.metrics.act_done(status, time.perf_counter() - t0)


async def _send(websocket: WebSocket, payload: dict[str, Any], binary: bool) -> None:
    if binary:
        await websocket.send_bytes(msgpack.packb(payload, use_bin_type=True))
    else:
        await websocket.send_text(json_codec.dumps(payload).decode())


@router.websocket("/sessions/{session_id}/ws")
async def session_socket(websocket: WebSocket, session_id: str) -> None:
    """Act over a WebSocket (same messages as ``POST /sessions/{id}/act``)."""
    c = ctx(websocket)
    await websocket.accept()
    try:
        owner = c.auth.owner(websocket.headers)
    except ApiError as exc:
        c.metrics.act_done(exc.status, None)
        await websocket.send_text(json_codec.dumps(exc.frame()).decode())
        await websocket.close(POLICY_VIOLATION)
        return
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            binary = message.get("bytes") is not None
            data = message["bytes"] if binary else message.get("text") or ""
            await _send(websocket, await _answer(c, owner, session_id, data, binary), binary)
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away mid-answer; the act itself completed (shielded)
