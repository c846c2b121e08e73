"""The act flow's failure paths, in process (TestClient) with a store that fails on demand:
a store outage or a lost race at ``append`` after the engine ran, a model version that is not
loaded, small mirrors that force rebuilds, and the ``serve`` command's argument handling."""

from __future__ import annotations

import argparse
import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

import server.registry as registry_module
from server.app import create_app
from server.command import add_arguments, run, settings_from_args
from server.routes import ActFastPath
from server.schemas import Timings
from server.settings import ServerSettings
from server.store import AppendOutcome, MemorySessionStore, SessionMeta, StepRecord, StoreUnavailable
from t2mir_model import SessionHistory, StepCompileError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class FaultyStore:
    """Delegates to a real store; the next ``append`` can raise or answer a scripted outcome."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.next_append: BaseException | AppendOutcome | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, session_id, record, response, created_at=None):
        scripted, self.next_append = self.next_append, None
        if isinstance(scripted, BaseException):
            raise scripted
        if scripted is not None:
            return scripted
        return await self.inner.append(session_id, record, response, created_at)


@pytest.fixture
def app_client(tiny_checkpoint, short_checkpoint):
    """An in-process app (memory store) whose store fails on demand: (client, faulty store, ctx)."""
    settings = ServerSettings(checkpoints=[str(tiny_checkpoint), str(short_checkpoint)], cache_slots=4)
    faulty = FaultyStore(MemorySessionStore(ttl_seconds=settings.session_ttl_seconds))
    app = create_app(settings, store=faulty)
    ctx = app.state.ctx
    with TestClient(app) as client:
        yield client, faulty, ctx


def act(client, sid: str, step: int, start: int = 0, done: bool = False):
    body: dict[str, Any] = {"step": step, "observation": [float(step % 7), 1.0]}
    if step != start:
        body["reward"] = 0.25
    if done:
        body["done"] = True
    return client.post(f"/sessions/{sid}/act", json=body)


def actions(client, sid: str, steps: range) -> list[int]:
    out = []
    for step in steps:
        response = act(client, sid, step)
        assert response.status_code == 200, response.text
        out.append(response.json()["action"])
    return out


def recreate(client, sid: str, model: str = "darkroom-test") -> None:
    client.delete(f"/sessions/{sid}")
    assert client.post("/sessions", json={"model": model, "session_id": sid}).status_code == 201


def test_timings_follow_the_schema_and_fit_in_the_total(app_client):
    """Every act answer carries each documented part of its time; the parts never exceed the total."""
    client, _, _ = app_client
    recreate(client, "t1")
    for step in range(4):
        timings = act(client, "t1", step).json()["timings"]
        assert set(timings) == set(Timings.model_fields)
        assert all(v >= 0.0 for v in timings.values())
        assert sum(v for k, v in timings.items() if k != "total") <= timings["total"] + 0.01
    assert timings["forward"] > 0.0


def store_calls(client) -> dict[str, float]:
    """How many calls of each store operation the server has made (from ``/metrics``)."""
    text = client.get("/metrics").text
    return {
        sample.labels["op"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "t2mir_store_latency_seconds_count"
    }


def calls_during(client, acts) -> dict[str, float]:
    """The store calls made while ``acts()`` runs, by operation."""
    before = store_calls(client)
    acts()
    after = store_calls(client)
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


def test_acts_on_the_mirror_cost_one_store_call_and_a_rebuild_one_more(app_client):
    """The act path's round trips: an act for the step after one this process answered is its
    append alone (closing an episode included); without the mirror, one ``load`` comes first."""
    client, _, ctx = app_client
    recreate(client, "r1", "short-test")

    def play(steps: range) -> None:
        for step in steps:
            response = act(client, "r1", step, start=0 if step < 5 else 5, done=step == 4)
            assert response.status_code == 200, response.text

    assert calls_during(client, lambda: play(range(0, 1))) == {"load": 1, "append": 1}
    assert calls_during(client, lambda: play(range(1, 5))) == {"append": 4}
    ctx.sessions.deps.mirror.drop("r1")
    assert calls_during(client, lambda: play(range(5, 6))) == {"load": 1, "append": 1}


def test_the_acts_of_one_engine_call_share_one_store_round_trip(app_client):
    """The acts answered by one engine call store their steps in one round trip (one
    ``append_many``), each fenced and answered on its own."""
    client, _, ctx = app_client
    sessions = ["b0", "b1", "b2", "b3"]  # the engine has 4 cache slots
    for sid in sessions:
        recreate(client, sid)
    model = ctx.registry.resolve("darkroom-test")
    release, blocked = threading.Event(), threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(30)

    def wait_until(condition) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.005)

    statuses: list[int] = []

    def play() -> None:
        with ThreadPoolExecutor(len(sessions)) as pool:
            held = client.portal.start_task_soon(model.batcher.run_on_worker, block)
            wait_until(blocked.is_set)  # the engine thread is busy: nothing runs until release
            first = pool.submit(act, client, sessions[0], 0)  # its engine call, alone, waits
            wait_until(lambda: model.batcher.pending == 1 and model.batcher.queued == 0)
            rest = [pool.submit(act, client, sid, 0) for sid in sessions[1:]]
            wait_until(lambda: model.batcher.queued == len(sessions) - 1)  # the next call's batch
            release.set()
            held.result(30)
            statuses.extend(f.result().status_code for f in [first, *rest])

    batches_before = batch_counts(client)
    assert calls_during(client, play) == {"load": 4, "append": 2}  # each first step reads its session
    assert statuses == [200] * 4
    assert batch_counts(client) - batches_before == 2  # engine calls of 1 and of 3 acts
    assert [client.get(f"/sessions/{sid}").json()["step"] for sid in sessions] == [1] * 4


def batch_counts(client) -> float:
    """Engine calls so far (from ``/metrics``)."""
    text = client.get("/metrics").text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "t2mir_batch_size_count"
    )


def at_position(episode: int, t: int, obs_dim: int) -> SessionHistory:
    """A history whose open episode ``episode`` has reached s_t (the engine's cache check reads only that)."""
    return SessionHistory(episode=episode, obs=[torch.zeros(obs_dim)] * (t + 1))


def test_store_outage_at_append_evicts_the_engine_slot_and_the_retry_matches(app_client):
    client, faulty, ctx = app_client
    recreate(client, "f1")
    reference = actions(client, "f1", range(0, 8))
    recreate(client, "f1")
    first = actions(client, "f1", range(0, 4))
    before = client.get("/sessions/f1").json()
    engine = ctx.registry.resolve("darkroom-test").engine
    step4 = at_position(0, 4, engine.config.observation.dim)
    assert engine.is_cached(("f1", before["created_at"]), step4)  # step 4 would decode incrementally
    faulty.next_append = StoreUnavailable("redis went away", retry_after=2)
    response = act(client, "f1", 4)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "store_unavailable"
    assert client.get("/sessions/f1").json() == before
    engine = ctx.registry.resolve("darkroom-test").engine
    assert not engine.is_cached(("f1", before["created_at"]), step4)  # it ran ahead: slot dropped
    assert ctx.sessions.deps.mirror.get("f1") is None
    assert first + actions(client, "f1", range(4, 8)) == reference


def test_lost_race_at_append_is_a_conflict_or_the_stored_answer(app_client):
    client, faulty, ctx = app_client
    recreate(client, "f2")
    actions(client, "f2", range(0, 3))
    ctx.sessions.deps.mirror.drop("f2")  # the act reads the store, so the race is lost after that read
    faulty.next_append = AppendOutcome("conflict", next_step=5)
    response = act(client, "f2", 3)
    assert response.status_code == 409 and response.json()["error"]["expected_step"] == 5
    assert ctx.sessions.deps.mirror.get("f2") is None
    stored = {"session_id": "f2", "step": 3, "episode": 0, "action": 4}
    faulty.next_append = AppendOutcome("duplicate", response=stored)
    response = act(client, "f2", 3)
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "timings"} == stored
    assert client.get("/sessions/f2").json()["step"] == 3  # the scripted answers wrote nothing


