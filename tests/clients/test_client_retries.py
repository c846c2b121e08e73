"""Retries resend the same step, and the server applies each step exactly once."""

from __future__ import annotations

import socket
import time

import pytest

from clients import AsyncT2MIRClient, ConnectionFailed, ServiceUnavailable, Session, T2MIRClient


def _episode(client, sid):
    """Three acts of one episode; returns the actions."""
    return [
        client.act(sid, 0, [0.0, 0.0]).action,
        client.act(sid, 1, [1.0, 0.0], reward=0.5).action,
        client.act(sid, 2, [1.0, 1.0], reward=1.0, done=True).action,
    ]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "drop"},  # applied, then the connection dies before the answer
        {"kind": "delay", "seconds": 0.6, "after": True},  # applied, answer later than the timeout
        {"kind": "unavailable"},  # 503, nothing applied
    ],
    ids=["dropped-connection", "timeout", "503"],
)
def test_retry_resends_the_same_step_once_applied(fake_server, fault):
    with T2MIRClient(fake_server.url, timeout=0.3, retries=3, backoff=0.01) as client:
        sid = client.create_session().session_id
        fake_server.add_fault(step=1, **fault)
        before = fake_server.act_requests
        actions = _episode(client, sid)
        assert actions[2] is None and isinstance(actions[1], int)
        stored = fake_server.sessions[sid]
        assert stored.applied == [0, 1, 2]  # every step applied exactly once, in order
        assert fake_server.act_requests - before == 4  # one retry of step 1
        assert stored.duplicates == (0 if fault["kind"] == "unavailable" else 1)
        assert stored.returns == [1.5]


def test_retry_after_is_honoured_and_capped(fake_server):
    with T2MIRClient(fake_server.url, retries=1, backoff=0.0) as client:
        sid = client.create_session().session_id
        fake_server.add_fault("unavailable", step=0, retry_after="1")
        start = time.monotonic()
        client.act(sid, 0, [0.0, 0.0])
        assert time.monotonic() - start >= 0.95
    with T2MIRClient(fake_server.url, retries=1, backoff=0.0, max_retry_after=0.05) as client:
        fake_server.add_fault("unavailable", step=1, retry_after="600")
        start = time.monotonic()
        client.act(sid, 1, [0.0, 0.0], reward=0.0)
        assert time.monotonic() - start < 0.5
        fake_server.add_fault("unavailable", step=2, times=2, retry_after="600")
        with pytest.raises(ServiceUnavailable) as err:
            client.act(sid, 2, [0.0, 0.0], reward=0.0)
        assert err.value.retry_after == 600.0
    assert fake_server.sessions[sid].applied == [0, 1]


def test_unreachable_server_raises_connection_failed_after_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with T2MIRClient(f"http://127.0.0.1:{port}", timeout=0.5, retries=2, backoff=0.01) as client:
        with pytest.raises(ConnectionFailed, match="3 attempt") as err:
            client.act("s", 0, [0.0, 0.0])
        assert err.value.code == "connection_error" and err.value.status is None


def test_create_is_retried_only_when_nothing_was_created(fake_server):
    with T2MIRClient(fake_server.url, timeout=0.5, retries=3, backoff=0.01) as client:
        count = len(fake_server.sessions)
        fake_server.add_fault("unavailable", on="create")  # 503: nothing written, safe to resend
        client.create_session()
        assert len(fake_server.sessions) == count + 1
        fake_server.add_fault("drop", on="create")  # created, answer lost: a resend would orphan one
        with pytest.raises(ConnectionFailed, match="1 attempt"):
            client.create_session()
        assert len(fake_server.sessions) == count + 2


def test_session_keeps_an_unconfirmed_act_for_retry(fake_server):
    with T2MIRClient(fake_server.url, retries=0, backoff=0.0) as client:
        session = Session.create(client)
        session.reset([0.0, 0.0])
        fake_server.add_fault("drop", step=1)  # applied, answer lost, no client retry left
        with pytest.raises(ConnectionFailed):
            session.step([1.0, 0.0], 0.5)
        assert session.pending is not None and session.pending.step == 1
        with pytest.raises(RuntimeError, match="retry"):
            session.step([2.0, 0.0], 0.25)  # a new body for step 1 could lose the first reward
        assert isinstance(session.retry(), int)  # the stored answer for step 1
        session.end([1.0, 1.0], 1.0)
        assert session.episode_returns == [1.5] and session.next_step == 3
        stored = fake_server.sessions[session.session_id]
        assert (stored.applied, stored.returns, stored.duplicates) == ([0, 1, 2], [1.5], 1)


@pytest.mark.anyio
async def test_async_client_retries_a_dropped_act(fake_server):
    async with AsyncT2MIRClient(fake_server.url, timeout=0.3, backoff=0.01) as client:
        sid = (await client.create_session()).session_id
        fake_server.add_fault("drop", step=0)
        fake_server.add_fault("unavailable", step=1)
        await client.act(sid, 0, [0.0, 0.0])
        await client.act(sid, 1, [0.0, 0.0], reward=2.0, done=True)
    stored = fake_server.sessions[sid]
    assert (stored.applied, stored.duplicates, stored.returns) == ([0, 1], 1, [2.0])
