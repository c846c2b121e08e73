"""One behaviour list, run by every client flavour against the real server on both session stores.

Flavours (see `Flavour` in conftest): `T2MIRClient` + `Session`, `AsyncT2MIRClient` +
`AsyncSession`, and each over a WebSocket channel (JSON text and msgpack binary frames). Every
error here is the real server's answer, except the 503s, delays and drops that `FaultInjector`
puts in front of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from live_server import CHEETAH, DARK, OTHER

from clients import (
    ConnectionFailed,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    SessionExists,
    SessionNotFound,
    StepConflict,
    Unauthorized,
)

OBS = [np.array([x, y], dtype=np.float32) for x, y in [(0, 0), (1, 0), (1, 2), (3, 4), (9, 9)]]


def _state(flavour, session_id):
    return flavour.run(flavour.client.get_session(session_id))


def test_create_act_get_delete(make_flavour, live_server):
    api = make_flavour()
    info = api.run(api.client.create_session(model=DARK, metadata={"robot": "r1"}, sampling="greedy"))
    assert (info.model.name, info.backbone, info.observation_dim) == (DARK, "ad", 2)
    assert (info.action.kind, info.action.n) == ("discrete", 5)
    assert info.raw["sampling"] == "greedy" and info.raw["metadata"] == {"robot": "r1"}
    sid = info.session_id
    first = api.act(sid, 0, [0.0, 0.0])
    assert (first.step, first.episode, first.done) == (0, 0, False)
    assert isinstance(first.action, int) and 0 <= first.action < 5 and first.timings["total"] > 0
    api.act(sid, np.int64(1), np.array([1.0, 0.0], np.float32), reward=np.float32(0.25))
    closing = api.act(sid, 2, [1.0, 1.0], reward=np.array([1.5]), done=True)
    assert closing.done and closing.episode_return == 1.75
    state = _state(api, sid)
    assert (state.step, state.episode, state.returns, state.model.name) == (3, 1, [1.75], DARK)
    api.run(api.client.delete_session(sid))
    with pytest.raises(SessionNotFound):
        _state(api, sid)


def test_create_options_reach_the_server(make_flavour, live_server):
    api = make_flavour()
    default = api.run(api.client.create_session())
    assert default.model.name == DARK  # the server's default_model (two models are loaded)
    noisy = api.run(api.client.create_session(model=CHEETAH, action_noise=0.25))
    assert noisy.raw["action_noise"] == 0.25 and (noisy.action.kind, noisy.action.dim) == ("continuous", 2)
    session = api.session(model=CHEETAH, action_noise=0.0, session_id=f"quiet-{api.name}-{live_server.kind}")
    assert session.info.raw["action_noise"] == 0.0 and session.session_id.startswith("quiet-")
    action = api.run(session.reset(np.ones(3)))
    assert len(action) == 2 and all(-1.0 <= a <= 1.0 for a in action)
    with pytest.raises(SessionExists) as err:
        api.run(api.client.create_session(session_id=session.session_id))
    assert (err.value.status, err.value.code, err.value.field) == (409, "session_exists", "session_id")
    with pytest.raises(InvalidRequest, match="action_noise"):
        api.run(api.client.create_session(model=CHEETAH, action_noise=-1.0))  # refused before sending
    with pytest.raises(SessionNotFound) as err:
        api.run(api.client.create_session(model="no-such-model"))
    assert (err.value.code, err.value.field) == ("unknown_model", "model")


def test_session_keeps_the_act_protocol_and_resyncs(make_flavour, live_server):
    api = make_flavour()
    session = api.session(model=DARK)
    with pytest.raises(RuntimeError, match="reset"):
        api.run(session.step(OBS[1], 1.0))
    assert isinstance(api.run(session.reset(OBS[0])), int) and session.in_episode
    with pytest.raises(RuntimeError, match="end"):
        api.run(session.reset(OBS[0]))
    api.run(session.step(OBS[1], 2.0))
    api.run(session.end(OBS[2], 0.5))
    api.run(session.reset(OBS[0]))
    api.run(session.end(OBS[3], 3.0))
    assert session.episode_returns == [2.5, 3.0] == _state(api, session.session_id).returns
    assert session.next_step == 5 and session.episode == 1 and session.last_result.done

    # someone else moved the session on: the server says where it is, resync() catches up
    api.act(session.session_id, 5, OBS[0])
    api.act(session.session_id, 6, OBS[1], reward=0.0)
    with pytest.raises(StepConflict) as err:
        api.run(session.reset(OBS[0]))
    assert err.value.expected_step == 7 and session.next_step == 5
    assert api.run(session.resync()) == 7
    api.run(session.step(OBS[2], 1.0))  # after a resync either call is allowed
    api.run(session.close(delete=True))
    with pytest.raises(SessionNotFound):
        _state(api, session.session_id)


def test_a_repeated_step_gets_the_stored_answer(make_flavour, live_server):
    api = make_flavour()
    sid = api.run(api.client.create_session()).session_id
    api.act(sid, 0, [0.0, 0.0])
    first = api.act(sid, 1, [1.0, 0.0], reward=0.5)
    again = api.act(sid, 1, [1.0, 0.0], reward=0.5)
    assert (again.step, again.action, again.episode) == (first.step, first.action, first.episode)
    api.act(sid, 2, [1.0, 1.0], reward=1.0, done=True)
    assert _state(api, sid).returns == [1.5]  # the repeated reward counted once


def test_error_answers_map_to_exceptions(make_flavour, live_server):
    api = make_flavour(retries=0)
    sid = api.run(api.client.create_session()).session_id
    with pytest.raises(SessionNotFound) as err:
        api.act("nope", 0, [0, 0])
    assert (err.value.status, err.value.code) == (404, "session_not_found")
    api.act(sid, 0, [0, 0])
    with pytest.raises(StepConflict) as err:
        api.act(sid, 5, [0, 0], reward=0)
    assert (err.value.status, err.value.code, err.value.expected_step) == (409, "step_conflict", 1)
    with pytest.raises(InvalidRequest) as err:
        api.act(sid, 1, [0, 0, 0], reward=0)
    assert (err.value.status, err.value.code, err.value.field) == (422, "invalid_observation", "observation")
    with pytest.raises(InvalidRequest) as err:
        api.act(sid, 1, [0, 0])
    assert (err.value.code, err.value.field) == ("missing_field", "reward")
    with pytest.raises(PayloadTooLarge) as err:
        api.act(sid, 1, np.zeros(5000), reward=0)
    assert (err.value.status, err.value.code) == (413, "too_large")
    for bad in ([np.nan, 0.0], ["a", 1]):  # refused before anything is sent
        with pytest.raises(InvalidRequest) as err:
            api.act(sid, 1, bad, reward=0)
        assert err.value.field == "observation" and err.value.status is None
    with pytest.raises(InvalidRequest, match="step"):
        api.act(sid, -1, [0, 0])
    with pytest.raises(InvalidRequest, match="reward"):
        api.act(sid, 1, [0, 0], done=True)
    assert _state(api, sid).step == 1  # nothing above was applied

    with pytest.raises(SessionNotFound):  # another key's session does not exist for you
        make_flavour(OTHER, retries=0).act(sid, 1, [0, 0], reward=0)
    with pytest.raises(Unauthorized) as err:
        make_flavour("wrong", retries=0).act(sid, 1, [0, 0], reward=0)
    assert err.value.status == 401
    with pytest.raises(Unauthorized):
        anonymous = make_flavour(None, retries=0)
        anonymous.run(anonymous.client.create_session())


def test_503_is_retried_with_the_same_step(make_flavour, live_server):
    faults = live_server.faults
    api = make_flavour(retries=3, backoff=0.01)
    sid = api.run(api.client.create_session()).session_id
    faults.add("unavailable", step=0, times=2)
    api.act(sid, 0, [0.0, 0.0])
    assert faults.requests[(sid, 0)] == 3
    faults.add("unavailable", on="create")  # 503: nothing created, safe to resend
    api.run(api.client.create_session())

    strict = make_flavour(retries=1, backoff=0.0, max_retry_after=0.05)
    faults.add("unavailable", step=1, times=2, retry_after=600)
    with pytest.raises(ServiceUnavailable) as err:
        strict.act(sid, 1, [0.0, 0.0], reward=0.0)
    assert (err.value.status, err.value.code, err.value.retry_after) == (503, "store_unavailable", 600.0)
    assert faults.requests[(sid, 1)] == 2 and _state(api, sid).step == 1


@pytest.mark.parametrize(
    "fault",
    [{"kind": "drop"}, {"kind": "delay", "seconds": 0.6}],
    ids=["dropped-connection", "timeout"],
)
def test_lost_answers_are_retried_and_applied_once(make_flavour, live_server, fault):
    faults = live_server.faults
    api = make_flavour(timeout=0.4, retries=3, backoff=0.01)
    sid = api.run(api.client.create_session()).session_id
    api.act(sid, 0, [0.0, 0.0])
    faults.add(step=1, **fault)
    second = api.act(sid, 1, [1.0, 0.0], reward=0.5)
    assert second.step == 1 and second.action == faults.actions[(sid, 1)]
    assert api.act(sid, 2, [1.0, 1.0], reward=1.0, done=True).done
    assert faults.requests[(sid, 1)] == 2  # applied, answer lost, resent once
    state = _state(api, sid)
    assert (state.step, state.returns) == (3, [1.5])  # every step applied exactly once
    if api.websocket:
        assert api.channel(sid).connects == 2


def test_session_keeps_an_unconfirmed_act_for_retry(make_flavour, live_server):
    api = make_flavour(retries=0, timeout=1.0)
    session = api.session()
    api.run(session.reset(OBS[0]))
    live_server.faults.add("drop", step=1)  # applied, answer lost, no client retry left
    with pytest.raises(ConnectionFailed):
        api.run(session.step(OBS[1], 0.5))
    assert session.pending is not None and session.pending.step == 1
    with pytest.raises(RuntimeError, match="retry"):
        api.run(session.step(OBS[2], 0.25))  # a new body for step 1 could lose the first reward
    assert isinstance(api.run(session.retry()), int)  # the stored answer for step 1
    api.run(session.end(OBS[2], 1.0))
    assert session.episode_returns == [1.5] and session.next_step == 3
    assert _state(api, session.session_id).returns == [1.5]
