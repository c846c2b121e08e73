"""Run a collection: one job per task, in a spawn process pool, resumable, with a manifest.

Resumption: every task file is written under a temporary name and renamed when complete, and it
carries its own manifest entry (``meta``). A rerun of the same command skips each task whose file
exists and matches the run's settings, deletes stray ``*.tmp`` files of a killed run, and
rebuilds the manifest from the files. The manifest is rewritten atomically after every task; its
``status`` becomes ``"complete"`` only when every selected task has its file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from training.collect.budgets import NoiseBudget, budget_json, env_id_of, family_of, get_budget
from training.datasets.format import (
    LOG_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    TMP_SUFFIX,
    DatasetError,
    read_task_file,
    read_task_meta,
    sha256_file,
    task_file_name,
    write_manifest,
    write_task_file,
)

LOGGER_NAME = "t2mir.collect"
TASK_SELECTIONS = ("train", "test", "all")


@dataclass(frozen=True)
class CollectConfig:
    """Everything that defines a collection run (the CLI flags of ``t2mir collect``)."""

    env_id: str
    quality: str
    budget: str
    out: str
    tasks: str = "train"
    """Which split: ``train``, ``test`` or ``all``."""
    workers: int = 1
    """Processes; 1 runs every task in this process."""
    seed: int = 0
    split_seed: int = 0
    """Seed of ``task_split`` (which goals / dynamics the tasks have)."""
    max_tasks: int | None = None
    """Only the first N selected tasks (default: the budget's ``max_tasks``, None = all)."""
    episodes_per_snapshot: int | None = None
    snapshot_actions: str | None = None
    """``deterministic`` / ``stochastic`` (default: the budget's, deterministic); SAC / PPO only."""
    progress: bool = True
    command: str = ""


@dataclass(frozen=True)
class TaskJob:
    """One task's work order, picklable for the process pool."""

    env_id: str
    task: dict
    quality: str
    budget_name: str
    overrides: dict
    seed: int
    out: str
    file: str
    identity: dict = field(repr=False)


def task_seed(seed: int, split: str, index: int) -> int:
    """Independent per-task seed, the same whichever worker runs the task and in whatever order."""
    state = np.random.SeedSequence([int(seed), 0 if split == "train" else 1, int(index)]).generate_state(1)
    return int(state[0] % (2**31 - 2))


def _file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(f"%(asctime)s [pid {os.getpid()}] %(levelname)s %(message)s"))
    return handler


