"""The seven benchmark ids: static facts, task splits, gymnasium registration and construction.

Family modules (MuJoCo, Meta-World) are imported only when a task split or an env is asked for,
so ``import training.envs`` stays fast and works without Meta-World installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import gymnasium as gym

from training.envs.tasks import TaskSpec, build_split, parse_task_name


@dataclass(frozen=True)
class EnvInfo:
    """Static description of one benchmark id (no env is built to answer it)."""

    env_id: str
    obs_dim: int
    action_kind: str  # "discrete" | "continuous"
    action_n: int | None  # number of discrete actions
    action_dim: int | None  # continuous action dimension
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
    episode_steps: int  # truncation limit (Walker-Param may terminate earlier)
    n_train: int
    n_test: int
    eval_episodes: int
    """In-context episodes per task of the paper's test-return curves (the reference
    implementation's ``eval_episodes``); Table 1 reports the best point of such a curve."""


@dataclass(frozen=True)
class _Family:
    info: EnvInfo
    entry_point: str  # "module:EnvClass", used by gymnasium.register
    sampler: str  # "module:function"; function(seed) or function(env_id, seed) -> (train, test)
    sampler_takes_env_id: bool = False


def _continuous(
    env_id: str,
    obs_dim: int,
    dim: int,
    bound: float,
    steps: int,
    n_train: int,
    n_test: int,
    eval_episodes: int = 30,
) -> EnvInfo:
    box = ((-bound,) * dim, (bound,) * dim)
    return EnvInfo(env_id, obs_dim, "continuous", None, dim, *box, steps, n_train, n_test, eval_episodes)


_P = "training.envs."
_FAMILIES: MappingProxyType[str, _Family] = MappingProxyType(
    {
        "t2mir/DarkRoom-v0": _Family(
            EnvInfo("t2mir/DarkRoom-v0", 2, "discrete", 5, None, None, None, 100, 80, 20, 100),
            _P + "darkroom:DarkRoomEnv",
            _P + "darkroom:sample_tasks",
        ),
        "t2mir/PointRobot-v0": _Family(
            _continuous("t2mir/PointRobot-v0", 2, 2, 0.1, 20, 45, 5),
            _P + "point_robot:PointRobotEnv",
            _P + "point_robot:sample_tasks",
        ),
        "t2mir/CheetahVel-v0": _Family(
            _continuous("t2mir/CheetahVel-v0", 20, 6, 1.0, 200, 45, 5),
            _P + "cheetah_vel:CheetahVelEnv",
            _P + "cheetah_vel:sample_tasks",
        ),
        "t2mir/CheetahVel3Cluster-v0": _Family(
            _continuous("t2mir/CheetahVel3Cluster-v0", 20, 6, 1.0, 200, 42, 6),
            _P + "cheetah_vel:CheetahVelEnv",
            _P + "cheetah_vel:sample_cluster_tasks",
        ),
        "t2mir/WalkerParam-v0": _Family(
            _continuous("t2mir/WalkerParam-v0", 17, 6, 1.0, 200, 45, 5, eval_episodes=40),
            _P + "walker_param:WalkerParamEnv",
            _P + "walker_param:sample_tasks",
        ),
        "t2mir/Reach-v0": _Family(
            _continuous("t2mir/Reach-v0", 18, 4, 1.0, 100, 45, 5),
            _P + "metaworld_tasks:ReachEnv",
            _P + "metaworld_tasks:sample_tasks",
            sampler_takes_env_id=True,
        ),
        "t2mir/Push-v0": _Family(
            _continuous("t2mir/Push-v0", 18, 4, 1.0, 100, 45, 5),
            _P + "metaworld_tasks:PushEnv",
            _P + "metaworld_tasks:sample_tasks",
            sampler_takes_env_id=True,
        ),
    }
)

ENV_IDS: tuple[str, ...] = tuple(_FAMILIES)

MT50_ID, MT50_STEPS = "t2mir/MT50-v0", 150
"""One Meta-World task of the M3DT suite (`training.envs.mt50`), truncated like the suite's episodes
(``training.m3dt.suite.METAWORLD_STEPS``)."""