def test_stale_mirror_never_stores_a_step(app_client):
    """Another process moves the session on behind this server's mirror: the fenced append refuses,
    and the act is answered from the store's state as if the mirror had not existed."""
    client, _, ctx = app_client
    recreate(client, "f3")
    reference = actions(client, "f3", range(0, 6))
    recreate(client, "f3")
    actions(client, "f3", range(0, 3))
    entry = ctx.sessions.deps.mirror.get("f3")
    created_at = entry.created_at
    stored = {"session_id": "f3", "step": 3, "episode": 0, "action": reference[3]}
    record = StepRecord(3, [3.0, 1.0], 0.25, reference[3], False)
    assert client.portal.call(ctx.store.append, "f3", record, stored).status == "appended"
    assert ctx.sessions.deps.mirror.get("f3") is entry  # the server does not know yet
    response = act(client, "f3", 3)  # the client retries the step the other process answered
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "timings"} == stored
    assert actions(client, "f3", range(4, 6)) == reference[4:6]
    assert client.get("/sessions/f3").json()["step"] == 6  # the next step
    # deleted and created again elsewhere, then played to the very step the mirror expects
    client.portal.call(ctx.store.delete, "f3")
    meta = SessionMeta("f3", "", "darkroom-test", entry.meta.model_version, "ad", entry.meta.retention)
    client.portal.call(ctx.store.create, meta)
    for step in range(6):
        obs = [float(step), 0.0]
        reward = None if step == 0 else 0.0
        r = StepRecord(step, obs, reward, 0, False)
        assert client.portal.call(ctx.store.append, "f3", r, {"step": step}).status == "appended"
    assert ctx.sessions.deps.mirror.get("f3").next_step == 6
    response = act(client, "f3", 6)
    assert response.status_code == 200
    assert ctx.sessions.deps.mirror.get("f3").created_at == meta.created_at != created_at
    assert client.get("/sessions/f3").json()["step"] == 7


