"""HTTP client against the fake server: round trip, numpy inputs, error mapping, async twin."""

from __future__ import annotations

import numpy as np
import pytest

from clients import (
    AsyncT2MIRClient,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    SessionExists,
    SessionNotFound,
    StepConflict,
    T2MIRClient,
    Unauthorized,
)


def test_create_act_get_delete_round_trip(fake_server):
    with T2MIRClient(fake_server.url) as client:
        assert client.health() == {"status": "ok"}
        assert client.ready() is True
        assert {m["name"] for m in client.models()["models"]} == {"darkroom", "cheetah"}
        info = client.create_session(model="darkroom", metadata={"robot": "r1"}, sampling="greedy")
        assert info.observation_dim == 2
        assert (info.action.kind, info.action.n) == ("discrete", 5)
        assert (info.model.name, info.backbone) == ("darkroom", "ad")

        first = client.act(info.session_id, 0, [0.0, 0.0])
        assert (first.step, first.episode, first.done) == (0, 0, False)
        assert isinstance(first.action, int) and first.timings["total_ms"] > 0
        client.act(info.session_id, 1, [1.0, 0.0], reward=0.0)
        closing = client.act(info.session_id, 2, [1.0, 1.0], reward=1.0, done=True)
        assert closing.action is None and closing.done

        state = client.get_session(info.session_id)
        assert (state.step, state.episode, state.returns) == (3, 1, [1.0])
        assert state.model.name == "darkroom"
        client.delete_session(info.session_id)
        with pytest.raises(SessionNotFound):
            client.get_session(info.session_id)


def test_numpy_inputs_are_converted(fake_server):
    with T2MIRClient(fake_server.url) as client:
        info = client.create_session(model="cheetah")
        obs = np.array([0.5, -1.25, 3.0], dtype=np.float32)
        result = client.act(info.session_id, np.int64(0), obs)
        assert result.action == [0.5, -0.5]
        result = client.act(info.session_id, np.int32(1), obs.astype(np.float64), reward=np.float32(0.25))
        client.act(info.session_id, 2, obs[None, :], reward=np.array([1.5]), done=True)
        assert client.get_session(info.session_id).returns == [1.75]
        # local checks before anything is sent
        for bad in ([np.nan, 0.0, 0.0], ["a", 1, 2]):
            with pytest.raises(InvalidRequest) as err:
                client.act(info.session_id, 3, bad)
            assert err.value.field == "observation" and err.value.status is None
        with pytest.raises(InvalidRequest, match="step"):
            client.act(info.session_id, -1, obs)
        with pytest.raises(InvalidRequest, match="reward"):
            client.act(info.session_id, 3, obs, done=True)
    assert fake_server.sessions[info.session_id].applied == [0, 1, 2]


def test_error_statuses_map_to_exceptions(fake_server):
    with T2MIRClient(fake_server.url, retries=0) as client:
        info = client.create_session()
        sid = info.session_id
        with pytest.raises(SessionNotFound) as err:
            client.act("nope", 0, [0, 0])
        assert (err.value.status, err.value.code) == (404, "session_not_found")

        client.act(sid, 0, [0, 0])
        with pytest.raises(StepConflict) as err:
            client.act(sid, 5, [0, 0], reward=0)
        assert (err.value.status, err.value.code, err.value.expected_step) == (409, "step_conflict", 1)
        fake_server.expected_step_field = False  # only the message names it
        with pytest.raises(StepConflict) as err:
            client.act(sid, 7, [0, 0], reward=0)
        assert err.value.expected_step == 1

        with pytest.raises(InvalidRequest) as err:
            client.act(sid, 1, [0, 0, 0], reward=0)
        assert (err.value.status, err.value.code, err.value.field) == (422, "validation_error", "observation")
        with pytest.raises(InvalidRequest) as err:
            client.create_session(model="no-such-model")
        assert err.value.field == "model"
        with pytest.raises(SessionExists) as err:
            client.create_session(session_id=sid)
        assert err.value.status == 409

        with pytest.raises(PayloadTooLarge) as err:
            client.act(sid, 1, np.zeros(5000), reward=0)
        assert (err.value.status, err.value.code) == (413, "payload_too_large")

        fake_server.add_fault("unavailable", retry_after="7")
        with pytest.raises(ServiceUnavailable) as err:
            client.act(sid, 1, [0, 0], reward=0)
        assert (err.value.status, err.value.retry_after) == (503, 7.0)
        assert fake_server.sessions[sid].applied == [0]  # nothing above applied anything

    fake_server.api_keys = {"k1", "k2"}
    with T2MIRClient(fake_server.url, retries=0) as anonymous, pytest.raises(Unauthorized) as err:
        anonymous.create_session()
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    with (
        T2MIRClient(fake_server.url, api_key="k1") as owner,
        T2MIRClient(fake_server.url, api_key="k2") as other,
    ):
        mine = owner.create_session()
        owner.act(mine.session_id, 0, [0, 0])
        with pytest.raises(SessionNotFound):  # another key's session does not exist for you
            other.act(mine.session_id, 1, [0, 0], reward=0)


@pytest.mark.anyio
async def test_async_client_matches_sync(fake_server):
    observations = [[0.0, 0.0], [1.0, 0.0], [2.0, 3.0], [4.0, 1.0]]
    with T2MIRClient(fake_server.url) as client:
        sid = client.create_session().session_id
        sync_actions = [
            client.act(sid, i, o, reward=None if i == 0 else 0.5).action for i, o in enumerate(observations)
        ]
    async with AsyncT2MIRClient(fake_server.url) as client:
        sid = (await client.create_session()).session_id
        async_actions = [
            (await client.act(sid, i, o, reward=None if i == 0 else 0.5)).action
            for i, o in enumerate(observations)
        ]
        await client.act(sid, 4, [0, 0], reward=1.0, done=True)
        assert (await client.get_session(sid)).returns == [2.5]
        assert await client.ready()
        await client.delete_session(sid)
        with pytest.raises(SessionNotFound):
            await client.get_session(sid)
    assert async_actions == sync_actions
