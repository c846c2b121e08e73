"""M3DT sessions end to end over real HTTP: real server processes (in-process store, and two replicas
sharing one real redis-server) serving a tiny random M3DT checkpoint beside a T2MIR one.

What must hold: a session names its task prompt (shipped by name, or sent) and a target return;
every act is the same idempotent, step-checked append as for T2MIR; the served actions, batched
across concurrent sessions and moved between replicas, equal a batch-1 forward of the policy on the
same prompt + window with returns-to-go from the stored rewards; bad input gets a clear 4xx and
stores nothing; /metrics carries the soft router's series.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from model_factory import M3DT_TASKS, m3dt_prompt, write_m3dt_checkpoint
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from server_process import TEST_API_KEYS, ServerClient, ServerProcess, without_timings

from t2mir_model import M3DTPolicy, SessionHistory, TaskPrompt, load_prompts, stack_rows, window_row

KEY = TEST_API_KEYS[0]
M3DT, DARK = "m3dt-test", "darkroom-test"
SENT = m3dt_prompt(5, 3, steps=2, seed=9)
"""A client-sent prompt of a task the checkpoint does not ship (5-d observations, 3-d actions)."""


def sent_prompt() -> dict[str, Any]:
    """`SENT` as a create body's ``prompt``."""
    return {
        "obs": SENT.obs.tolist(),
        "actions": SENT.actions.tolist(),
        "returns_to_go": SENT.returns_to_go.tolist(),
        "timesteps": SENT.timesteps.tolist(),
    }


@pytest.fixture(scope="module")
def m3dt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_m3dt_checkpoint(tmp_path_factory.mktemp("m3dt") / M3DT)


@pytest.fixture(scope="module")
def servers(m3dt_checkpoint, tiny_checkpoint, redis_server):
    """name -> (server, client): 'memory', and replicas 'redis-a' / 'redis-b' on one Redis and prefix."""
    prefix = f"m3dt{uuid.uuid4().hex[:8]}"
    env = {"T2MIR_API_KEYS": ",".join(TEST_API_KEYS)}
    redis_env = {**env, "T2MIR_REDIS_KEY_PREFIX": prefix}
    args = ["--default-model", DARK, "--max-wait-ms", "20"]
    checkpoints = [tiny_checkpoint, m3dt_checkpoint]
    running = {
        "memory": ServerProcess(checkpoints, args=args, env=env),
        "redis-a": ServerProcess(checkpoints, args=args, env=redis_env, redis_url=redis_server.url),
        "redis-b": ServerProcess(checkpoints, args=args, env=redis_env, redis_url=redis_server.url),
    }
    ServerProcess.start_all(list(running.values()))
    clients = {name: ServerClient(s.url, KEY) for name, s in running.items()}
    yield {name: (running[name], clients[name]) for name in running}, redis_server, prefix
    for c in clients.values():
        c.close()
    for s in running.values():
        s.close()


@pytest.fixture(scope="module")
def reference(m3dt_checkpoint):
    """(policy, shipped prompts) for batch-1 forwards in this process."""
    return M3DTPolicy.from_pretrained(m3dt_checkpoint).eval(), load_prompts(m3dt_checkpoint)


def batch1_action(
    policy: M3DTPolicy, history: SessionHistory, prompt: TaskPrompt, target: float
) -> torch.Tensor:
    """The action of a batch-1 forward on the prompt + the open episode's last K steps."""
    with torch.inference_mode():
        out = policy(stack_rows([window_row(policy.config, history, prompt, target)]))
    return out.actions[0, -1, : prompt.action_width]


def observation(width: int, step: int, salt: int) -> list[float]:
    g = torch.Generator().manual_seed(1000 * salt + step)
    return torch.randn(width, generator=g).tolist()


def play(
    pick, session_id: str, obs_width: int, steps: tuple[int, ...], salt: int
) -> list[tuple[list[float], float | None, list[float] | None, bool]]:
    """Episodes of ``steps`` acts each (then a ``done`` act); ``pick(step)`` is the server's client.
    Returns (observation, reward, action, done) per act."""
    played, step = [], 0
    for length in steps:
        for i in range(length + 1):
            obs = observation(obs_width, step, salt)
            reward = None if i == 0 else float(step % 3) - 0.5
            done = i == length
            answer = pick(step).act(session_id, step, obs, reward, done=done)
            assert answer.status_code == 200, answer.text
            played.append((obs, reward, answer.json()["action"], done))
            step += 1
    return played


def check_against_batch1(policy, played, prompt: TaskPrompt, target: float) -> None:
    """Replay ``played`` into a local history; every served action equals the batch-1 forward's."""
    history, pending = SessionHistory(), None
    for obs, reward, action, done in played:
        if done:
            history.close(pending, reward)
            pending = None
            continue
        if pending is None:
            history.observe(torch.tensor(obs))
        else:
            history.observe(torch.tensor(obs), reward, pending)
        expected = batch1_action(policy, history, prompt, target)
        served = torch.tensor(action, dtype=torch.float32)
        assert served.shape == (prompt.action_width,)
        torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-4)
        pending = served


