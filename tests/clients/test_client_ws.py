"""WebSocket channel: JSON and msgpack agree with HTTP; drops reconnect and resend the same step."""

from __future__ import annotations

import numpy as np
import pytest

from clients import (
    InvalidRequest,
    Session,
    SessionNotFound,
    StepConflict,
    SyncWebSocketSession,
    T2MIRClient,
    Unauthorized,
    WebSocketSession,
)
from clients.ws import websocket_url

OBSERVATIONS = [np.array([x, y], dtype=np.float32) for x, y in [(0, 0), (1, 0), (1, 2), (3, 4), (9, 9)]]


def _drive(session: Session) -> list:
    actions = [session.reset(OBSERVATIONS[0])]
    actions += [session.step(obs, reward=0.5 * i) for i, obs in enumerate(OBSERVATIONS[1:-1], start=1)]
    session.end(OBSERVATIONS[-1], 1.0)
    actions.append(session.reset(OBSERVATIONS[0]))
    return actions


def test_websocket_json_and_msgpack_match_http(fake_server):
    with T2MIRClient(fake_server.url) as client:
        runs = {}
        for name, kwargs in {
            "http": {},
            "json": {"websocket": True, "encoding": "json"},
            "msgpack": {"websocket": True, "encoding": "msgpack"},
        }.items():
            session = Session.create(client, **kwargs)
            runs[name] = (_drive(session), session.episode_returns, session.session_id)
            if name != "http":
                assert session.channel.connects == 1
            session.close()
    assert runs["json"][:2] == runs["http"][:2] == runs["msgpack"][:2]
    for _, returns, sid in runs.values():
        assert fake_server.sessions[sid].returns == returns == [4.0]
        assert fake_server.sessions[sid].applied == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "fault", [{"kind": "drop"}, {"kind": "delay", "seconds": 0.5, "after": True}], ids=["drop", "timeout"]
)
@pytest.mark.anyio
async def test_dropped_socket_reconnects_and_resends_same_step(fake_server, fault):
    with T2MIRClient(fake_server.url) as client:
        sid = client.create_session().session_id
    async with WebSocketSession(fake_server.url, sid, encoding="msgpack", timeout=0.25, backoff=0.01) as ws:
        await ws.act(0, [0.0, 0.0])
        fake_server.add_fault(step=1, **fault)
        second = await ws.act(1, [1.0, 0.0], reward=0.5)
        assert second.step == 1 and isinstance(second.action, int)
        assert (await ws.act(2, [1.0, 1.0], reward=1.0, done=True)).done
        assert ws.connects == 2
    stored = fake_server.sessions[sid]
    assert (stored.applied, stored.duplicates, stored.returns) == ([0, 1, 2], 1, [1.5])


@pytest.mark.anyio
async def test_error_frames_raise_and_keep_the_socket(fake_server):
    with T2MIRClient(fake_server.url) as client:
        sid = client.create_session().session_id
    async with WebSocketSession(fake_server.url, sid, retries=2, backoff=0.0) as ws:
        await ws.act(0, [0.0, 0.0])
        with pytest.raises(StepConflict) as err:
            await ws.act(4, [0.0, 0.0], reward=0.0)
        assert (err.value.code, err.value.expected_step) == ("step_conflict", 1)
        with pytest.raises(InvalidRequest) as err:
            await ws.act(1, [0.0], reward=0.0)
        assert err.value.field == "observation"
        fake_server.add_fault("unavailable", step=1, times=2)  # 503 frames are retried
        assert (await ws.act(1, [0.0, 0.0], reward=0.0)).step == 1
        assert ws.connects == 1
    fake_server.ws_error_status = False  # frames without "status": mapped by their code
    async with WebSocketSession(fake_server.url, "missing", retries=0) as ws:
        with pytest.raises(SessionNotFound):
            await ws.act(0, [0.0, 0.0])
        with pytest.raises(SessionNotFound):
            await ws.act(0, [0.0, 0.0])
        assert ws.connects == 1

    fake_server.api_keys = {"k"}
    for reject_handshake in (False, True):  # error frame + close 1008, or HTTP 403 on the upgrade
        fake_server.ws_reject_handshake = reject_handshake
        with pytest.raises(Unauthorized):
            await WebSocketSession(fake_server.url, sid, "wrong").act(2, [0.0, 0.0], reward=0.0)
    with pytest.raises(Unauthorized):
        async with WebSocketSession(fake_server.url, sid, "wrong", retries=0):
            pass
    with pytest.raises(RuntimeError, match="event loop"):
        SyncWebSocketSession(fake_server.url, sid, "k").act(2, [0.0, 0.0], reward=0.0)
    assert fake_server.sessions[sid].applied == [0, 1]


def test_websocket_url():
    assert websocket_url("http://h:1/", "a b") == "ws://h:1/sessions/a%20b/ws"
    assert websocket_url("https://h/api", "s") == "wss://h/api/sessions/s/ws"
    with pytest.raises(ValueError):
        websocket_url("ftp://h", "s")


@pytest.mark.anyio
async def test_async_session_over_websocket(fake_server):
    from clients import AsyncSession, AsyncT2MIRClient

    async with AsyncT2MIRClient(fake_server.url) as client:
        runs = []
        for websocket in (False, True):
            session = await AsyncSession.create(
                client, websocket=websocket, encoding="msgpack", sampling="greedy"
            )
            actions = [await session.reset(OBSERVATIONS[0])]
            actions += [await session.step(obs, 1.0) for obs in OBSERVATIONS[1:-1]]
            await session.end(OBSERVATIONS[-1], 1.0)
            runs.append((actions, session.episode_returns))
            await session.close(delete=True)
    assert runs[0] == runs[1] and runs[0][1] == [4.0]
