"""Retries resend the same step through real outages: Redis stopped and restarted, the server
process killed and restarted, nothing listening; and only safe requests are resent."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import DARK, KEY, Flavour
from server_process import ServerProcess

from clients import ConnectionFailed, ServiceUnavailable, T2MIRClient


@pytest.mark.parametrize("flavour_name", ["sync-http", "async-ws-msgpack"])
def test_act_survives_a_redis_restart(_servers, flavour_name):
    if "redis" not in _servers:
        pytest.skip("redis-server not installed")
    server = _servers["redis"]
    api = Flavour(flavour_name, server.url, retries=20, backoff=0.05, max_elapsed=60)
    try:
        sid = api.run(api.client.create_session()).session_id
        api.act(sid, 0, [0.0, 0.0])
        server.redis.stop()  # a real outage: the server answers 503 store_unavailable + Retry-After
        with ThreadPoolExecutor(1) as pool:  # (processes are started here: children die with their thread)
            started = time.monotonic()
            pending = pool.submit(api.act, sid, 1, [1.0, 0.0], reward=0.5)  # retried until Redis is back
            time.sleep(1.5)
            assert not pending.done()
            server.redis.start()
            second = pending.result()
        assert second.step == 1 and time.monotonic() - started >= 1.5
        api.act(sid, 2, [1.0, 1.0], reward=1.0, done=True)
        state = api.run(api.client.get_session(sid))
        assert (state.step, state.returns) == (3, [1.5])
    finally:
        if not server.redis.running:
            server.redis.start()
        api.close()


def test_act_survives_a_server_restart(model_dirs, redis_server):
    env = {"T2MIR_API_KEYS": KEY, "T2MIR_DEFAULT_MODEL": DARK, "T2MIR_REDIS_KEY_PREFIX": "restart"}
    first = ServerProcess(model_dirs, redis_url=redis_server.url, env=env).start()
    second = ServerProcess(model_dirs, redis_url=redis_server.url, env=env, port=first.port)
    try:
        with T2MIRClient(
            first.url, KEY, retries=200, backoff=0.05, max_backoff=0.5, max_elapsed=120
        ) as client:
            sid = client.create_session().session_id
            client.act(sid, 0, [0.0, 0.0])
            first.proc.kill()  # crash: connections refused until the new process listens
            first.proc.wait()
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(client.act, sid, 1, [1.0, 0.0], reward=0.5)
                second.start()
                assert pending.result().step == 1
            client.act(sid, 2, [1.0, 1.0], reward=1.0, done=True)
            assert client.get_session(sid).returns == [1.5]
    finally:
        first.close()
        second.close()


def test_retry_after_is_honoured(memory_server):
    faults = memory_server.faults
    with T2MIRClient(memory_server.url, KEY, retries=1, backoff=0.0) as client:
        sid = client.create_session().session_id
        faults.add("unavailable", step=0, retry_after=1)
        start = time.monotonic()
        client.act(sid, 0, [0.0, 0.0])
        assert time.monotonic() - start >= 0.95 and faults.requests[(sid, 0)] == 2


def test_time_bound_stops_retrying(memory_server):
    faults = memory_server.faults
    with T2MIRClient(
        memory_server.url, KEY, retries=100, backoff=0.05, max_backoff=0.05, max_elapsed=0.5
    ) as c:
        sid = c.create_session().session_id
        faults.add("unavailable", step=0, times=1000)
        start = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="store_unavailable"):
            c.act(sid, 0, [0.0, 0.0])
        assert time.monotonic() - start < 1.0 and 2 <= faults.requests[(sid, 0)] < 100


def test_unreachable_server_raises_connection_failed_after_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with T2MIRClient(f"http://127.0.0.1:{port}", timeout=0.5, retries=2, backoff=0.01) as client:
        with pytest.raises(ConnectionFailed, match="3 attempt") as err:
            client.act("s", 0, [0.0, 0.0])
        assert err.value.code == "connection_error" and err.value.status is None


def test_create_is_not_resent_when_it_may_have_been_applied(memory_server):
    faults = memory_server.faults
    with T2MIRClient(memory_server.url, KEY, timeout=0.5, retries=3, backoff=0.01) as client:
        before = len(faults.created)
        faults.add("drop", on="create")  # created, answer lost: a resend would orphan a second one
        with pytest.raises(ConnectionFailed, match="1 attempt"):
            client.create_session()
        assert len(faults.created) == before + 1
        assert client.get_session(faults.created[-1]).step == 0