def test_session_on_a_version_not_loaded_here_is_409(app_client):
    client, _, ctx = app_client
    meta = SessionMeta(
        "ghost", "", "darkroom-test", "99", "ad", ctx.registry.resolve("darkroom-test").retention
    )
    client.portal.call(ctx.store.create, meta)
    response = act(client, "ghost", 0)
    assert response.status_code == 409 and response.json()["error"]["code"] == "model_unavailable"
    info = client.get("/sessions/ghost").json()
    assert info["model"] == {"name": "darkroom-test", "version": "99"} and info["observation_dim"] is None


def test_tiny_mirror_rebuilds_from_the_store_with_identical_actions(tiny_checkpoint, short_checkpoint):
    def run_both(mirror_sessions: int) -> list[int]:
        settings = ServerSettings(
            checkpoints=[str(short_checkpoint)], cache_slots=1, mirror_sessions=mirror_sessions
        )
        out = []
        with TestClient(create_app(settings)) as client:
            for sid in ("m1", "m2"):
                recreate(client, sid, "short-test")
            for episode in range(3):
                start = episode * 5
                for step in range(start, start + 5):
                    for sid in ("m1", "m2"):  # interleaved: with 1 mirror and 1 slot, every act rebuilds
                        response = act(client, sid, step, start=start, done=step == start + 4)
                        assert response.status_code == 200, response.text
                        out.append(response.json()["action"])
        return out

    assert run_both(1) == run_both(100)


