"""``t2mir eval``: in-context evaluation of a checkpoint on held-out tasks.

Usage: ``t2mir eval --checkpoint DIR [--seeds 101,102,103] [--episodes N] [--tasks test] [--split-seed S]
[--greedy | --sample] [--action-noise X] [--unrewarded-context {keep,drop}] [--json PATH]``.

Every setting left out is taken from the checkpoint's card, so that ``t2mir eval --checkpoint DIR``
replays the evaluation the card's numbers come from (``training.evaluation.protocol``); a card
without measured metrics falls back to seed 0, the paper's curve length for the env, the test
split of split seed 0, sampled discrete actions and no exploration noise. With several seeds the
summary reports each figure's mean over the seeds and a 95% t-interval over them. On DarkRoom and
Point-Robot the summary also holds the split's reference returns (stay, random, oracle) and the
best / last episode means normalised on them (stay 0, oracle 1). An AD checkpoint plays its
config's context rule for unrewarded episodes (``unrewarded_context``) unless the card's metrics or
``--unrewarded-context`` name another; the eval JSON, its command and the card record the rule
played, and ``--update-card`` records only the rule the config serves.

An M3DT checkpoint (``"family": "m3dt"``) is evaluated on every task it was trained on
(``training.m3dt.evaluate``); ``--compare DIR`` adds checkpoints evaluated on the same episodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2mir_model import (
    M3DT_FAMILY,
    MAX_ACTION_NOISE,
    ConfigError,
    T2MIRPolicy,
    check_action_noise,
    read_card,
    read_family,
    update_card,
    variant_name,
)
from training.envs import env_info, task_split
from training.evaluation.plots import plot_returns
from training.evaluation.protocol import (
    INTERVAL,
    EvalProtocol,
    card_protocol,
    measured_metrics,
    play_context_rule,
    provenance,
    seed_statistic,
)
from training.evaluation.reference import normalised_score, reference_scale
from training.evaluation.runner import EvalResult, bootstrap_ci, evaluate, stack_seeds
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


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds repeat: {text}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir eval``."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument(
        "--episodes",
        type=_positive_int,
        help="in-context episodes per task (default: the card's; without one, the paper's curve length"
        " for the checkpoint's env, e.g. 100 on DarkRoom, 30 on Point-Robot)",
    )
    parser.add_argument(
        "--tasks", choices=["test", "train"], help="task split (default: the card's, else test)"
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="one evaluation seed")
    seeds.add_argument(
        "--seeds",
        type=_seed_list,
        help="comma-separated evaluation seeds: each figure is reported as the mean over them with a"
        " 95%% t-interval (default: the card's seeds, else 0)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        help="seed of the task split, as in the dataset (default: the card's, else 0)",
    )
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument(
        "--greedy",
        dest="sample",
        action="store_false",
        default=None,
        help="argmax discrete actions instead of seeded sampling",
    )
    sampling.add_argument(
        "--sample",
        dest="sample",
        action="store_true",
        default=None,
        help="seeded sampling of discrete actions",
    )
    parser.add_argument(
        "--action-noise",
        type=_noise_scale,
        help="continuous actions: seeded Gaussian exploration noise, in half-ranges of the action box"
        " (default: the card's, else 0: the policy's tanh mean)",
    )
    parser.add_argument(
        "--unrewarded-context",
        choices=["keep", "drop"],
        help="AD: keep episodes with return 0 in the context, or drop them until an episode earned a"
        " reward (default: the card's, else the checkpoint config's)",
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


def resolve_protocol(args: argparse.Namespace, card: dict[str, Any], env_id: str) -> EvalProtocol:
    """The card's protocol with every flag given on the command line put in its place."""
    protocol = card_protocol(card, env_info(env_id).eval_episodes)
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    elif args.seed is not None:
        changes["seeds"] = (args.seed,)
    for name in ("episodes", "tasks", "split_seed", "sample", "action_noise", "unrewarded_context"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(protocol, **changes)


def stacked_summary(
    per_seed: list[EvalResult],
    scales: list[dict[str, Any]],
    protocol: EvalProtocol,
    checkpoint: str,
    variant: str,
    record: dict[str, str],
) -> EvalResult:
    """The evaluations at every seed as one result whose summary (the eval JSON) carries the
    checkpoint, the mean and t-interval over seeds and the provenance. With references (DarkRoom,
    Point-Robot), ``reference`` / ``normalised`` are those of the pooled curve on the seeds' mean
    references, and ``seed_reference`` / ``seed_normalised`` each seed's own."""
    normalised = [s["normalised"] for s in scales]
    result = stack_seeds(per_seed)
    result.info.update(checkpoint=checkpoint, variant=variant, split_seed=protocol.split_seed)
    if protocol.unrewarded_context is not None:
        result.info["unrewarded_context"] = protocol.unrewarded_context
    if len(scales) == 1:
        result.info.update(scales[0])
    elif scales:
        refs = {k: float(np.mean([s["reference"][k] for s in scales])) for k in scales[0]["reference"]}
        result.info.update(
            reference=refs,
            normalised={
                "best": normalised_score(result.best_mean, refs["stay"], refs["oracle"]),
                "last": normalised_score(result.last_mean, refs["stay"], refs["oracle"]),
            },
            seed_reference=[s["reference"] for s in scales],
            seed_normalised=normalised,
        )
    if len(per_seed) > 1:
        result.info["over_seeds"] = {
            "interval": INTERVAL,
            "best_mean": seed_statistic([r.best_mean for r in per_seed]),
            "last_mean": seed_statistic([r.last_mean for r in per_seed]),
            **({"normalised_best": seed_statistic([n["best"] for n in normalised])} if normalised else {}),
        }
    result.info.update(record)
    return result


def run(args: argparse.Namespace) -> int:
    """Evaluate at every seed, write JSON / CSV / PNG, print the summary."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if read_family(args.checkpoint) == M3DT_FAMILY:
        if args.unrewarded_context is not None:
            print("t2mir eval: error: --unrewarded-context applies to T2MIR-AD checkpoints", file=sys.stderr)
            return 2
        return run_m3dt_eval(args)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    served_rule = policy.config.unrewarded_context
    card = read_card(args.checkpoint)
    env_id = policy.config.env_id or card.get("env_id", "")
    protocol = resolve_protocol(args, card, env_id)
    try:
        check_action_noise(protocol.action_noise, policy.config.action)
    except ValueError as exc:
        print(f"t2mir eval: error: --action-noise: {exc}", file=sys.stderr)
        return 2
    try:
        protocol = play_context_rule(policy, protocol)
    except ConfigError as exc:
        print(f"t2mir eval: error: --unrewarded-context: {exc}", file=sys.stderr)
        return 2
    if args.update_card and protocol.unrewarded_context not in (None, served_rule):
        print(
            f"t2mir eval: error: --update-card records what the checkpoint serves, which plays"
            f" unrewarded_context={served_rule!r}, not {protocol.unrewarded_context!r}",
            file=sys.stderr,
        )
        return 2
    train_tasks, test_tasks = task_split(env_id, protocol.split_seed)
    tasks = test_tasks if protocol.tasks == "test" else train_tasks
    per_seed: list[EvalResult] = []
    normalised: list[dict[str, float]] = []
    scales: list[dict[str, Any]] = []
    for seed in protocol.seeds:
        result = evaluate(
            policy,
            tasks,
            protocol.episodes,
            seed=seed,
            sample=protocol.sample,
            progress=not args.no_progress,
            action_noise=protocol.action_noise,
        )
        scale = reference_scale(
            env_id,
            result.best_mean,
            result.last_mean,
            seed=seed,
            split=protocol.tasks,
            split_seed=protocol.split_seed,
        )
        if scale is not None:
            scales.append(scale)
            normalised.append(scale["normalised"])
        per_seed.append(result)
    record = provenance(protocol.command(str(args.checkpoint)), card.get("training", {}).get("dataset"))
    result = stacked_summary(
        per_seed, scales, protocol, str(args.checkpoint), variant_name(policy.config), record
    )
    json_path = Path(args.json) if args.json else Path(args.checkpoint) / f"eval-{protocol.tasks}.json"
    csv_path = Path(args.csv) if args.csv else json_path.with_suffix(".csv")
    png_path = Path(args.png) if args.png else json_path.with_suffix(".png")
    result.write(json_path, csv_path)
    plot_returns({variant_name(policy.config): result}, png_path)
    _print_summary(policy, env_id, protocol, per_seed, normalised, len(tasks))
    print(f"command: {record['command']}")
    print(f"wrote {json_path}, {csv_path}, {png_path}")
    if args.update_card:
        update_card(args.checkpoint, {"metrics": measured_metrics(protocol, per_seed, normalised, record)})
        print(f"updated the card of {args.checkpoint}")
    return 0


def _print_summary(
    policy: T2MIRPolicy,
    env_id: str,
    protocol: EvalProtocol,
    per_seed: list[EvalResult],
    normalised: list[dict[str, float]],
    n_tasks: int,
) -> None:
    seeds = ",".join(str(s) for s in protocol.seeds)
    noise = f", action noise {protocol.action_noise:g}" if protocol.action_noise else ""
    if protocol.unrewarded_context is not None:
        noise += f", unrewarded context {protocol.unrewarded_context}"
    print(
        f"{variant_name(policy.config)} on {env_id} ({n_tasks} {protocol.tasks} tasks, {protocol.episodes} episodes,"
        f" split seed {protocol.split_seed}, seed{'s' if len(per_seed) > 1 else ''} {seeds}{noise})"
    )
    for seed, result in zip(protocol.seeds, per_seed, strict=True):
        low, high = bootstrap_ci(result.returns[:, -1], seed)
        print(f"seed {seed}: episode means " + " ".join(f"{v:.2f}" for v in result.episode_means))
        print(
            f"seed {seed}: last episode {result.last_mean:.2f} (95% CI over tasks {low:.2f} .. {high:.2f});"
            f" best episode mean {result.best_mean:.2f}"
        )
    if len(per_seed) > 1:
        best = seed_statistic([r.best_mean for r in per_seed])
        last = seed_statistic([r.last_mean for r in per_seed])
        print(
            f"over {len(per_seed)} seeds: best episode mean {best['mean']:.2f}"
            f" (95% t-interval {best['ci95'][0]:.2f} .. {best['ci95'][1]:.2f}),"
            f" last episode {last['mean']:.2f} ({last['ci95'][0]:.2f} .. {last['ci95'][1]:.2f})"
        )
    if normalised:
        norm = seed_statistic([n["best"] for n in normalised])
        interval = (
            f" (95% t-interval {norm['ci95'][0]:.3f} .. {norm['ci95'][1]:.3f})" if len(normalised) > 1 else ""
        )
        print(
            f"normalised best {norm['mean']:.3f}{interval},"
            f" last {float(np.mean([n['last'] for n in normalised])):.3f} (stay 0, oracle 1)"
        )
