"""Error mapping and answer parsing without a server (the shapes the real server sends)."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from clients import (
    ActResult,
    Conflict,
    InvalidRequest,
    ServiceUnavailable,
    SessionExists,
    SessionInfo,
    SessionNotFound,
    StepConflict,
    T2MIRClientError,
    Unauthorized,
)
from clients.errors import error_from_body, parse_retry_after
from clients.retry import RetryPolicy, worth_retrying


def _body(code, message="m", **extra):
    return {"error": {"code": code, "message": message, **extra}}


def test_http_statuses_pick_the_class():
    err = error_from_body(422, _body("invalid_observation", field="observation"))
    assert isinstance(err, InvalidRequest) and isinstance(err, ValueError)
    assert (err.status, err.code, err.field) == (422, "invalid_observation", "observation")
    assert isinstance(error_from_body(400, _body("invalid_json")), InvalidRequest)
    assert isinstance(error_from_body(403, _body("forbidden")), Unauthorized)
    err = error_from_body(500, _body("internal"))
    assert type(err) is T2MIRClientError and err.status == 500
    err = error_from_body(502, "<html>bad gateway</html>")
    assert isinstance(err, ServiceUnavailable) and err.code == "http_502" and "bad gateway" in err.message


def test_conflicts():
    err = error_from_body(409, _body("step_conflict", "x", expected_step=3))
    assert isinstance(err, StepConflict) and err.expected_step == 3
    # the structured field only: a step in the message text is never parsed
    err = error_from_body(409, _body("step_conflict", "the session expects step 12", field="step"))
    assert isinstance(err, StepConflict) and err.expected_step is None
    assert isinstance(error_from_body(409, _body("session_exists")), SessionExists)
    assert type(error_from_body(409, _body("conflict"))) is Conflict
    assert type(error_from_body(409, _body("model_unavailable"))) is Conflict


def test_websocket_frames_without_status_use_the_code_table():
    assert isinstance(error_from_body(None, _body("session_not_found")), SessionNotFound)
    err = error_from_body(None, _body("store_unavailable", retry_after=4))
    assert isinstance(err, ServiceUnavailable) and (err.status, err.retry_after) == (503, 4.0)
    frame = {"error": {"code": "store_unavailable", "message": "down"}, "status": 503, "retry_after": 2}
    err = error_from_body(None, frame)
    assert isinstance(err, ServiceUnavailable) and (err.status, err.retry_after) == (503, 2.0)
    assert isinstance(error_from_body(None, _body("unauthorized")), Unauthorized)
    assert type(error_from_body(None, _body("mystery"))) is T2MIRClientError


def test_retry_after_values():
    assert (
        parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after(None) is None
    )
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < parse_retry_after(later) <= 30
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_backoff_is_exponential_with_full_jitter_and_bounded():
    policy = RetryPolicy(retries=2, backoff=0.1, max_backoff=0.3, max_retry_after=5, rng=random.Random(0))
    for attempt, cap in enumerate([0.1, 0.2, 0.3, 0.3]):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits) and max(waits) > 0.8 * cap and min(waits) < 0.2 * cap
    assert policy.delay(0, 60) == 5 and policy.delay(3, 1.0) == 1.0  # Retry-After: the least wait, capped
    attempts = policy.attempts()
    assert attempts.next_delay() is not None and attempts.next_delay() is not None
    assert attempts.next_delay() is None and attempts.made == 3  # retries=2: three attempts in all
    timed = RetryPolicy(retries=100, max_elapsed=2.0).attempts()
    assert timed.next_delay(1.5) == 1.5 and timed.next_delay(2.5) is None  # would pass the time bound


def test_what_is_retried():
    def err(status, code):
        return error_from_body(status, _body(code) if code else "proxy page")

    assert worth_retrying(err(503, "store_unavailable"), idempotent=False)  # the table says: nothing applied
    assert worth_retrying(err(429, "too_many_requests"), idempotent=False)
    assert not worth_retrying(err(409, "step_conflict"), idempotent=True)
    assert not worth_retrying(err(500, "internal"), idempotent=True)
    assert worth_retrying(err(502, None), idempotent=True) and not worth_retrying(
        err(502, None), idempotent=False
    )
    assert worth_retrying(err(503, None), idempotent=False)


def test_answers_parse_what_the_server_sends():
    info = SessionInfo.from_dict(
        {
            "session_id": "s",
            "model": {"name": "m", "version": "2"},
            "backbone": "ad",
            "observation_dim": None,
            "action": None,
            "env_id": "t2mir/DarkRoom-v0",
            "step": 0,
        }
    )
    assert info.observation_dim is None and info.action is None and info.env_id == "t2mir/DarkRoom-v0"
    done = ActResult.from_dict(
        {
            "session_id": "s",
            "step": 4,
            "episode": 0,
            "action": None,
            "episode_return": 3.0,
            "timings": {"total": 1.5},
        }
    )
    assert done.done and done.episode_return == 3.0 and done.timings == {"total": 1.5}
    assert ActResult.from_dict({"step": 1, "action": 2.0}).action == 2
    assert ActResult.from_dict({"step": 1, "action": [1, 0.5]}).action == [1.0, 0.5]
