"""Units of the API layer without a server: request validation, the error format, auth, settings,
seeds, and the history mirror rebuilt from store records versus one built step by step."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from model_factory import tiny_config

from server.act import parse_act, parse_act_json, validate_act
from server.auth import Authenticator, owner_of
from server.errors import ApiError
from server.families import T2MIRSessions
from server.mirror import MirrorEntry, action_value, advance, close, entry_from_state, obs_tensor, observed
from server.registry import retention_for
from server.sessions import derive_seed
from server.settings import ServerSettings
from server.store import MemorySessionStore, Retention, SessionMeta, StepRecord, retain
from t2mir_model.history import SessionHistory
from t2mir_model.t2mir.context import ad_context_episodes, ad_context_tokens, dpt_context_tokens

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"observation": [1, 2]}, 422, "step"),
        ({"step": True, "observation": [1, 2]}, 422, "step"),
        ({"step": 1.0, "observation": [1, 2]}, 422, "step"),
        ({"step": -1, "observation": [1, 2]}, 422, "step"),
        ({"step": "1", "observation": [1, 2]}, 422, "step"),
        ({"step": 0}, 422, "observation"),
        ({"step": 0, "observation": ["1", 2]}, 422, "observation"),
        ({"step": 0, "observation": [True, 2]}, 422, "observation"),
        ({"step": 0, "observation": [[1, 2]]}, 422, "observation"),
        ({"step": 0, "observation": []}, 422, "observation"),
        ({"step": 0, "observation": [float("nan"), 2]}, 422, "observation"),
        ({"step": 0, "observation": [float("inf"), 2]}, 422, "observation"),
        ({"step": 0, "observation": [1e300, 2]}, 422, "observation"),
        ({"step": 0, "observation": [1, 2], "reward": "1"}, 422, "reward"),
        ({"step": 0, "observation": [1, 2], "reward": float("-inf")}, 422, "reward"),
        ({"step": 0, "observation": [1, 2], "done": 1}, 422, "done"),
        ({"step": 0, "observation": [1, 2], "obs": [1]}, 422, "obs"),
    ],
)
def test_bad_act_bodies_are_422_with_the_field(body, status, field):
    with pytest.raises(ApiError) as info:
        parse_act(body)
    assert info.value.status == status
    assert info.value.field == field
    assert set(info.value.body()["error"]) >= {"code", "message", "field"}


def test_act_body_parsing():
    body = parse_act_json(b'{"step": 3, "observation": 0.5, "reward": 1, "done": false}')
    assert body.observation == [0.5] and body.reward == 1.0 and body.done is False
    with pytest.raises(ApiError) as info:
        parse_act_json(b'{"step": 3,')
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    with pytest.raises(ApiError) as info:
        parse_act_json(b"[1, 2]")
    assert info.value.status == 422
    with pytest.raises(ApiError) as info:  # NaN literals parse as JSON but are refused
        parse_act_json(b'{"step": 0, "observation": [NaN, 1]}')
    assert (info.value.status, info.value.field) == (422, "observation")


def _meta(episode_steps: int) -> SessionMeta:
    return SessionMeta("s", "", "m", "1", "ad", Retention("best", 3), episode_steps=episode_steps)


def _model() -> SimpleNamespace:
    """The parts of a `LoadedModel` that `validate_act` reads: a T2MIR config and its family."""
    config = tiny_config()
    return SimpleNamespace(config=config, family=T2MIRSessions(config))


@pytest.mark.parametrize(
    ("body", "episode_steps", "field"),
    [
        ({"step": 0, "observation": [1, 2, 3]}, 0, "observation"),
        ({"step": 0, "observation": [1, 2, 3, 4, 5]}, 0, "observation"),
        ({"step": 0, "observation": [1, 2, 3, 4], "reward": 1.0}, 0, "reward"),
        ({"step": 0, "observation": [1, 2, 3, 4], "reward": None, "done": True}, 0, "done"),
        ({"step": 0, "observation": [1, 2, 3, 4]}, 2, "reward"),
        ({"step": 0, "observation": [1, 2, 3, 4], "reward": 0.0}, 6, "step"),  # max_episode_steps = 6
    ],
)
def test_model_dependent_validation(body, episode_steps, field):
    model = _model()
    with pytest.raises(ApiError) as info:
        validate_act(parse_act(body), _meta(episode_steps), model)  # type: ignore[arg-type]
    assert (info.value.status, info.value.field) == (422, field)


def test_valid_steps_pass_model_validation():
    model = _model()
    validate_act(parse_act({"step": 0, "observation": [1, 2, 3, 4]}), _meta(0), model)  # type: ignore[arg-type]
    validate_act(parse_act({"step": 9, "observation": [1, 2, 3, 4], "reward": 0}), _meta(5), model)  # type: ignore[arg-type]
    done = parse_act({"step": 9, "observation": [1, 2, 3, 4], "reward": 0, "done": True})
    validate_act(done, _meta(6), model)  # type: ignore[arg-type]


def test_error_format_and_frames():
    error = ApiError(503, "store_unavailable", "down", headers={"Retry-After": "2"})
    assert error.body() == {"error": {"code": "store_unavailable", "message": "down", "retry_after": 2}}
    assert error.frame() == {
        "error": {"code": "store_unavailable", "message": "down", "retry_after": 2},
        "status": 503,
        "retry_after": 2,
    }
    conflict = ApiError(409, "step_conflict", "late", field="step", expected_step=7)
    assert conflict.body()["error"] == {
        "code": "step_conflict",
        "message": "late",
        "field": "step",
        "expected_step": 7,
    }


# ---------------------------------------------------------------------------------- auth, settings, seeds
def test_auth_owners_and_headers():
    auth = Authenticator(["alpha", "beta"])
    assert auth.owner({"authorization": "Bearer alpha"}) == owner_of("alpha")
    assert auth.owner({"x-api-key": "beta"}) == owner_of("beta")
    assert owner_of("alpha") != owner_of("beta") and "alpha" not in owner_of("alpha")
    for headers in (
        {},
        {"authorization": "Bearer gamma"},
        {"authorization": "Basic alpha"},
        {"x-api-key": ""},
    ):
        with pytest.raises(ApiError) as info:
            auth.owner(headers)
        assert info.value.status == 401
    assert Authenticator([]).owner({}) == ""


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("T2MIR_CHECKPOINTS", "a, b")
    monkeypatch.setenv("T2MIR_API_KEYS", "k1,k2")
    monkeypatch.setenv("T2MIR_MAX_BATCH_SIZE", "8")
    settings = ServerSettings()
    assert settings.checkpoints == ["a", "b"] and settings.max_batch_size == 8
    assert settings.key_values() == ["k1", "k2"]
    assert "k1" not in repr(settings)
    assert ServerSettings(checkpoints=["x"], max_wait_ms=0.5).max_wait_ms == 0.5
    monkeypatch.setenv("T2MIR_CHECKPOINTS", '["c"]')
    assert ServerSettings().checkpoints == ["c"]


def test_seeds_are_deterministic_per_session_and_step():
    assert derive_seed("s1", 4) == derive_seed("s1", 4)
    assert len({derive_seed("s1", i) for i in range(100)} | {derive_seed("s2", 0)}) == 101
    assert 0 <= derive_seed("x", 2**52) < 2**63


# ---------------------------------------------------------------------------------- mirror
def _play(config, episodes: list[int], seed: int):
    """Drive a store, a step-by-step SessionHistory and an incremental mirror with the same data."""
    rng = random.Random(seed)
    discrete = config.action.is_discrete
    retention = retention_for(config)

    def action():
        if discrete:
            return torch.tensor(rng.randrange(config.action.n))
        return torch.tensor([rng.uniform(-2, 2) for _ in range(config.action.dim)], dtype=torch.float32)

    reference = SessionHistory()
    mirror = MirrorEntry(SessionHistory())
    records: list[tuple[StepRecord, bool]] = []
    step = 0
    for length in episodes:
        last = None
        for t in range(length + 1):
            obs = [rng.gauss(0, 1) for _ in range(config.observation.dim)]
            reward = None if t == 0 else round(rng.uniform(-1, 1), 3)
            if t == length:  # the done record
                reference.close(last, reward)
                ret = sum(r.reward for r, _ in records[-length:] if r.reward is not None) + reward
                mirror = close(mirror, reward, ret, retention, step)
                records.append((StepRecord(step, obs, reward, None, True), True))
            else:
                reference.observe(obs_tensor(obs), reward, last)
                history = observed(mirror, obs_tensor(obs), reward)
                last = action()
                mirror = advance(mirror, history, last, step)
                records.append((StepRecord(step, obs, reward, action_value(last), False), False))
            step += 1
    return reference, mirror, [r for r, _ in records]


def _assert_same(a: SessionHistory, b: SessionHistory) -> None:
    assert a.episode == b.episode
    assert [e.index for e in a.episodes] == [e.index for e in b.episodes]
    for x, y in zip(a.episodes, b.episodes, strict=True):
        torch.testing.assert_close(x.obs, y.obs, rtol=0, atol=0)
        torch.testing.assert_close(x.actions, y.actions, rtol=0, atol=0)
        torch.testing.assert_close(x.rewards, y.rewards, rtol=0, atol=0)
    for xs, ys in ((a.obs, b.obs), (a.actions, b.actions)):
        assert len(xs) == len(ys) and all(torch.equal(x, y) for x, y in zip(xs, ys, strict=True))
    assert a.rewards == b.rewards


@pytest.mark.parametrize(("backbone", "discrete"), [("ad", True), ("dpt", False)])
async def test_mirror_from_store_records_equals_step_by_step_history(backbone, discrete):
    config = tiny_config(backbone=backbone, discrete=discrete)
    reference, mirror, records = _play(config, [6, 3, 5, 2, 4], seed=1)
    # open episode: three more steps
    extra = [
        StepRecord(len(records), [0.1, 0.2, 0.3, 0.4], None, 1 if discrete else [0.5, -0.5, 1.0], False),
        StepRecord(len(records) + 1, [0.5, 0.6, 0.7, 0.8], 0.25, 3 if discrete else [1.5, 0.0, -1.0], False),
    ]
    store = MemorySessionStore()
    meta = SessionMeta("s", "", "m", "1", backbone, retention_for(config))
    await store.create(meta)
    for record in [*records, *extra]:
        assert (await store.append("s", record, {})).status == "appended"
    previous = None
    for record in extra:
        example = (
            torch.tensor(record.action) if discrete else torch.tensor(record.action, dtype=torch.float32)
        )
        reference.observe(obs_tensor(record.obs), record.reward, previous)
        mirror = advance(
            mirror, observed(mirror, obs_tensor(record.obs), record.reward), example, record.step
        )
        previous = example
    state = await store.load("s")
    rebuilt = entry_from_state(state, discrete)
    kept = {e.index for e in state.episodes}
    reference.episodes = [e for e in reference.episodes if e.index in kept]
    _assert_same(rebuilt.history, reference)
    _assert_same(mirror.history, reference)
    assert rebuilt.next_step == mirror.next_step == len(records) + len(extra)
    assert torch.equal(rebuilt.pending_action, mirror.pending_action)
    assert rebuilt.returns == mirror.returns
    # what the engine would read is identical
    zero = torch.zeros((), dtype=torch.long) if discrete else torch.zeros(3)
    if backbone == "ad":
        a, b = ad_context_tokens(config, rebuilt.history, zero), ad_context_tokens(config, reference, zero)
    else:
        a, b = dpt_context_tokens(rebuilt.history, zero)[0], dpt_context_tokens(reference, zero)[0]
    for name in ("obs", "action", "reward", "timestep", "kind", "valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("rule", ["keep", "drop"])
def test_ad_retention_keeps_every_episode_the_context_can_read(rule):
    """The store keeps AD's L-1 best episodes; the context chosen from them is the one chosen from
    the whole history, under either rule for unrewarded episodes."""
    config = tiny_config().replace(unrewarded_context=rule)
    rng = random.Random(3)
    for _ in range(50):
        history = SessionHistory()
        for _ in range(rng.randrange(7)):
            history.observe(torch.zeros(4))
            history.close(torch.tensor(0), rng.choice([0.0, 0.0, 0.0, 1.0, 2.0]))
        kept = retain(history.episodes, [e.ret for e in history.episodes], retention_for(config))
        full = ad_context_episodes(history.episodes, config.context_episodes, rule)
        assert [e.index for e in ad_context_episodes(kept, config.context_episodes, rule)] == [
            e.index for e in full
        ]