def test_models_and_sessions_describe_the_family(servers):
    running, _, _ = servers
    _, client = running["memory"]
    models = {m["name"]: m for m in client.http.get("/models").json()["models"]}
    m3dt, dark = models[M3DT], models[DARK]
    assert m3dt["family"] == "m3dt" and dark["family"] == "t2mir"
    assert m3dt["n_experts"] == 4 and m3dt["variant"] == "M3DT-4" and m3dt["backbone"] == "prompt-dt"
    assert m3dt["tasks"] == sorted(M3DT_TASKS)
    # reach-v3: the card's target return; point-robot-00: its prompt's largest return-to-go
    assert m3dt["target_returns"] == {"point-robot-00": 10.0, "reach-v3": 7.5}

    created = client.create(model=M3DT, task="reach-v3")
    assert created.status_code == 201, created.text
    info = created.json()
    assert (info["family"], info["task"], info["target_return"]) == ("m3dt", "reach-v3", 7.5)
    assert info["observation_dim"] == 39 and info["action"]["dim"] == 4 and info["sampling"] == "greedy"
    assert client.session(info["session_id"]).json() == info

    sent = client.create(model=M3DT, prompt=sent_prompt(), target_return=3.0, action_noise=0.0).json()
    assert (sent["task"], sent["target_return"], sent["observation_dim"]) == (None, 3.0, 5)
    assert sent["action"] == {"kind": "continuous", "dim": 3, "low": [-1.0] * 3, "high": [1.0] * 3}

    t2mir = client.create(model=DARK).json()
    assert t2mir["family"] == "t2mir" and "task" not in t2mir


@pytest.mark.parametrize("store", ["memory", "redis-a"])
def test_batched_sessions_match_a_batch1_forward(servers, reference, store):
    """Concurrent sessions of three prompts (two shipped, one sent) are batched into shared forwards;
    every action equals a batch-1 forward, across episodes and past the K-step window."""
    running, _, _ = servers
    server, client = running[store]
    policy, prompts = reference
    sessions = []
    for i in range(6):
        if i % 3 == 2:
            body, prompt, target = {"prompt": sent_prompt(), "target_return": 4.0}, SENT, 4.0
        else:
            task = sorted(M3DT_TASKS)[i % 3]
            body, prompt, target = {"task": task}, prompts[task], 7.5 if task == "reach-v3" else 10.0
        created = client.create(model=M3DT, **body)
        assert created.status_code == 201, created.text
        sessions.append((created.json()["session_id"], prompt, target, i))

    def run(session: tuple) -> tuple:
        session_id, prompt, _target, salt = session
        with ServerClient(server.url, KEY) as own:
            return session, play(lambda _: own, session_id, prompt.obs_width, (7, 3), salt)

    with ThreadPoolExecutor(len(sessions)) as pool:
        results = list(pool.map(run, sessions))
    for (_, prompt, target, _), played in results:
        check_against_batch1(policy, played, prompt, target)
    families = {f.name: f for f in text_string_to_metric_families(client.metrics())}
    samples = {s.name: s.value for s in families["t2mir_batch_size"].samples}
    assert samples["t2mir_batch_size_sum"] > samples["t2mir_batch_size_count"], "no act was batched"


