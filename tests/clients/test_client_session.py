"""`Session` keeps the act protocol and the step counter."""

from __future__ import annotations

import pytest

from clients import Session, StepConflict, T2MIRClient


def test_session_enforces_the_act_protocol(fake_server):
    with T2MIRClient(fake_server.url) as client:
        session = Session.create(client)
        with pytest.raises(RuntimeError, match="reset"):
            session.step([0, 0], 1.0)
        with pytest.raises(RuntimeError, match="reset"):
            session.end([0, 0], 1.0)
        assert isinstance(session.reset([0, 0]), int) and session.in_episode
        with pytest.raises(RuntimeError, match="end"):
            session.reset([0, 0])
        session.step([1, 0], 2.0)
        session.end([1, 1], 0.5)
        assert session.reset([0, 0]) is not None and session.next_step == 4
        session.end([0, 0], 3.0)
        assert session.episode_returns == [2.5, 3.0] == client.get_session(session.session_id).returns
        assert session.episode == 1 and session.last_result.done

        # someone else moved the session on: the server says so, resync() catches up
        client.act(session.session_id, 5, [0, 0])
        client.act(session.session_id, 6, [0, 0], reward=0.0)
        with pytest.raises(StepConflict) as err:
            session.reset([0, 0])
        assert err.value.expected_step == 7 and session.next_step == 5
        assert session.resync() == 7
        session.step([0, 0], 1.0)  # after a resync either call is allowed
        session.close(delete=True)
    assert session.session_id not in fake_server.sessions
