"""`clients.gym_shim.make_env` registers ``t2mir/*`` ids from the ``gymnasium.envs`` entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import gymnasium
assert 't2mir/DarkRoom-v0' not in gymnasium.registry
from clients.gym_shim import make_env
env = make_env('t2mir/DarkRoom-v0', task='test:3', split_seed=0)
print(env.unwrapped.task.name, env.unwrapped.task.params, env.spec.max_episode_steps)
"""


def test_make_env_registers_the_namespace_from_entry_points():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "test:3 {'goal': [3, 3]} 100"


def test_make_env_leaves_other_ids_to_gymnasium():
    from gymnasium.error import NameNotFound

    from clients.gym_shim import make_env

    assert make_env("CartPole-v1").spec.id == "CartPole-v1"
    with pytest.raises(NameNotFound):
        make_env("t2mir/NoSuchEnv-v0")
