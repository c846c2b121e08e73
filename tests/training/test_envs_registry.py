"""Registry, task splits, TaskSpec and the gymnasium surface of every t2mir env id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from training.envs import (
    ENV_IDS,
    EnvInfo,
    TaskSpec,
    env_info,
    make_env,
    register_envs,
    resolve_task,
    task_split,
)

EXPECTED = {
    # id: (obs_dim, action kind, n_train, n_test, episode steps)
    "t2mir/DarkRoom-v0": (2, "discrete", 80, 20, 100),
    "t2mir/PointRobot-v0": (2, "continuous", 45, 5, 20),
    "t2mir/CheetahVel-v0": (20, "continuous", 45, 5, 200),
    "t2mir/CheetahVel3Cluster-v0": (20, "continuous", 42, 6, 200),
    "t2mir/WalkerParam-v0": (17, "continuous", 45, 5, 200),
    "t2mir/Reach-v0": (18, "continuous", 45, 5, 100),
    "t2mir/Push-v0": (18, "continuous", 45, 5, 100),
}
METAWORLD = ("t2mir/Reach-v0", "t2mir/Push-v0")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[list[TaskSpec], list[TaskSpec]]]:
    """Seed-0 splits of every id, computed once (Meta-World splits take ~1.5 s each)."""
    return {env_id: task_split(env_id, seed=0) for env_id in ENV_IDS}


def _all(split: tuple[list[TaskSpec], list[TaskSpec]]) -> list[TaskSpec]:
    return [*split[0], *split[1]]


def _key(task: TaskSpec) -> str:
    return json.dumps(task.params, sort_keys=True)


def test_env_ids_registered_idempotently() -> None:
    assert set(ENV_IDS) == set(EXPECTED) and len(ENV_IDS) == 7
    register_envs()  # a second registration is a no-op
    for env_id in ENV_IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].max_episode_steps == EXPECTED[env_id][4]


def test_import_is_lazy() -> None:
    code = (
        "import sys, training.envs\n"
        "bad = [m for m in ('metaworld', 'mujoco', 'training.envs.walker_param') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_and_episode_length(env_id: str, splits: dict) -> None:
    obs_dim, kind, n_train, n_test, steps = EXPECTED[env_id]
    info = env_info(env_id)
    assert isinstance(info, EnvInfo)
    assert (info.obs_dim, info.action_kind, info.n_train, info.n_test, info.episode_steps) == (
        obs_dim,
        kind,
        n_train,
        n_test,
        steps,
    )
    env = make_env(env_id, splits[env_id][1][0], seed=0)
    assert env.observation_space.shape == (obs_dim,) and env.observation_space.dtype == np.float32
    if kind == "discrete":
        assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == info.action_n
        assert info.action_dim is None
    else:
        space = env.action_space
        assert isinstance(space, gym.spaces.Box) and space.shape == (info.action_dim,)
        np.testing.assert_allclose(space.low, info.action_low)
        np.testing.assert_allclose(space.high, info.action_high)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32
    n, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs.shape == (obs_dim,) and obs.dtype == np.float32 and np.isfinite(reward)
        n += 1
    if env_id == "t2mir/WalkerParam-v0":
        # gymnasium's default kept: the walker terminates when unhealthy (random actions fall fast).
        assert n <= steps and (terminated or n == steps)
        assert terminated and n < steps
    else:
        assert (n, terminated, truncated) == (steps, False, True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_split_determinism_and_disjointness(env_id: str, splits: dict) -> None:
    train, test = splits[env_id]
    _, _, n_train, n_test, _ = EXPECTED[env_id]
    assert (len(train), len(test)) == (n_train, n_test)
    assert [t.name for t in train] == [f"train:{i}" for i in range(n_train)]
    assert [t.name for t in test] == [f"test:{i}" for i in range(n_test)]
    assert all(t.env_id == env_id for t in train + test)
    again_train, again_test = task_split(env_id, seed=0)
    assert again_train == train and again_test == test
    other_train, _ = task_split(env_id, seed=1)
    assert [_key(t) for t in other_train] != [_key(t) for t in train]
    keys_train, keys_test = {_key(t) for t in train}, {_key(t) for t in test}
    assert len(keys_train) == n_train and len(keys_test) == n_test
    assert not keys_train & keys_test


def test_split_parameter_ranges(splits: dict) -> None:
    train, test = splits["t2mir/DarkRoom-v0"]
    cells = {tuple(t.params["goal"]) for t in train + test}
    assert cells == {(x, y) for x in range(10) for y in range(10)}

    goals = np.array([t.params["goal"] for t in _all(splits["t2mir/PointRobot-v0"])])
    assert goals.shape == (50, 2) and np.all(np.abs(goals) <= 1.0)
    assert len({tuple(np.sign(g)) for g in goals}) == 4  # all four quadrants

    vel = np.array([t.params["velocity"] for t in _all(splits["t2mir/CheetahVel-v0"])])
    assert np.all((vel >= 0.075) & (vel <= 3.0))

    for t in _all(splits["t2mir/WalkerParam-v0"]):
        for key in ("body_mass_scale", "body_inertia_scale", "geom_friction_scale"):
            s = np.asarray(t.params[key])
            assert np.all((s >= 1.5**-3 - 1e-12) & (s <= 1.5**3 + 1e-12))
        d = np.asarray(t.params["dof_damping_scale"])
        assert np.all((d >= 1.3**-3 - 1e-12) & (d <= 1.3**3 + 1e-12))

    for env_id in METAWORLD:
        for t in _all(splits[env_id]):
            vec = t.params["mt_task"]["rand_vec"]
            assert vec[:3] == [0.0, 0.6, 0.02]  # object fixed across tasks (paper, App. D)
            assert vec[3:] == t.params["goal"]
            assert -0.1 <= vec[3] <= 0.1 and 0.8 <= vec[4] <= 0.9


def test_three_cluster_split(splits: dict) -> None:
    train, test = splits["t2mir/CheetahVel3Cluster-v0"]
    for cluster, mean in enumerate((0.5, 1.5, 2.5)):
        tr = [t.params["velocity"] for t in train if t.params["cluster"] == cluster]
        te = [t.params["velocity"] for t in test if t.params["cluster"] == cluster]
        assert (len(tr), len(te)) == (14, 2)
        assert all(abs(v - mean) < 5 * 0.15 for v in tr + te)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_taskspec_json_round_trip(env_id: str, splits: dict) -> None:
    for task in (splits[env_id][0][0], splits[env_id][1][-1]):
        text = json.dumps(task.to_json())
        back = TaskSpec.from_json(json.loads(text))
        assert back == task and back.name == task.name and hash(back) == hash(task)
        assert TaskSpec.from_json(text) == task


def test_taskspec_validation() -> None:
    task = TaskSpec("t2mir/DarkRoom-v0", "test", 3, {"goal": np.array([3, 7])})
    assert task.name == "test:3" and task.params == {"goal": [3, 7]}
    assert isinstance(task.params["goal"][0], int)
    data = task.to_json()
    data["params"]["goal"][0] = 9  # the spec is not aliased by its JSON
    assert task.params["goal"] == [3, 7]
    with pytest.raises(ValueError):
        TaskSpec("t2mir/DarkRoom-v0", "val", 0, {})
    with pytest.raises(ValueError):
        TaskSpec("t2mir/DarkRoom-v0", "train", -1, {})
    with pytest.raises(ValueError):
        TaskSpec.from_json({"env_id": "x", "split": "train"})


def test_resolve_task(splits: dict) -> None:
    train, test = splits["t2mir/DarkRoom-v0"]
    assert resolve_task("t2mir/DarkRoom-v0", "train:3") == train[3]
    assert resolve_task("t2mir/DarkRoom-v0", "test:19") == test[19]
    assert resolve_task("t2mir/PointRobot-v0", "test:4", seed=7) == task_split("t2mir/PointRobot-v0", 7)[1][4]
    for bad in ("val:1", "train:-1", "train3", "train:", "", "test:20", "train:80"):
        with pytest.raises(ValueError):
            resolve_task("t2mir/DarkRoom-v0", bad)
    with pytest.raises(ValueError, match="unknown env id"):
        resolve_task("t2mir/Nope-v0", "train:0")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gym_make_and_set_task(env_id: str, splits: dict) -> None:
    train, test = splits[env_id]
    env = gym.make(env_id, task=train[1])
    assert env.unwrapped.task == train[1]
    env.unwrapped.set_task(test[0])
    assert env.unwrapped.task == test[0]
    env.reset(seed=0)
    env.step(env.action_space.sample())
    other = "t2mir/PointRobot-v0" if env_id == "t2mir/DarkRoom-v0" else "t2mir/DarkRoom-v0"
    with pytest.raises(ValueError):
        env.unwrapped.set_task(splits[other][0][0])
    with pytest.raises(ValueError):
        make_env(env_id, splits[other][0][0])
    env.close()


def test_default_task_without_argument() -> None:
    env = gym.make("t2mir/DarkRoom-v0")
    assert env.unwrapped.task == resolve_task("t2mir/DarkRoom-v0", "train:0")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_seed_reproducible(env_id: str, splits: dict) -> None:
    task = splits[env_id][0][2]
    space = make_env(env_id, task).action_space
    space.seed(123)
    actions = [space.sample() for _ in range(15)]

    def rollout(env: gym.Env, seed: int | None) -> list[np.ndarray]:
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            out.append(np.append(obs, reward))
            if terminated or truncated:
                break
        return out

    first = rollout(make_env(env_id, task), seed=5)
    second = rollout(make_env(env_id, task), seed=5)
    seeded_at_make = rollout(make_env(env_id, task, seed=5), seed=None)
    for a, b, c in zip(first, second, seeded_at_make, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
