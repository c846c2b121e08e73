"""Task descriptions shared by every environment family.

A :class:`TaskSpec` names one task of one benchmark (``"train:3"`` of ``t2mir/CheetahVel-v0``) and
carries the parameters that define it (a goal cell, a goal velocity, dynamics scales, ...). It is
plain data: JSON round-trips it exactly, datasets and checkpoints store it, and every environment in
this package accepts one through its constructor or ``set_task``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.utils import seeding

SPLITS: tuple[str, ...] = ("train", "test")
_NAME_RE = re.compile(r"^(train|test):(\d+)$")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a benchmark family.

    Attributes:
        env_id: registered gymnasium id, e.g. ``"t2mir/DarkRoom-v0"``.
        split: ``"train"`` or ``"test"``.
        index: position of the task inside its split (0-based).
        params: JSON-serialisable task parameters (plain ints, floats, lists, dicts, strings).
    """

    env_id: str
    split: str
    index: int
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"TaskSpec.split must be one of {SPLITS}, got {self.split!r}")
        if not isinstance(self.index, int | np.integer) or self.index < 0:
            raise ValueError(f"TaskSpec.index must be a non-negative int, got {self.index!r}")
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "params", to_jsonable(self.params))

    def __hash__(self) -> int:
        return hash((self.env_id, self.split, self.index))

    @property
    def name(self) -> str:
        """Short name inside the benchmark, e.g. ``"test:3"``."""
        return f"{self.split}:{self.index}"

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (a deep copy; mutating it leaves the spec untouched)."""
        return {
            "env_id": self.env_id,
            "split": self.split,
            "index": self.index,
            "params": copy.deepcopy(self.params),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | str) -> TaskSpec:
        """Rebuild a spec from :meth:`to_json` output (also accepts it as a JSON string)."""
        data: dict[str, Any] = json.loads(d) if isinstance(d, str) else d
        missing = {"env_id", "split", "index", "params"} - set(data)
        if missing:
            raise ValueError(f"TaskSpec JSON is missing keys {sorted(missing)}")
        return cls(
            env_id=str(data["env_id"]),
            split=str(data["split"]),
            index=int(data["index"]),
            params=copy.deepcopy(dict(data["params"])),
        )


def parse_task_name(name: str) -> tuple[str, int]:
    """Split ``"train:K"`` / ``"test:K"`` into ``(split, K)``; ValueError for anything else."""
    match = _NAME_RE.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"task name must look like 'train:K' or 'test:K' (K >= 0), got {name!r}")
    return match.group(1), int(match.group(2))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays (recursively, inside dicts/lists/tuples) to plain Python."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, int | float | str):
        return value
    raise TypeError(f"task parameter of type {type(value).__name__} is not JSON-serialisable")


def build_split(
    env_id: str, train_params: Iterable[dict[str, Any]], test_params: Iterable[dict[str, Any]]
) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """Wrap per-task parameter dicts into indexed train/test :class:`TaskSpec` lists."""
    train = [TaskSpec(env_id, "train", i, p) for i, p in enumerate(train_params)]
    test = [TaskSpec(env_id, "test", i, p) for i, p in enumerate(test_params)]
    return train, test


def require_task(task: TaskSpec, accepted_ids: tuple[str, ...], keys: tuple[str, ...]) -> None:
    """Raise ValueError unless ``task`` belongs to one of ``accepted_ids`` and has ``keys``."""
    if not isinstance(task, TaskSpec):
        raise TypeError(f"expected a TaskSpec, got {type(task).__name__}")
    if task.env_id not in accepted_ids:
        raise ValueError(f"task {task.name} is for {task.env_id!r}, this env accepts {accepted_ids}")
    missing = [k for k in keys if k not in task.params]
    if missing:
        raise ValueError(f"task {task.env_id} {task.name} lacks params {missing}")


def seed_env_rng(env: Any, seed: int | None) -> None:
    """Seed a gymnasium env's ``np_random`` (and its action space) exactly as ``reset(seed=seed)`` would.

    After ``seed_env_rng(env, s)`` the next ``env.reset()`` draws the same start state as
    ``env.reset(seed=s)`` on a fresh env. ``None`` leaves the env untouched.
    """
    if seed is None:
        return
    env._np_random, env._np_random_seed = seeding.np_random(int(seed))
    env.action_space.seed(int(seed))