@contextlib.contextmanager
def _logging_to(path: Path):
    """Send the ``t2mir.collect`` logger to ``path`` for the duration of the block."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    handler = _file_handler(path)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def _worker_init(log_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.addHandler(_file_handler(Path(log_path)))  # the worker process ends with the pool


def run_task(job: TaskJob, on_snapshot=None) -> dict[str, Any]:
    """Collect one task, write its file atomically, return its manifest entry."""
    from training.collect.learners import collect_sb3_task
    from training.collect.noise import collect_noise_task
    from training.envs import TaskSpec

    logger = logging.getLogger(LOGGER_NAME)
    task = TaskSpec.from_json(job.task)
    budget = get_budget(job.env_id, job.budget_name, **job.overrides)
    started = time.perf_counter()
    logger.info("%s: collecting (seed %d)", task.name, job.seed)
    if isinstance(budget, NoiseBudget):
        data = collect_noise_task(job.env_id, task, budget, job.quality, job.seed, on_snapshot)
    else:
        data = collect_sb3_task(job.env_id, task, budget, job.quality, job.seed, on_snapshot, logger.info)
    returns = data.arrays["returns"]
    entry = {
        "task": job.task,
        "file": job.file,
        "n_episodes": int(returns.shape[0]),
        "returns": [round(float(r), 4) for r in returns],
        "seed": job.seed,
        **data.summary,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    entry["sha256"] = write_task_file(
        Path(job.out) / job.file, data.arrays, meta={"identity": job.identity, "entry": entry}
    )
    logger.info(
        "%s: wrote %s: %d episodes, return %.2f -> %.2f, %.1f s",
        task.name,
        job.file,
        entry["n_episodes"],
        float(returns[: max(1, len(returns) // 10)].mean()),
        float(returns[-max(1, len(returns) // 10) :].mean()),
        entry["wall_s"],
    )
    return entry


def _existing_entry(job: TaskJob, logger: logging.Logger) -> dict | None:
    """The entry of an already finished task file, or None if it must be (re)collected."""
    path = Path(job.out) / job.file
    if not path.exists():
        return None
    try:
        meta = read_task_meta(path)
        read_task_file(path)
    except DatasetError as exc:
        logger.warning("%s is unreadable, collecting it again: %s", job.file, exc)
        return None
    if meta.get("identity") != job.identity or meta.get("entry", {}).get("task") != job.task:
        raise DatasetError(f"{path}: was collected with other settings; use another --out directory")
    entry = dict(meta["entry"])
    entry["sha256"] = sha256_file(path)
    return entry


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "torch", "stable-baselines3", "gymnasium", "mujoco", "metaworld"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def _select_tasks(env_id: str, cfg: CollectConfig, default_max: int | None) -> list:
    from training.envs import task_split

    train, test = task_split(env_id, seed=cfg.split_seed)
    tasks = {"train": train, "test": test, "all": train + test}[cfg.tasks]
    limit = cfg.max_tasks if cfg.max_tasks is not None else default_max
    return tasks[:limit] if limit is not None else tasks


def _manifest(cfg, identity, env, jobs, entries, created, status, elapsed) -> dict[str, Any]:
    ordered = [entries[j.file] for j in jobs if j.file in entries]
    return {
        **identity,
        "family": family_of(identity["env_id"]),
        "env": env,
        "task_selection": cfg.tasks,
        "n_tasks_expected": len(jobs),
        "status": status,
        "created": created,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "workers": cfg.workers,
        "elapsed_s": round(elapsed, 1),
        "collect_wall_s_sum": round(sum(e.get("wall_s", 0.0) for e in ordered), 1),
        "versions": _versions(),
        "tasks": ordered,
    }


@contextlib.contextmanager
def _exclusive(out: Path):
    with open(out / ".collect.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetError(f"{out}: another `t2mir collect` is writing this directory") from None
        yield


def collect(cfg: CollectConfig) -> dict[str, Any]:
    """Run (or resume) a collection; returns the final manifest. Raises DatasetError on conflicts."""
    from tqdm import tqdm

    from training.envs import env_info

    env_id = env_id_of(cfg.env_id)
    if cfg.tasks not in TASK_SELECTIONS:
        raise ValueError(f"--tasks must be one of {TASK_SELECTIONS}")
    if get_budget(env_id, cfg.budget).algorithm == "noise":
        if cfg.episodes_per_snapshot is not None:
            raise ValueError(
                "--episodes-per-snapshot does not apply to DarkRoom (one episode per noise level)"
            )
        if cfg.snapshot_actions is not None:
            raise ValueError("--snapshot-actions does not apply to DarkRoom (its histories are noise levels)")
    overrides = {"episodes_per_snapshot": cfg.episodes_per_snapshot, "snapshot_actions": cfg.snapshot_actions}
    budget = get_budget(env_id, cfg.budget, **overrides)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {
        "schema_version": SCHEMA_VERSION,
        "env_id": env_id,
        "quality": cfg.quality,
        "budget": budget_json(cfg.budget, budget),
        "seed": cfg.seed,
        "split_seed": cfg.split_seed,
    }
    env = asdict(env_info(env_id))
    with _exclusive(out), _logging_to(out / LOG_NAME) as logger:
        mpath = out / MANIFEST_NAME
        created = datetime.now(UTC).isoformat(timespec="seconds")
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text())
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{mpath}: manifest is not valid JSON ({exc}); remove it to rebuild"
                ) from exc
            for key, value in identity.items():
                if old.get(key) != value:
                    raise DatasetError(
                        f"{mpath}: field '{key}' is {old.get(key)!r} but this run has {value!r};"
                        " use another --out directory"
                    )
            created = old.get("created", created)
        for stray in sorted(out.glob(f".*{TMP_SUFFIX}")):
            logger.info("removing stray temporary file %s", stray.name)
            stray.unlink()
        tasks = _select_tasks(env_id, cfg, budget.max_tasks)
        jobs = [
            TaskJob(
                env_id=env_id,
                task=t.to_json(),
                quality=cfg.quality,
                budget_name=cfg.budget,
                overrides={k: v for k, v in overrides.items() if v is not None},
                seed=task_seed(cfg.seed, t.split, t.index),
                out=str(out),
                file=task_file_name(t.split, t.index),
                identity=identity,
            )
            for t in tasks
        ]
        logger.info("start: %s (%d tasks, %d workers)", cfg.command or env_id, len(jobs), cfg.workers)
        entries: dict[str, dict] = {}
        for job in jobs:
            entry = _existing_entry(job, logger)
            if entry is not None:
                entries[job.file] = entry
        todo = [j for j in jobs if j.file not in entries]
        if entries:
            logger.info("resuming: %d tasks already collected, %d to go", len(entries), len(todo))
        started = time.perf_counter()

        def save(status: str) -> dict[str, Any]:
            manifest = _manifest(
                cfg, identity, env, jobs, entries, created, status, time.perf_counter() - started
            )
            write_manifest(mpath, manifest)
            return manifest

        save("partial")
        failures = 0
        bar = tqdm(
            total=len(jobs),
            initial=len(entries),
            desc=family_of(env_id),
            unit="task",
            disable=not cfg.progress,
        )

        def finished(job: TaskJob, entry: dict) -> None:
            entries[job.file] = entry
            save("partial")
            bar.update(1)
            bar.set_postfix(last=f"{job.file} R={np.mean(entry['returns'][-5:]):.1f}")

        try:
            if cfg.workers <= 1:
                failures = _run_serial(todo, finished, logger, cfg.progress)
            else:
                failures = _run_pool(todo, finished, logger, cfg.workers, str(out / LOG_NAME))
        finally:
            bar.close()
        status = "complete" if len(entries) == len(jobs) else "partial"
        manifest = save(status)
        logger.info(
            "end: %s, %d/%d tasks, %d failed, %.1f s",
            status,
            len(entries),
            len(jobs),
            failures,
            time.perf_counter() - started,
        )
    return manifest


def _run_serial(todo, finished, logger, progress: bool) -> int:
    import torch
    from tqdm import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    failures = 0
    try:
        for job in todo:
            inner = tqdm(desc=job.file, unit="snap", leave=False, disable=not progress)

            def tick(k: int, n: int, inner=inner) -> None:
                inner.total = n
                inner.update(k - inner.n)

            try:
                finished(job, run_task(job, tick))
            except Exception:
                failures += 1
                logger.exception("%s failed", job.file)
            finally:
                inner.close()
    finally:
        torch.set_num_threads(threads)
    return failures


def _run_pool(todo, finished, logger, workers: int, log_path: str) -> int:
    failures = 0
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(log_path,)
    ) as pool:
        pending = {pool.submit(run_task, job): job for job in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        finished(job, fut.result())
                    except Exception:
                        failures += 1
                        logger.exception("%s failed", job.file)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return failures