def test_session_moves_between_replicas_on_redis(servers, reference):
    """Acts alternate between two replicas on one Redis: each rebuilds the history from the store
    (returns-to-go from the stored rewards) and answers as a batch-1 forward would."""
    running, _, _ = servers
    a, b = running["redis-a"][1], running["redis-b"][1]
    policy, prompts = reference
    session_id = a.create(model=M3DT, task="reach-v3", target_return=20.0).json()["session_id"]
    assert b.session(session_id).json()["target_return"] == 20.0
    played = play(lambda step: a if (step // 2) % 2 == 0 else b, session_id, 39, (6, 2), salt=77)
    check_against_batch1(policy, played, prompts["reach-v3"], 20.0)
    assert a.session(session_id).json()["returns"] == b.session(session_id).json()["returns"]


@pytest.mark.parametrize("store", ["memory", "redis-a"])
def test_acts_are_idempotent_and_step_checked(servers, store):
    running, _, _ = servers
    _, client = running[store]
    session_id = client.create(model=M3DT, task="point-robot-00").json()["session_id"]
    first = client.act(session_id, 0, [0.1, 0.2])
    assert first.status_code == 200, first.text
    again = client.act(session_id, 0, [0.1, 0.2])
    assert without_timings(again.json()) == without_timings(first.json())
    ahead = client.act(session_id, 2, [0.1, 0.2], reward=1.0)
    assert ahead.status_code == 409 and ahead.json()["error"]["expected_step"] == 1
    padded = client.act(session_id, 1, [0.0] * 39, reward=1.0)  # the config's padded width, not the task's
    assert padded.status_code == 422 and padded.json()["error"]["code"] == "invalid_observation"
    assert client.session(session_id).json()["step"] == 1
    assert client.act(session_id, 1, [0.3, 0.4], reward=1.0).status_code == 200


BAD_CREATES = [
    # (body, status, code, field)
    ({"model": M3DT, "task": "no-such-task"}, 404, "unknown_task", "task"),
    (
        {"model": M3DT, "task": "reach-v3", "target_return": float("nan")},
        422,
        "invalid_field",
        "target_return",
    ),
    (
        {"model": M3DT, "task": "reach-v3", "target_return": float("inf")},
        422,
        "invalid_field",
        "target_return",
    ),
    ({"model": M3DT, "task": "reach-v3", "sampling": "greedy"}, 422, "unsupported_option", "sampling"),
    ({"model": DARK, "task": "reach-v3"}, 422, "unsupported_option", "task"),
    ({"model": DARK, "target_return": 1.0}, 422, "unsupported_option", "target_return"),
    ({"model": M3DT}, 422, "missing_field", "task"),
    ({"model": M3DT, "prompt": "PROMPT"}, 422, "missing_field", "target_return"),
    ({"model": M3DT, "task": "reach-v3", "prompt": "PROMPT"}, 422, "invalid_field", "prompt"),
    ({"model": M3DT, "prompt": "EXTRA_KEY", "target_return": 1.0}, 422, "invalid_field", "prompt.extra"),
    ({"model": M3DT, "prompt": "STRING_OBS", "target_return": 1.0}, 422, "invalid_field", "prompt.obs"),
    ({"model": M3DT, "prompt": "TOO_LONG", "target_return": 1.0}, 422, "invalid_field", "prompt.obs"),
    (
        {"model": M3DT, "prompt": "RAGGED_ACTIONS", "target_return": 1.0},
        422,
        "invalid_field",
        "prompt.actions",
    ),
    ({"model": M3DT, "prompt": "WIDE_OBS", "target_return": 1.0}, 422, "invalid_field", "prompt.obs"),
    (
        {"model": M3DT, "prompt": "NAN_RTG", "target_return": 1.0},
        422,
        "invalid_field",
        "prompt.returns_to_go",
    ),
    (
        {"model": M3DT, "prompt": "LATE_TIMESTEP", "target_return": 1.0},
        422,
        "invalid_field",
        "prompt.timesteps",
    ),
]


def _prompt_case(name: str) -> Any:
    prompt = sent_prompt()
    if name == "PROMPT":
        return prompt
    if name == "EXTRA_KEY":
        return {**prompt, "extra": 1}
    if name == "STRING_OBS":
        return {**prompt, "obs": [["0.5"] * 5] * 2}
    if name == "TOO_LONG":  # 4 steps, the model takes at most 3
        return {k: [*v, v[-1], v[-1]] for k, v in prompt.items()}
    if name == "RAGGED_ACTIONS":
        return {**prompt, "actions": prompt["actions"][:1]}
    if name == "WIDE_OBS":  # wider than the model's 39 padded features
        return {**prompt, "obs": [[0.0] * 40] * 2}
    if name == "NAN_RTG":
        return {**prompt, "returns_to_go": [1.0, float("nan")]}
    if name == "LATE_TIMESTEP":
        return {**prompt, "timesteps": [0, 31]}
    raise AssertionError(name)


def _redis_keys(redis_server, prefix: str, session_id: str) -> list[bytes]:
    with Redis.from_url(redis_server.url) as admin:
        return [k for k in admin.scan_iter(f"{prefix}*") if session_id.encode() in k]


@pytest.mark.parametrize("store", ["memory", "redis-a"])
@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_CREATES)
def test_bad_creates_get_a_clear_4xx_and_store_nothing(servers, store, body, status, code, field):
    running, redis_server, prefix = servers
    _, client = running[store]
    body = dict(body)
    if isinstance(body.get("prompt"), str):
        body["prompt"] = _prompt_case(body["prompt"])
    session_id = f"bad-{uuid.uuid4().hex[:10]}"
    answer = client.http.post(
        "/sessions",
        content=json.dumps(
            {**body, "session_id": session_id}
        ),  # allow_nan: NaN/inf as a client might send them
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert error["field"].startswith(field), error
    assert client.session(session_id).status_code == 404
    if store.startswith("redis"):
        assert _redis_keys(redis_server, prefix, session_id) == []


def test_metrics_carry_the_soft_router(servers):
    running, _, _ = servers
    _, client = running["memory"]
    session_id = client.create(model=M3DT, task="point-robot-00").json()["session_id"]
    assert client.act(session_id, 0, [0.5, -0.5]).status_code == 200
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(client.metrics()):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(sample.labels)
    for name in ("t2mir_expert_weight_total", "t2mir_expert_top_total"):
        labels = [s for s in series[name] if s["model"] == M3DT]
        assert {s["layer"] for s in labels} == {"0", "1"}, name
        assert {s["expert"] for s in labels} <= {"0", "1", "2", "3"}, name
        assert all(set(s) == {"model", "layer", "expert"} for s in labels), name
    for name in ("t2mir_router_entropy", "t2mir_router_load_cv", "t2mir_router_token_entropy"):
        soft = [s for s in series[name] if s["model"] == M3DT]
        assert soft and all(s["router"] == "soft" for s in soft), name
    assert not any(session_id in str(labels) for values in series.values() for labels in values)
