"""``t2mir collect --suite m3dt``: the M3DT multi-task dataset (Meta-World MT50 + Point-Robot goals).

One file per task, ``<out>/<task>.npz`` (plain arrays, no pickles)::

    obs      (N, T, obs_width) float32     actions  (N, T, act_width) float32, normalised to [-1, 1]
    rewards  (N, T) float32                success  (N,) bool (Meta-World: info["success"] at any step)

and ``<out>/manifest.json``: the command, the settings, per task its episode count, mean return and
success rate, each file's sha256, and ``dataset_sha256`` (a hash over the files' hashes, cited by
checkpoint cards). Rerunning the same command skips finished task files (a killed run resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .suite import METAWORLD, METAWORLD_NOISE, POINT_NOISE, SuiteTask, TaskRunner, suite_tasks

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SuiteCollectConfig:
    """What ``t2mir collect --suite m3dt`` collects."""

    out: str
    n_metaworld: int = 50
    n_point: int = 40
    episodes: int = 16
    """Episodes per Meta-World task (one goal variation each, cycling through the train goals)."""
    point_episodes: int = 40
    """Episodes per Point-Robot goal (cheap)."""
    seed: int = 0
    workers: int = 1
    progress: bool = True
    command: str = ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_task(task: SuiteTask, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Roll out the noisy expert on ``task`` for ``episodes`` episodes (train goals)."""
    runner = TaskRunner(task, "train", seed)
    t, n = task.episode_steps, episodes
    data = {
        "obs": np.zeros((n, t, task.obs_width), np.float32),
        "actions": np.zeros((n, t, task.act_width), np.float32),
        "rewards": np.zeros((n, t), np.float32),
        "success": np.zeros(n, bool),
    }
    try:
        for e in range(n):
            obs = runner.reset(e)
            for i in range(t):
                action = runner.expert(obs)
                data["obs"][e, i], data["actions"][e, i] = obs, action
                obs, reward, success = runner.step(action)
                data["rewards"][e, i] = reward
                data["success"][e] |= success
    finally:
        runner.close()
    return data


def _job(task: SuiteTask, episodes: int, seed: int, path: str) -> dict[str, Any]:
    data = collect_task(task, episodes, seed)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, **data)  # type: ignore[arg-type]  # the stub lets **kwds reach allow_pickle
    tmp.replace(path)
    returns = data["rewards"].sum(1)
    return {
        "name": task.name,
        "family": task.family,
        "obs_width": task.obs_width,
        "act_width": task.act_width,
        "episode_steps": task.episode_steps,
        "goal": list(task.goal),
        "n_episodes": episodes,
        "mean_return": float(returns.mean()),
        "max_return": float(returns.max()),
        "success_rate": float(data["success"].mean()) if task.family == METAWORLD else None,
        "file": Path(path).name,
        "sha256": _sha256(Path(path)),
    }


def dataset_hash(entries: list[dict[str, Any]]) -> str:
    """sha256 over the sorted per-task file hashes."""
    return hashlib.sha256("".join(sorted(e["sha256"] for e in entries)).encode()).hexdigest()


def collect_suite(cfg: SuiteCollectConfig) -> dict[str, Any]:
    """Collect every task not yet on disk (``cfg.workers`` processes) and write the manifest."""
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = suite_tasks(cfg.n_metaworld, cfg.n_point, cfg.seed)
    previous = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {"tasks": []}
    done = {e["name"]: e for e in previous["tasks"] if (out / e["file"]).exists()}
    todo = [t for t in tasks if t.name not in done]
    start = time.monotonic()
    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
        desc="m3dt tasks",
        unit="task",
        disable=not cfg.progress,
    )
    with ProcessPoolExecutor(max_workers=max(1, cfg.workers), mp_context=get_context("spawn")) as pool:
        pending = {
            pool.submit(
                _job,
                t,
                cfg.episodes if t.family == METAWORLD else cfg.point_episodes,
                cfg.seed * 1000 + i,
                str(out / f"{t.name}.npz"),
            )
            for i, t in enumerate(tasks)
            if t.name not in done
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                entry = future.result()
                done[entry["name"]] = entry
                bar.update(1)
                bar.set_postfix_str(entry["name"])
                _write_manifest(out, cfg, tasks, done, time.monotonic() - start)
    bar.close()
    return _write_manifest(out, cfg, tasks, done, time.monotonic() - start)


def _write_manifest(
    out: Path,
    cfg: SuiteCollectConfig,
    tasks: list[SuiteTask],
    done: dict[str, dict[str, Any]],
    elapsed: float,
) -> dict[str, Any]:
    entries = [done[t.name] for t in tasks if t.name in done]
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "command", "workers")}
    manifest = {
        "suite": "m3dt",
        "command": cfg.command,
        "settings": settings,
        "noise": {"metaworld_std": METAWORLD_NOISE, "point_robot_std": POINT_NOISE},
        "status": "complete" if len(entries) == len(tasks) else "partial",
        "n_tasks_expected": len(tasks),
        "elapsed_s": elapsed,
        "dataset_sha256": dataset_hash(entries),
        "tasks": entries,
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / MANIFEST)
    return manifest


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``t2mir collect --suite m3dt`` (besides --out, --seed, --workers, --no-progress)."""
    group = parser.add_argument_group("--suite m3dt")
    group.add_argument("--episodes", type=int, default=16, help="episodes per Meta-World task (default 16)")
    group.add_argument(
        "--point-episodes", type=int, default=40, help="episodes per Point-Robot goal (default 40)"
    )
    group.add_argument(
        "--n-metaworld", type=int, default=50, help="Meta-World tasks, sorted by name (default 50)"
    )
    group.add_argument("--n-point", type=int, default=40, help="Point-Robot goals (default 40)")


def run_suite(args: argparse.Namespace) -> int:
    """Run ``t2mir collect --suite m3dt``; 0 when every task is on disk."""
    flags = {
        "--out": args.out,
        "--episodes": args.episodes,
        "--point-episodes": args.point_episodes,
        "--n-metaworld": args.n_metaworld,
        "--n-point": args.n_point,
        "--seed": args.seed,
        "--workers": args.workers,
    }
    command = shlex.join(["t2mir", "collect", "--suite", "m3dt", *(f"{k}={v}" for k, v in flags.items())])
    cfg = SuiteCollectConfig(
        out=args.out,
        n_metaworld=args.n_metaworld,
        n_point=args.n_point,
        episodes=args.episodes,
        point_episodes=args.point_episodes,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        command=command,
    )
    manifest = collect_suite(cfg)
    done = len(manifest["tasks"])
    print(
        f"{manifest['status']}: {done}/{manifest['n_tasks_expected']} tasks in {args.out} "
        f"(dataset {manifest['dataset_sha256'][:12]})"
    )
    return 0 if manifest["status"] == "complete" else 1
