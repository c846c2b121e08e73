"""``t2mir eval``: in-context evaluation of a checkpoint on held-out tasks.

Usage: ``t2mir eval --checkpoint DIR [--episodes N] [--tasks test] [--split-seed S] [--seed S] [--json PATH]``.

On DarkRoom and Point-Robot the summary also holds the split's reference returns (stay, random,
oracle) and the best / last episode means normalised on them (stay 0, oracle 1).

An M3DT checkpoint (``"family": "m3dt"``) is evaluated on every task it was trained on
(``training.m3dt.evaluate``); ``--compare DIR`` adds checkpoints evaluated on the same episodes.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from t2mir_model import (
    M3DT_FAMILY,
    MAX_ACTION_NOISE,
    T2MIRPolicy,
    check_action_noise,
    read_card,
    read_family,
    update_card,
    variant_name,
)
from training.envs import env_info, task_split
from training.evaluation.plots import plot_returns
from training.evaluation.reference import reference_scale
from training.evaluation.runner import evaluate
from training.m3dt.eval_command import add_m3dt_arguments, run_m3dt_eval


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _noise_scale(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0 <= value <= MAX_ACTION_NOISE):
        raise argparse.ArgumentTypeError(f"must be a finite number in [0, {MAX_ACTION_NOISE}], got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir eval``."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument(
        "--episodes",
        type=_positive_int,
        help="in-context episodes per task (default: the paper's curve length for the checkpoint's env,"
        " e.g. 100 on DarkRoom, 30 on Point-Robot)",
    )
    parser.add_argument(
        "--tasks", choices=["test", "train"], default="test", help="task split to evaluate on"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the task split (as in the dataset)"
    )
    parser.add_argument(
        "--greedy", action="store_true", help="argmax discrete actions instead of seeded sampling"
    )
    parser.add_argument(
        "--action-noise",
        type=_noise_scale,
        default=0.0,
        help="continuous actions: seeded Gaussian exploration noise, in half-ranges of the action box"
        " (default 0: the policy's tanh mean)",
    )
    parser.add_argument("--json", help="summary JSON path (default: <checkpoint>/eval-<tasks>.json)")
    parser.add_argument("--csv", help="per-task per-episode CSV path (default: next to the JSON)")
    parser.add_argument("--png", help="return-against-episode plot (default: next to the JSON)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="record this evaluation as the checkpoint card's measured metrics",
    )
    parser.add_argument("--no-progress", action="store_true")
    add_m3dt_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write JSON / CSV / PNG, print the summary."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if read_family(args.checkpoint) == M3DT_FAMILY:
        return run_m3dt_eval(args)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    env_id = policy.config.env_id or read_card(args.checkpoint).get("env_id", "")
    train_tasks, test_tasks = task_split(env_id, args.split_seed)
    tasks = test_tasks if args.tasks == "test" else train_tasks
    episodes = env_info(env_id).eval_episodes if args.episodes is None else args.episodes
    try:
        check_action_noise(args.action_noise, policy.config.action)
    except ValueError as exc:
        print(f"t2mir eval: error: --action-noise: {exc}", file=sys.stderr)
        return 2
    result = evaluate(
        policy,
        tasks,
        episodes,
        seed=args.seed,
        sample=not args.greedy,
        progress=not args.no_progress,
        action_noise=args.action_noise,
    )
    json_path = Path(args.json) if args.json else Path(args.checkpoint) / f"eval-{args.tasks}.json"
    csv_path = Path(args.csv) if args.csv else json_path.with_suffix(".csv")
    png_path = Path(args.png) if args.png else json_path.with_suffix(".png")
    result.info["checkpoint"] = str(args.checkpoint)
    result.info["variant"] = variant_name(policy.config)
    result.info["split_seed"] = args.split_seed
    scale = reference_scale(
        env_id,
        result.best_mean,
        result.last_mean,
        seed=args.seed,
        split=args.tasks,
        split_seed=args.split_seed,
    )
    if scale is not None:
        result.info.update(scale)
    result.write(json_path, csv_path)
    plot_returns({variant_name(policy.config): result}, png_path)
    summary = result.summary()
    low, high = summary["last_ci95"]
    print(
        f"{variant_name(policy.config)} on {env_id} ({len(tasks)} {args.tasks} tasks, {episodes} episodes, "
        f"seed {args.seed})"
    )
    print("episode means: " + " ".join(f"{v:.2f}" for v in result.episode_means))
    print(
        f"last episode: {result.last_mean:.2f} (95% CI {low:.2f} .. {high:.2f}); best episode mean {result.best_mean:.2f}"
    )
    if scale is not None:
        refs, norm = scale["reference"], scale["normalised"]
        print(
            f"on this split standing still scores {refs['stay']:.2f} and the oracle {refs['oracle']:.2f}:"
            f" normalised best {norm['best']:.3f}, last {norm['last']:.3f} (stay 0, oracle 1)"
        )
    print(f"wrote {json_path}, {csv_path}, {png_path}")
    if args.update_card:
        update_card(args.checkpoint, {"metrics": result.card_metrics(args.tasks)})
        print(f"updated the card of {args.checkpoint}")
    return 0