def _family(env_id: str) -> _Family:
    try:
        return _FAMILIES[env_id]
    except KeyError:
        raise ValueError(f"unknown env id {env_id!r}; known ids: {', '.join(ENV_IDS)}") from None


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def env_info(env_id: str) -> EnvInfo:
    """Static facts about ``env_id`` (observation/action shapes, episode limit, split sizes)."""
    return _family(env_id).info


def task_split(env_id: str, seed: int = 0) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """Deterministic (train, test) task lists of ``env_id`` for ``seed``.

    The same seed always gives identical tasks; different seeds give different splits. Train and
    test are disjoint and their sizes are ``env_info(env_id).n_train / n_test``. Meta-World splits
    take about 1.5 s (``metaworld.ML1``); callers that need them often should keep the result.
    """
    family = _family(env_id)
    sampler = _load(family.sampler)
    train_params, test_params = (
        sampler(env_id, int(seed)) if family.sampler_takes_env_id else sampler(int(seed))
    )
    train, test = build_split(env_id, train_params, test_params)
    if (len(train), len(test)) != (family.info.n_train, family.info.n_test):
        raise RuntimeError(f"{env_id}: sampler returned {len(train)}/{len(test)} tasks")
    return train, test


def resolve_task(env_id: str, name: str, seed: int = 0) -> TaskSpec:
    """The task called ``name`` (``"train:K"`` / ``"test:K"``) in ``task_split(env_id, seed)``."""
    split, index = parse_task_name(name)
    info = env_info(env_id)
    size = info.n_train if split == "train" else info.n_test
    if index >= size:
        raise ValueError(f"{env_id} has {size} {split} tasks (0..{size - 1}); got {name!r}")
    train, test = task_split(env_id, seed)
    return (train if split == "train" else test)[index]


def create_env(
    env_id: str, task: TaskSpec | str | None = None, split_seed: int = 0, **kwargs: Any
) -> gym.Env:
    """gymnasium's entry point of every id: the family's env class built for ``task``.

    ``task`` is a `TaskSpec` or a task name (``"test:3"``) of ``task_split(env_id, split_seed)``,
    so ``gym.make("t2mir/DarkRoom-v0", task="test:3")`` needs nothing of this package; ``None``
    gives the class's default task. Other keyword arguments (``seed``, ...) go to the class.
    """
    family = _family(env_id)
    if isinstance(task, str):
        task = resolve_task(env_id, task, seed=split_seed)
    env: gym.Env = _load(family.entry_point)(task=task, **kwargs)
    return env


def register_envs() -> None:
    """Register the seven ids, and ``t2mir/MT50-v0`` (one Meta-World task of the M3DT suite,
    `training.envs.mt50`), with gymnasium (idempotent; already-registered ids are kept).

    The ``gymnasium.envs`` entry point ``t2mir`` of the package metadata names this function, so
    clients can register the ids without importing this package by name.
    """
    for env_id, family in _FAMILIES.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=f"{__name__}:create_env",
                max_episode_steps=family.info.episode_steps,
                kwargs={"env_id": env_id},
            )
    if MT50_ID not in gym.registry:
        gym.register(id=MT50_ID, entry_point=f"{_P}mt50:MT50TaskEnv", max_episode_steps=MT50_STEPS)


def make_env(env_id: str, task: TaskSpec, seed: int | None = None) -> gym.Env:
    """``gym.make(env_id, task=task)``, with ``np_random`` seeded by ``seed`` when given.

    With a seed, the first ``reset()`` draws the same start as ``reset(seed=seed)`` would.
    The returned env truncates at ``env_info(env_id).episode_steps`` steps.
    """
    _family(env_id)
    if task.env_id != env_id:
        raise ValueError(f"task {task.name} belongs to {task.env_id!r}, not {env_id!r}")
    register_envs()
    if seed is None:
        return gym.make(env_id, task=task)
    return gym.make(env_id, task=task, seed=int(seed))
