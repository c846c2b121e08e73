"""DarkRoom sessions end to end: real environment, three real server processes sharing one real
redis-server (two cached replicas, B with its one-session step compiled by ``--compile``, and one
``--no-cache``), HTTP acts.

The same session id gets the same sampling seeds, so a session deleted and created again with
that id must replay the same actions wherever it runs: without the KV cache, moved between
replicas mid-episode, or with both replicas answering the same step at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import TEST_API_KEYS, ServerClient, ServerProcess, without_timings

from training.envs import make_env, resolve_task

KEY = TEST_API_KEYS[0]
ENV_ID = "t2mir/DarkRoom-v0"
EPISODES = 3


@pytest.fixture(scope="module")
def replicas(tiny_checkpoint, redis_server):
    """Replicas A and B (cached; B compiled) and C (--no-cache) on one Redis and key prefix."""
    env = {"T2MIR_API_KEYS": ",".join(TEST_API_KEYS), "T2MIR_REDIS_KEY_PREFIX": f"e2e{uuid.uuid4().hex[:8]}"}
    common = {"redis_url": redis_server.url, "env": env}
    servers = [
        ServerProcess([tiny_checkpoint], args=["--cache-slots", "8"], **common),
        ServerProcess([tiny_checkpoint], args=["--cache-slots", "8", "--compile"], **common),
        ServerProcess([tiny_checkpoint], args=["--no-cache"], **common),
    ]
    ServerProcess.start_all(servers)
    clients = [ServerClient(s.url, KEY) for s in servers]
    yield clients
    for c in clients:
        c.close()
    for s in servers:
        s.close()


def run_darkroom(
    pick: Callable[[int], ServerClient], session_id: str, episodes: int = EPISODES
) -> tuple[list, list]:
    """Play ``episodes`` DarkRoom episodes through the act protocol; ``pick(step)`` chooses the server."""
    env = make_env(ENV_ID, resolve_task(ENV_ID, "test:3"))
    actions, returns, step = [], [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        reward = None
        while True:
            response = pick(step).act(session_id, step, obs.tolist(), reward)
            assert response.status_code == 200, response.text
            action = response.json()["action"]
            actions.append(action)
            step += 1
            obs, r, terminated, truncated, _ = env.step(action)
            reward = float(r)
            if terminated or truncated:
                done = pick(step).act(session_id, step, obs.tolist(), reward, done=True)
                assert done.status_code == 200, done.text
                returns.append(done.json()["episode_return"])
                step += 1
                break
    return actions, returns


def fresh(client: ServerClient, session_id: str) -> None:
    """(Re)create ``session_id`` from scratch."""
    client.delete(session_id)
    assert client.create(session_id=session_id).status_code == 201


@pytest.fixture(scope="module")
def reference(replicas):
    """One uninterrupted run on replica A: (session id, actions, returns)."""
    a = replicas[0]
    session_id = f"dr-{uuid.uuid4().hex[:8]}"
    fresh(a, session_id)
    actions, returns = run_darkroom(lambda step: a, session_id)
    assert len(actions) == 100 * EPISODES and len(set(actions)) > 1
    assert a.session(session_id).json()["returns"] == returns
    return session_id, actions, returns


def test_same_actions_with_and_without_kv_cache(replicas, reference):
    session_id, actions, returns = reference
    c = replicas[2]
    fresh(c, session_id)
    assert run_darkroom(lambda step: c, session_id) == (actions, returns)


def test_compiled_replica_gives_the_same_actions(replicas, reference):
    session_id, actions, returns = reference
    b = replicas[1]
    fresh(b, session_id)
    assert run_darkroom(lambda step: b, session_id) == (actions, returns)


def test_session_continues_on_another_replica_with_identical_actions(replicas, reference):
    session_id, actions, returns = reference
    a, b = replicas[0], replicas[1]
    fresh(a, session_id)
    # switch mid-episode, at episode boundaries, and back to a replica whose mirror is stale
    switches = {0: a, 37: b, 101: a, 150: b, 151: a, 240: b, 290: a}
    current = [a]

    def pick(step: int) -> ServerClient:
        current[0] = switches.get(step, current[0])
        return current[0]

    assert run_darkroom(pick, session_id) == (actions, returns)


def test_two_replicas_answering_the_same_step_agree(replicas):
    a, b = replicas[0], replicas[1]
    session_id = f"race-{uuid.uuid4().hex[:8]}"
    fresh(a, session_id)

    def post(args: tuple[ServerClient, int]) -> tuple[int, dict]:
        client, step = args
        with ServerClient(str(client.http.base_url), KEY) as mine:
            response = mine.act(session_id, step, [float(step % 10), 0.0], None if step == 0 else 0.0)
            return response.status_code, response.json()

    for step in range(10):
        with ThreadPoolExecutor(2) as pool:
            (sa, ra), (sb, rb) = pool.map(post, [(a, step), (b, step)])
        assert (sa, sb) == (200, 200)
        assert without_timings(ra) == without_timings(rb)
    assert a.session(session_id).json()["step"] == 10


def scrape(client: ServerClient) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(client.metrics())}


def total(samples: list, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if not s.name.endswith(("_created", "_bucket"))
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_parse_and_expert_counters_move(replicas, reference):
    a, c = replicas[0], replicas[2]
    before = scrape(a)
    session_id = f"m-{uuid.uuid4().hex[:8]}"
    fresh(a, session_id)
    for step in range(6):
        assert a.act(session_id, step, [float(step), 1.0], None if step == 0 else 0.0).status_code == 200
    after = scrape(a)
    for name in ("t2mir_expert_tokens", "t2mir_task_expert_weight", "t2mir_kv_cache_hits"):
        assert total(after[name]) > total(before[name]), name
    assert (
        total(after["t2mir_act_requests"], status="200")
        >= total(before["t2mir_act_requests"], status="200") + 6
    )
    modalities = {s.labels["modality"] for s in after["t2mir_expert_tokens"]}
    assert modalities == {"s", "a", "r"}
    assert total(after["t2mir_episode_return"]) > 0  # the reference run closed episodes
    assert {s.labels["op"] for s in after["t2mir_store_latency_seconds"]} >= {"get_meta", "append", "load"}
    assert {s.labels["version"] for s in after["t2mir_model_info"]} == {"1"}
    every_label = {v for samples in after.values() for s in samples for v in s.labels.values()}
    assert not any(session_id in v or reference[0] in v for v in every_label)  # bounded cardinality
    no_cache = scrape(c)
    assert total(no_cache["t2mir_kv_cache_hits"]) == 0 and total(no_cache["t2mir_kv_cache_misses"]) > 0
