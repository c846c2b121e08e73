"""The bench's DarkRoom sessions: gymnasium envs of the held-out tasks, built without importing training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.bench.episodes import DARKROOM_ID, DARKROOM_TEST_TASKS, check_env, make_envs
from training.envs import env_info, task_split

DISCRETE_5 = {"kind": "discrete", "n": 5}


def test_darkroom_sessions_play_the_held_out_tasks_in_turn():
    _, test = task_split(DARKROOM_ID, seed=3)
    assert DARKROOM_TEST_TASKS == env_info(DARKROOM_ID).n_test == len(test)
    envs = make_envs("darkroom", DARKROOM_TEST_TASKS + 2, 2, 100, seed=3)
    assert [env.env.unwrapped.task for env in envs] == [test[i % len(test)] for i in range(len(envs))]
    assert len(envs[0].reset()) == 2


def test_darkroom_needs_a_model_that_fits_its_episodes():
    check_env("darkroom", 2, DISCRETE_5, env_info(DARKROOM_ID).episode_steps)
    with pytest.raises(ValueError, match="plays 100-step episodes"):
        check_env("darkroom", 2, DISCRETE_5, 99)
    with pytest.raises(ValueError, match="5 discrete actions"):
        check_env("darkroom", 3, DISCRETE_5, 100)


def test_darkroom_envs_come_from_the_entry_points_alone():
    script = (
        "import sys\n"
        "from server.bench.episodes import make_envs\n"
        "(env,) = make_envs('darkroom', 1, 2, 100, seed=0)\n"
        "print(env.env.unwrapped.task.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "test:0"
