"""The client library, gymnasium shim and ``t2mir-client run`` with an M3DT session, against a real
``t2mir serve`` on a real redis-server: sessions created by task name or with a sent prompt, and a
Meta-World MT50 task (``t2mir/MT50-v0``) driven end to end."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from model_factory import m3dt_prompt, write_m3dt_checkpoint
from server_process import TEST_API_KEYS, ServerProcess

from clients import AsyncT2MIRClient, InvalidRequest, Session, T2MIRClient, T2MIRClientError, run_episodes
from clients.cli import main
from clients.gym_shim import make_env
from clients.protocol import create_body

KEY = TEST_API_KEYS[0]
M3DT = "m3dt-test"
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def m3dt_server(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[ServerProcess]:
    # episodes of t2mir/MT50-v0 are 150 steps: the model's max_timestep covers them
    checkpoint: Path = write_m3dt_checkpoint(tmp_path_factory.mktemp("m3dt") / M3DT, max_timestep=200)
    env = {
        "T2MIR_API_KEYS": ",".join(TEST_API_KEYS),
        "T2MIR_REDIS_KEY_PREFIX": f"cm3dt{uuid.uuid4().hex[:8]}",
    }
    with ServerProcess([checkpoint], redis_url=redis_server.url, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def reach_env():
    """``t2mir/MT50-v0`` on reach-v3 (Meta-World's 39-d observation, 4-d actions), built once."""
    env = make_env("t2mir/MT50-v0", task="reach-v3")
    yield env
    env.close()


def test_create_by_task_and_by_sent_prompt(m3dt_server):
    with T2MIRClient(m3dt_server.url, KEY) as client:
        by_task = client.create_session(task="reach-v3", target_return=12.0)
        assert by_task.observation_dim == 39 and by_task.action.dim == 4
        assert (by_task.raw["family"], by_task.raw["task"], by_task.raw["target_return"]) == (
            "m3dt",
            "reach-v3",
            12.0,
        )
        prompt = m3dt_prompt(6, 3, steps=2)
        sent = Session.create(
            client,
            prompt={k: getattr(prompt, k).numpy() for k in ("obs", "actions", "returns_to_go", "timesteps")},
            target_return=5.0,
        )
        assert sent.info.observation_dim == 6 and sent.info.action.dim == 3
        action = sent.reset(np.zeros(6, dtype=np.float32))
        assert len(action) == 3 and all(-1.0 <= a <= 1.0 for a in action)
        with pytest.raises(T2MIRClientError) as unknown:
            client.create_session(task="no-such-task")
        assert (unknown.value.status, unknown.value.code, unknown.value.field) == (
            404,
            "unknown_task",
            "task",
        )


async def test_async_create_by_task(m3dt_server):
    async with AsyncT2MIRClient(m3dt_server.url, KEY) as client:
        info = await client.create_session(task="point-robot-00")
        assert info.observation_dim == 2 and info.raw["target_return"] == 10.0


def test_bad_options_are_refused_before_sending():
    with pytest.raises(InvalidRequest, match="target_return"):
        create_body(task="reach-v3", target_return=float("nan"))
    with pytest.raises(InvalidRequest, match="keys"):
        create_body(prompt={"obs": [[0.0]]})
    with pytest.raises(InvalidRequest, match="NaN"):
        create_body(prompt={"obs": [[np.nan]], "actions": [[0.0]], "returns_to_go": [1.0], "timesteps": [0]})


def test_gym_shim_drives_a_metaworld_task(m3dt_server, reach_env):
    with T2MIRClient(m3dt_server.url, KEY) as client:
        session = Session.create(client, task="reach-v3")
        returns = run_episodes(client, reach_env, 2, session, seed=0, max_episode_steps=12)
        stored = client.get_session(session.session_id)
    assert len(returns) == 2 and returns == stored.returns
    assert stored.step == 26 and stored.episode == 2  # 12 acts + the done act, twice


def test_gym_shim_creates_m3dt_sessions(m3dt_server, reach_env):
    with T2MIRClient(m3dt_server.url, KEY) as client:
        returns = run_episodes(
            client, reach_env, 1, task="reach-v3", target_return=50.0, seed=1, max_episode_steps=5
        )
    assert len(returns) == 1


def test_cli_runs_a_metaworld_task_on_an_m3dt_session(m3dt_server, capsys):
    args = ["run", "--server", m3dt_server.url, "--api-key", KEY, "--env", "t2mir/MT50-v0"]
    code = main(
        [*args, "--task", "reach-v3", "--prompt-task", "reach-v3", "--episodes", "1", "--no-progress"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"episode +1 +return +\S+ +steps 150", out), out
    assert "env t2mir/MT50-v0 reach-v3" in out and "1 episodes: mean return" in out


def test_demo_drives_the_shipped_metaworld_tasks_of_an_m3dt_checkpoint(m3dt_server, capsys):
    import argparse

    from clients import demo

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    checkpoint = m3dt_server.checkpoints[0]
    assert (
        demo.run(parser.parse_args(["--checkpoint", checkpoint, "--m3dt", "--tasks", "3", "--episodes", "1"]))
        == 0
    )
    out = capsys.readouterr().out
    assert "serving m3dt-test (M3DT-4," in out
    assert "t2mir/MT50-v0: 1 tasks on held-out goals" in out  # reach-v3; point-robot-00 is no Meta-World task
    table = out[out.index("episode  ") :].splitlines()
    assert table[0].split()[1] == "reach-v3" and table[1].split()[0] == "1"
    assert "soft router  L0 top expert:" in out and "soft router  L1 top expert:" in out
