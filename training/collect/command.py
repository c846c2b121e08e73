"""``t2mir collect``: collect offline learning-history datasets (paper Appendix D.2).

Example::

    t2mir collect --env t2mir/PointRobot-v0 --quality mixed --budget paper --out data/point-robot-mixed \\
        --workers 2

Rerunning the same command resumes a killed run (finished task files are kept). See
``docs/datasets.md`` for the format, the budgets and the quality rules.

``--suite m3dt`` collects the M3DT multi-task dataset instead (Meta-World MT50 scripted experts +
Point-Robot goals; ``training.m3dt.collect``)::

    t2mir collect --suite m3dt --out data/m3dt --episodes 16 --point-episodes 40 --workers 2
"""

from __future__ import annotations

import argparse
import shlex
import sys

from training.collect.budgets import BUDGET_NAMES, FAMILIES, SNAPSHOT_ACTIONS
from training.collect.quality import QUALITIES
from training.collect.runner import TASK_SELECTIONS, CollectConfig, collect
from training.datasets.format import DatasetError
from training.m3dt.collect import add_suite_arguments, run_suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", choices=["m3dt"], default=None, help="collect a multi-task suite instead of --env"
    )
    parser.add_argument(
        "--env",
        help=f"environment id or family name: {', '.join(FAMILIES)} / {', '.join(FAMILIES.values())}",
    )
    parser.add_argument("--quality", choices=list(QUALITIES), help="dataset quality (D.2)")
    parser.add_argument("--budget", choices=list(BUDGET_NAMES), help="named collection budget")
    parser.add_argument("--out", required=True, help="dataset directory (created; reruns resume)")
    parser.add_argument(
        "--tasks", default="train", choices=list(TASK_SELECTIONS), help="task split (default train)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one task each (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="collection seed (default 0)")
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the train/test task split (default 0)"
    )
    parser.add_argument("--max-tasks", type=int, default=None, help="only the first N tasks of the selection")
    parser.add_argument(
        "--episodes-per-snapshot",
        type=int,
        default=None,
        help="episodes each SAC/PPO snapshot rolls out (default 1)",
    )
    parser.add_argument(
        "--snapshot-actions",
        choices=list(SNAPSHOT_ACTIONS),
        default=None,
        help="SAC/PPO snapshots act with their mean (deterministic, the default) or sample their policy",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_suite_arguments(parser)


def _command_line(args: argparse.Namespace) -> str:
    parts = ["t2mir", "collect", "--env", args.env, "--quality", args.quality, "--budget", args.budget]
    parts += [
        "--out",
        args.out,
        "--tasks",
        args.tasks,
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
    ]
    if args.split_seed:
        parts += ["--split-seed", str(args.split_seed)]
    if args.max_tasks is not None:
        parts += ["--max-tasks", str(args.max_tasks)]
    if args.episodes_per_snapshot is not None:
        parts += ["--episodes-per-snapshot", str(args.episodes_per_snapshot)]
    if args.snapshot_actions is not None:
        parts += ["--snapshot-actions", args.snapshot_actions]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    if args.suite == "m3dt":
        return run_suite(args)
    missing = [f"--{name}" for name in ("env", "quality", "budget") if getattr(args, name) is None]
    if missing:
        print(f"t2mir collect: error: {', '.join(missing)} required (or --suite)", file=sys.stderr)
        return 2
    cfg = CollectConfig(
        env_id=args.env,
        quality=args.quality,
        budget=args.budget,
        out=args.out,
        tasks=args.tasks,
        workers=args.workers,
        seed=args.seed,
        split_seed=args.split_seed,
        max_tasks=args.max_tasks,
        episodes_per_snapshot=args.episodes_per_snapshot,
        snapshot_actions=args.snapshot_actions,
        progress=not args.no_progress,
        command=_command_line(args),
    )
    try:
        manifest = collect(cfg)
    except (DatasetError, ValueError) as exc:
        print(f"t2mir collect: error: {exc}", file=sys.stderr)
        return 2
    done, expected = len(manifest["tasks"]), manifest["n_tasks_expected"]
    episodes = sum(t["n_episodes"] for t in manifest["tasks"])
    print(
        f"{manifest['status']}: {done}/{expected} tasks, {episodes} episodes in {args.out} "
        f"({manifest['elapsed_s']:.1f} s this run)"
    )
    return 0 if manifest["status"] == "complete" else 1
