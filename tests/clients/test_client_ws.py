"""WebSocket channel details against the real server: error frames keep the socket, refused keys."""

from __future__ import annotations

import pytest
from live_server import KEY

from clients import (
    InvalidRequest,
    SessionNotFound,
    SyncWebSocketSession,
    T2MIRClient,
    Unauthorized,
    WebSocketSession,
)
from clients.ws import websocket_url


@pytest.mark.anyio
async def test_error_frames_raise_and_keep_the_socket(memory_server):
    with T2MIRClient(memory_server.url, KEY) as client:
        sid = client.create_session().session_id
    async with WebSocketSession(memory_server.url, sid, KEY, retries=0) as ws:
        await ws.act(0, [0.0, 0.0])
        with pytest.raises(InvalidRequest) as err:
            await ws.act(1, [0.0], reward=0.0)
        assert (err.value.status, err.value.field) == (422, "observation")
        assert (await ws.act(1, [0.0, 0.0], reward=0.0)).step == 1
        assert ws.connects == 1
    async with WebSocketSession(memory_server.url, "missing", KEY, retries=0) as ws:
        for _ in range(2):
            with pytest.raises(SessionNotFound):
                await ws.act(0, [0.0, 0.0])
        assert ws.connects == 1
    with pytest.raises(Unauthorized):  # error frame, then close 1008
        await WebSocketSession(memory_server.url, sid, "wrong", retries=0).act(2, [0.0, 0.0], reward=0.0)
    with pytest.raises(RuntimeError, match="event loop"):
        SyncWebSocketSession(memory_server.url, sid, KEY).act(2, [0.0, 0.0], reward=0.0)


def test_websocket_url():
    assert websocket_url("http://h:1/", "a b") == "ws://h:1/sessions/a%20b/ws"
    assert websocket_url("https://h/api", "s") == "wss://h/api/sessions/s/ws"
    with pytest.raises(ValueError):
        websocket_url("ftp://h", "s")