def test_serve_command_arguments(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.setenv("T2MIR_MAX_BATCH_SIZE", "4")
    args = parser.parse_args(
        ["--checkpoint", "a", "--checkpoint", "b", "--no-cache", "--port", "9", "--max-wait-ms", "0"]
    )
    settings = settings_from_args(args)
    assert settings.checkpoints == ["a", "b"] and settings.no_cache and settings.port == 9
    assert settings_from_args(parser.parse_args(["--compile"])).compile_step == "on"
    assert settings_from_args(parser.parse_args(["--compile", "off"])).compile_step == "off"
    assert settings.max_batch_size == 4 and settings.max_wait_ms == 0  # env and flags combine, flags win
    monkeypatch.delenv("T2MIR_CHECKPOINTS", raising=False)
    assert run(parser.parse_args([])) == 2
    assert run(parser.parse_args(["--checkpoint", "x", "--max-batch-size", "0"])) == 2
    assert run(parser.parse_args(["--checkpoint", "x", "--compile", "--device", "cuda"])) == 2


def test_compiling_the_step_is_refused_for_a_gpu_device():
    with pytest.raises(ValueError, match="CPU serving only"):
        ServerSettings(compile_step=True, device="cuda:0")
    assert ServerSettings(compile_step=True, device="cpu").compile_step == "on"
    assert ServerSettings(compile_step="auto", device="cuda:0").compile_step == "auto"  # serves eagerly


def test_compile_step_defaults_to_auto_and_reads_booleans(monkeypatch):
    monkeypatch.delenv("T2MIR_COMPILE_STEP", raising=False)
    assert ServerSettings().compile_step == "auto"
    for text, mode in (("true", "on"), ("false", "off"), ("auto", "auto"), ("off", "off")):
        monkeypatch.setenv("T2MIR_COMPILE_STEP", text)
        assert ServerSettings().compile_step == mode
    with pytest.raises(ValueError):
        ServerSettings(compile_step="sometimes")


def test_auto_compile_needs_the_cpu_a_cache_and_a_compiler(monkeypatch):
    monkeypatch.setattr(registry_module, "has_cxx_compiler", lambda: True)
    assert registry_module._compiles(ServerSettings(compile_step="auto"))
    assert not registry_module._compiles(ServerSettings(compile_step="auto", device="cuda"))
    assert not registry_module._compiles(ServerSettings(compile_step="auto", no_cache=True))
    assert not registry_module._compiles(ServerSettings(compile_step="off"))
    monkeypatch.setattr(registry_module, "has_cxx_compiler", lambda: False)
    assert not registry_module._compiles(ServerSettings(compile_step="auto"))
    assert registry_module._compiles(ServerSettings(compile_step="on"))  # and fails at load if it cannot


def test_auto_compile_serves_eagerly_when_compiling_fails(monkeypatch, tiny_checkpoint):
    real = registry_module.load_engine

    def no_compiler(directory, options):
        if options.compile_step:
            raise StepCompileError("no C++ compiler")
        return real(directory, options)

    monkeypatch.setattr(registry_module, "has_cxx_compiler", lambda: True)
    monkeypatch.setattr(registry_module, "load_engine", no_compiler)
    _, engine, _ = registry_module._read(tiny_checkpoint, ServerSettings(compile_step="auto"))
    assert not engine.compiled_step
    with pytest.raises(StepCompileError):
        registry_module._read(tiny_checkpoint, ServerSettings(compile_step="on"))


def test_old_versions_are_bounded_and_their_sessions_get_409(tmp_path, tiny_checkpoint, make_checkpoint):
    directory = tmp_path / "darkroom-test"
    make_checkpoint(directory, "darkroom-test", "1")
    settings = ServerSettings(checkpoints=[str(directory)], cache_slots=2, max_versions_per_model=2)
    with TestClient(create_app(settings)) as client:
        recreate(client, "v1")
        actions(client, "v1", range(0, 2))
        for version in ("2", "3"):
            make_checkpoint(directory, "darkroom-test", version, seed=int(version))
            assert client.post("/models/darkroom-test/reload").json()["version"] == version
            recreate(client, f"v{version}")
            actions(client, f"v{version}", range(0, 2))
        loaded = [m["version"] for m in client.get("/models").json()["models"]]
        assert loaded == ["2", "3"]  # v1 was the least recently used old version
        assert act(client, "v1", 2).json()["error"]["code"] == "model_unavailable"
        assert act(client, "v2", 2).status_code == 200


def test_dpt_continuous_sessions_match_with_and_without_cache(tmp_path, make_checkpoint):
    from t2mir_model import ActionSpec

    directory = make_checkpoint(
        tmp_path / "dpt",
        "dpt-test",
        "1",
        backbone="dpt",
        action=ActionSpec("continuous", dim=2, low=(-2.0, -2.0), high=(2.0, 2.0)),
        max_episode_steps=5,
    )

    def run_episodes(no_cache: bool) -> list[list[float]]:
        settings = ServerSettings(checkpoints=[str(directory)], cache_slots=2, no_cache=no_cache)
        out = []
        with TestClient(create_app(settings)) as client:
            created = client.post("/sessions", json={"session_id": "c1", "sampling": "sample"}).json()
            assert created["sampling"] == "greedy"  # continuous heads are deterministic
            assert created["action"] == {
                "kind": "continuous",
                "dim": 2,
                "low": [-2.0, -2.0],
                "high": [2.0, 2.0],
            }
            for episode in range(3):
                start = episode * 6
                for step in range(start, start + 6):
                    response = act(client, "c1", step, start=start, done=step == start + 5)
                    assert response.status_code == 200, response.text
                    if step != start + 5:
                        out.append(response.json()["action"])
            assert client.get("/sessions/c1").json()["returns"] == [1.25] * 3
        return out

    cached, uncached = run_episodes(False), run_episodes(True)
    assert all(len(a) == 2 and all(-2.0 <= x <= 2.0 for x in a) for a in cached)
    for a, b in zip(cached, uncached, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_continuous_sessions_explore_with_seeded_noise(tmp_path, make_checkpoint, tiny_checkpoint):
    from t2mir_model import ActionSpec, update_card

    directory = make_checkpoint(
        tmp_path / "ad",
        "ad-continuous",
        "1",
        action=ActionSpec("continuous", dim=2, low=(-0.1, -0.1), high=(0.1, 0.1)),
        max_episode_steps=5,
    )
    update_card(directory, {"metrics": {"action_noise": 0.3}})

    def play(no_cache: bool, body: dict[str, Any]) -> tuple[dict[str, Any], list[list[float]]]:
        settings = ServerSettings(checkpoints=[str(directory)], cache_slots=2, no_cache=no_cache)
        with TestClient(create_app(settings)) as client:
            created = client.post("/sessions", json=body)
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            out = [act(client, sid, step).json()["action"] for step in range(4)]
            retried = act(client, sid, 3).json()["action"]
            assert retried == out[-1]  # a retried step gets the stored (noisy) answer
            assert client.get(f"/sessions/{sid}").json()["action_noise"] == created.json()["action_noise"]
            return created.json(), out

    default, _ = play(False, {"session_id": "d1"})
    assert default["action_noise"] == 0.3  # the noise the card's numbers were measured with
    plain_info, plain = play(False, {"session_id": "n1", "action_noise": 0.0})
    noisy_info, noisy = play(False, {"session_id": "n1", "action_noise": 10.0})
    _, noisy_uncached = play(True, {"session_id": "n1", "action_noise": 10.0})
    assert plain_info["action_noise"] == 0.0 and noisy_info["action_noise"] == 10.0
    assert noisy != plain
    assert all(abs(x) <= 0.1 + 1e-6 for a in noisy for x in a)
    assert sum(abs(x) >= 0.1 - 1e-6 for a in noisy for x in a) >= 6  # 10 half-ranges: mostly clipped
    for a, b in zip(noisy, noisy_uncached, strict=True):  # seeded by (session, step): replicas agree
        assert a == pytest.approx(b, abs=1e-5)

    with TestClient(create_app(ServerSettings(checkpoints=[str(directory), str(tiny_checkpoint)]))) as client:
        for model, noise in (("darkroom-test", 0.2), ("ad-continuous", -0.1), ("ad-continuous", 10.5)):
            refused = client.post("/sessions", json={"model": model, "action_noise": noise})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["field"] == "action_noise"
        assert client.post("/sessions", json={"model": "darkroom-test"}).json()["action_noise"] == 0.0


def test_acts_take_the_fast_path_and_everything_else_goes_on_to_the_app(app_client):
    """`ActFastPath` answers ``POST /sessions/{id}/act`` itself (the same handler and answer as the
    route) and hands every other request to the app untouched."""
    client, _, _ = app_client
    recreate(client, "fp")
    passed: list[tuple[str, str]] = []

    async def app_behind(scope, receive, send) -> None:
        passed.append((scope["method"], scope["path"]))
        await client.app(scope, receive, send)

    async def call(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "app": client.app,
            "state": {},
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await ActFastPath(app_behind)(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    def request(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        return client.portal.call(call, method, path, body)

    status, body = request("POST", "/sessions/fp/act", b'{"step": 0, "observation": [1.0, 0.0]}')
    assert status == 200 and json.loads(body)["step"] == 0
    status, body = request(
        "POST", "/sessions/fp/act", b'{"step": 5, "observation": [5.0, 1.0], "reward": 0.25}'
    )
    assert (status, json.loads(body)["error"]["code"], json.loads(body)["error"]["expected_step"]) == (
        409,
        "step_conflict",
        1,
    )
    assert request("POST", "/sessions/fp/act", b"{")[0] == 400
    assert not passed
    assert request("GET", "/sessions/fp/act")[0] == 405
    assert request("POST", "/sessions/fp/act/")[0] in (307, 404)
    assert request("POST", "/sessions//act")[0] in (307, 404, 405)
    assert request("GET", "/healthz")[0] == 200
    assert passed == [
        ("GET", "/sessions/fp/act"),
        ("POST", "/sessions/fp/act/"),
        ("POST", "/sessions//act"),
        ("GET", "/healthz"),
    ]
