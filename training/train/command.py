"""``t2mir train``: train a T2MIR / AD / DPT policy, or an M3DT / dense Prompt-DT one.

Usage: ``t2mir train --config CONFIG [key=value ...]``. A config whose top level says
``family = "m3dt"`` (training/configs/m3dt-*.toml) runs M3DT's three-stage trainer
(``training.m3dt.trainer``).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from t2mir_model import ConfigError
from training.m3dt.config import is_m3dt_config, load_m3dt_config
from training.m3dt.trainer import train_m3dt
from training.train.config import load_train_config
from training.train.loop import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir train``."""
    parser.add_argument("--config", required=True, help="TOML file, or a name in training/configs/")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. steps=2000 moe.task_experts=2 out=runs/x"
    )
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT/last exists")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--stop-after", type=int, help="leave after this many steps with a resumable OUT/last"
    )


def run_m3dt(args: argparse.Namespace) -> int:
    """Train an M3DT (or dense Prompt-DT) policy and print where the final checkpoint went."""
    try:
        config = load_m3dt_config(args.config, args.overrides)
    except ConfigError as exc:
        raise SystemExit(f"t2mir train: {args.config}: {exc}") from None
    command = shlex.join(["t2mir", "train", "--config", str(args.config), *args.overrides])
    try:
        result = train_m3dt(
            config,
            resume=not args.no_resume,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            command=command,
        )
    except ValueError as exc:  # a run state that does not fit this config
        raise SystemExit(f"t2mir train: {exc}") from None
    print(_where(result.final_dir, result.steps, result.wall_seconds))
    return 0


def _where(model_dir: Path, steps: int, seconds: float) -> str:
    """Where a run left its model: ``OUT/final``, or ``OUT/last`` (the resumable state) when stopped early."""
    if model_dir.name == "final":
        return f"final checkpoint: {model_dir} ({steps} steps, {seconds:.0f} s)"
    return f"stopped at step {steps} ({seconds:.0f} s); resumable state: {model_dir}"


def run(args: argparse.Namespace) -> int:
    """Train and print where the final checkpoint went."""
    if is_m3dt_config(args.config):
        return run_m3dt(args)
    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        raise SystemExit(f"t2mir train: {args.config}: {exc}") from None
    result = train(
        config, resume=not args.no_resume, progress=not args.no_progress, stop_after=args.stop_after
    )
    line = _where(result.final_dir, result.steps, result.wall_seconds)
    if result.eval is not None:
        line += f"; held-out last-episode mean return {result.eval.last_mean:.2f}"
    print(line)
    return 0
