"""Read a learning-history dataset written by ``t2mir collect`` and validate it on the way in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.format import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    DatasetError,
    check_task_arrays,
    read_task_file,
    sha256_file,
)


@dataclass(frozen=True)
class TaskHistory:
    """One task's learning history: ``E`` episodes in the order the learner produced them."""

    task: Any
    """The task (``training.envs.TaskSpec``; the raw manifest dict if the env package is absent)."""
    name: str
    """``"train:3"``."""
    file: str
    observations: np.ndarray  # (E, T, obs_dim) float32
    actions: np.ndarray  # (E, T) int64 | (E, T, act_dim) float32
    rewards: np.ndarray  # (E, T) float32
    lengths: np.ndarray  # (E,) int64
    returns: np.ndarray  # (E,) float32
    labels: np.ndarray  # like actions: DPT expert label of every stored state
    snapshot: np.ndarray  # (E,) int64

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])


@dataclass(frozen=True)
class LearningHistoryDataset:
    """All tasks of one dataset directory, validated, in manifest order (train tasks first)."""

    root: Path
    env_id: str
    quality: str
    obs_dim: int
    action_kind: str
    """``"discrete"`` or ``"continuous"``."""
    action_n: int
    """Number of discrete actions (0 for continuous)."""
    act_dim: int
    """Action dimension (1 for discrete: the action is one integer per step)."""
    horizon: int
    """Padded episode length T (the environment's ``episode_steps``)."""
    tasks: tuple[TaskHistory, ...]
    manifest: dict = field(repr=False)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_episodes(self) -> int:
        return sum(t.n_episodes for t in self.tasks)

    @property
    def n_steps(self) -> int:
        return int(sum(int(t.lengths.sum()) for t in self.tasks))

    def __len__(self) -> int:
        return self.n_tasks

    def sample_ad(
        self, rng: np.random.Generator, batch_size: int, n_trajectories: int, pool: str = "history"
    ):
        """Algorithm 1 query + key batch; see :func:`training.datasets.sampling.sample_ad_batch`."""
        from training.datasets.sampling import sample_ad_batch

        return sample_ad_batch(self, rng, batch_size, n_trajectories, pool=pool)

    def sample_dpt(
        self, rng: np.random.Generator, batch_size: int, n_queries: int = 1, prompt_history: float = 1.0
    ):
        """Algorithm 3 query + key batch; see :func:`training.datasets.sampling.sample_dpt_batch`."""
        from training.datasets.sampling import sample_dpt_batch

        return sample_dpt_batch(self, rng, batch_size, n_queries, prompt_history)


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory does not exist")
    if not path.is_file():
        raise DatasetError(f"{path}: manifest is missing (is {root} a dataset written by `t2mir collect`?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: manifest must be a JSON object")
    for key in ("schema_version", "env_id", "quality", "budget", "tasks", "env"):
        if key not in manifest:
            raise DatasetError(f"{path}: field '{key}' is missing")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: field 'schema_version' is {manifest['schema_version']!r}, this reader knows {SCHEMA_VERSION}"
        )
    if not isinstance(manifest["tasks"], list) or not manifest["tasks"]:
        raise DatasetError(f"{path}: field 'tasks' must be a non-empty list")
    return manifest


def _check_env(manifest: dict, where: Path, expected_env_id: str | None) -> None:
    env_id = manifest["env_id"]
    if expected_env_id is not None and env_id != expected_env_id:
        raise DatasetError(f"{where}: field 'env_id' is {env_id!r} but {expected_env_id!r} was expected")
    try:
        from training.envs import ENV_IDS, env_info
    except ImportError:  # the reader still works on a machine without the simulators
        return
    if env_id not in ENV_IDS:
        raise DatasetError(
            f"{where}: field 'env_id' {env_id!r} is not a known environment ({sorted(ENV_IDS)})"
        )
    info = env_info(env_id)
    recorded = manifest["env"]
    for key in ("obs_dim", "action_kind", "action_n", "action_dim", "episode_steps"):
        have = getattr(info, key)
        if recorded.get(key) != have:
            raise DatasetError(
                f"{where}: field 'env.{key}' is {recorded.get(key)!r} but {env_id} now has {have!r}"
                " (dataset collected with another environment version?)"
            )


def _task_object(task_json: dict) -> tuple[Any, str]:
    try:
        from training.envs import TaskSpec
    except ImportError:
        return task_json, f"{task_json.get('split')}:{task_json.get('index')}"
    spec = TaskSpec.from_json(task_json)
    return spec, spec.name


def load_dataset(
    path: str | Path,
    *,
    env_id: str | None = None,
    split: str | None = None,
    allow_partial: bool = False,
    verify_checksums: bool = False,
) -> LearningHistoryDataset:
    """Load and validate a dataset directory.

    ``env_id``: fail unless the dataset was collected on this environment. ``split``: keep only tasks
    of that split (``"train"`` / ``"test"``). ``allow_partial``: accept a run that has not finished
    every task. ``verify_checksums``: compare each file's sha256 with the manifest.
    Raises :class:`DatasetError` naming the file and field for anything missing or inconsistent.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    mpath = root / MANIFEST_NAME
    _check_env(manifest, mpath, env_id)
    if manifest.get("status", "complete") != "complete" and not allow_partial:
        raise DatasetError(
            f"{mpath}: field 'status' is {manifest.get('status')!r}: the collection run has not finished"
            " (rerun the same `t2mir collect` command to resume, or pass allow_partial=True)"
        )
    env = manifest["env"]
    action_kind = env["action_kind"]
    if action_kind not in ("discrete", "continuous"):
        raise DatasetError(f"{mpath}: field 'env.action_kind' must be 'discrete' or 'continuous'")
    obs_dim, horizon = int(env["obs_dim"]), int(env["episode_steps"])
    act_dim = 1 if action_kind == "discrete" else int(env["action_dim"])
    tasks = []
    for i, entry in enumerate(manifest["tasks"]):
        for key in ("task", "file", "n_episodes"):
            if key not in entry:
                raise DatasetError(f"{mpath}: field 'tasks[{i}].{key}' is missing")
        if split is not None and entry["task"].get("split") != split:
            continue
        fpath = root / entry["file"]
        if verify_checksums and entry.get("sha256") and sha256_file(fpath) != entry["sha256"]:
            raise DatasetError(f"{fpath}: sha256 differs from manifest field 'tasks[{i}].sha256'")
        arrays = read_task_file(fpath)
        check_task_arrays(
            arrays,
            where=str(fpath),
            obs_dim=obs_dim,
            horizon=horizon,
            action_kind=action_kind,
            act_dim=act_dim,
            n_episodes=int(entry["n_episodes"]),
        )
        task, name = _task_object(entry["task"])
        tasks.append(TaskHistory(task=task, name=name, file=entry["file"], **arrays))
    if not tasks:
        raise DatasetError(f"{mpath}: no tasks of split {split!r}")
    return LearningHistoryDataset(
        root=root,
        env_id=manifest["env_id"],
        quality=manifest["quality"],
        obs_dim=obs_dim,
        action_kind=action_kind,
        action_n=int(env.get("action_n") or 0),
        act_dim=act_dim,
        horizon=horizon,
        tasks=tuple(tasks),
        manifest=manifest,
    )
