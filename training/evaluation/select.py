"""Choose the checkpoint to ship among trained seeds, on training tasks only.

    python -m training.evaluation.select --seeds 101,102,103 --validation 20 \\
        runs/darkroom-t2mir-ad-s0/final runs/darkroom-t2mir-ad-s1/final runs/darkroom-t2mir-ad-s2/final
    python -m training.evaluation.select --unrewarded-context keep,drop checkpoints/darkroom-t2mir-ad

The rule of the results protocol: a shipped checkpoint is chosen on the training tasks of its task
split (here the first ``--validation`` of them, every candidate on the same ones), never on the
held-out tasks its card reports. Each candidate plays the same protocol (episodes, sampling,
exploration noise, split seed: its card's unless given) at every evaluation seed; the candidate with
the highest mean best-episode return over the seeds is chosen. ``--unrewarded-context keep,drop``
makes every AD checkpoint a candidate once per context rule for unrewarded episodes (the config's
``unrewarded_context``), so the rule is chosen by the same protocol. Prints one row per candidate
and the choice; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from t2mir_model import T2MIRPolicy, UnrewardedContext, read_card
from training.envs import env_info, task_split
from training.evaluation.protocol import card_protocol, git_commit, play_context_rule, seed_statistic
from training.evaluation.runner import evaluate


def select(
    checkpoints: list[str],
    seeds: tuple[int, ...],
    validation: int | None,
    episodes: int | None = None,
    action_noise: float | None = None,
    rules: Sequence[UnrewardedContext | None] = (None,),
) -> list[dict]:
    """One row per candidate (its statistic over ``seeds`` on the training tasks), best first.

    A candidate is a checkpoint played with one of ``rules`` (AD's context rule for unrewarded
    episodes; None: the card's, else the config's)."""
    rows = []
    for checkpoint, rule in ((c, r) for c in checkpoints for r in rules):
        policy = T2MIRPolicy.from_pretrained(checkpoint)
        env_id = policy.config.env_id
        protocol = dataclasses.replace(
            card_protocol(read_card(checkpoint), env_info(env_id).eval_episodes), seeds=seeds
        )
        if episodes is not None:
            protocol = dataclasses.replace(protocol, episodes=episodes)
        if action_noise is not None:
            protocol = dataclasses.replace(protocol, action_noise=action_noise)
        if rule is not None:
            protocol = dataclasses.replace(protocol, unrewarded_context=rule)
        protocol = play_context_rule(policy, protocol)
        tasks = task_split(env_id, protocol.split_seed)[0][:validation]
        best = [
            evaluate(
                policy,
                tasks,
                protocol.episodes,
                seed=s,
                sample=protocol.sample,
                action_noise=protocol.action_noise,
            ).best_mean
            for s in seeds
        ]
        rows.append(
            {
                "checkpoint": checkpoint,
                "training_tasks": len(tasks),
                "split_seed": protocol.split_seed,
                "episodes": protocol.episodes,
                "action_noise": protocol.action_noise,
                **(
                    {"unrewarded_context": protocol.unrewarded_context}
                    if protocol.unrewarded_context is not None
                    else {}
                ),
                "best_mean": seed_statistic(best),
            }
        )
    return sorted(rows, key=lambda row: -row["best_mean"]["mean"])


def _rules(text: str) -> tuple[UnrewardedContext, ...]:
    rules = tuple(part.strip() for part in text.split(","))
    bad = [r for r in rules if r not in ("keep", "drop")]
    if bad or len(set(rules)) != len(rules):
        raise argparse.ArgumentTypeError(f"expected distinct rules among keep, drop; got {text!r}")
    return tuple(cast(UnrewardedContext, r) for r in rules)


def _candidate(row: dict) -> str:
    rule = row.get("unrewarded_context")
    return row["checkpoint"] + (f" (unrewarded context {rule})" if rule is not None else "")


def main(argv: list[str] | None = None) -> int:
    """Evaluate every candidate on training tasks and print the choice."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "checkpoints", nargs="+", help="candidate checkpoint directories (one per training seed)"
    )
    parser.add_argument("--seeds", default="101,102,103", help="evaluation seeds (default 101,102,103)")
    parser.add_argument("--validation", type=int, help="use the first N training tasks (default: all)")
    parser.add_argument("--episodes", type=int, help="in-context episodes (default: the card's)")
    parser.add_argument(
        "--action-noise", type=float, help="continuous exploration noise (default: the card's)"
    )
    parser.add_argument(
        "--unrewarded-context",
        type=_rules,
        default=(None,),
        help="AD: comma-separated context rules for unrewarded episodes to play each checkpoint"
        " with, e.g. keep,drop (default: the card's, else the config's)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    rows = select(
        args.checkpoints, seeds, args.validation, args.episodes, args.action_noise, args.unrewarded_context
    )
    print("| candidate | training tasks | best episode mean over seeds (95% t-interval) | per seed |")
    print("|---|---|---|---|")
    for row in rows:
        stat = row["best_mean"]
        per_seed = ", ".join(f"{v:.2f}" for v in stat["per_seed"])
        print(
            f"| {_candidate(row)} | {row['training_tasks']} |"
            f" {stat['mean']:.2f} ({stat['ci95'][0]:.2f} .. {stat['ci95'][1]:.2f}) | {per_seed} |"
        )
    print(f"chosen: {_candidate(rows[0])} (mean over training tasks; held-out tasks not used)")
    if args.json:
        command = shlex.join(
            ["python", "-m", "training.evaluation.select", *(sys.argv[1:] if argv is None else argv)]
        )
        record = {"command": command, "commit": git_commit(), "seeds": list(seeds), "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
