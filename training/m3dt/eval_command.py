"""The M3DT branch of ``t2mir eval``: flags, the run, the printed table and the card update.

    t2mir eval --checkpoint runs/m3dt-8/final --compare runs/m3dt-dense-active/final \\
        --mw-episodes 1 --point-episodes 3 --json docs/evals/m3dt.json --update-card

Without ``--mw-episodes``, ``--point-episodes`` or ``--seed``, each comes from the protocol recorded
in the checkpoint's card (``metrics.episodes``), so ``t2mir eval --checkpoint C`` replays the
measurement its card reports; a card without one gives 1 / 3 episodes at seed 10,000.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from t2mir_model import read_card, update_card

from .evaluate import evaluate_checkpoints, write_results


def add_m3dt_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags only M3DT checkpoints read."""
    group = parser.add_argument_group("M3DT checkpoints")
    group.add_argument("--compare", action="append", default=[], help="more checkpoints on the same episodes")
    group.add_argument(
        "--mw-episodes",
        type=int,
        help="episodes per Meta-World task (test goals; default: the card's, else 1)",
    )
    group.add_argument(
        "--point-episodes", type=int, help="episodes per Point-Robot goal (default: the card's, else 3)"
    )


DEFAULT_PROTOCOL = {"metaworld": 1, "point-robot": 3, "seed": 10_000}
"""Episodes per task family and evaluation seed when neither a flag nor the card gives them."""


def card_episodes(checkpoint: Path) -> dict[str, int]:
    """The episodes per family and the seed the card's metrics were measured with (defaults for the rest)."""
    recorded = read_card(checkpoint).get("metrics", {}).get("episodes", {})
    return {key: int(recorded.get(key, value)) for key, value in DEFAULT_PROTOCOL.items()}


def run_m3dt_eval(args: argparse.Namespace) -> int:
    """Evaluate M3DT checkpoints, print the mean score over tasks, write JSON, maybe update the card."""
    checkpoints = [Path(args.checkpoint), *map(Path, args.compare)]
    recorded = card_episodes(checkpoints[0])
    mw_episodes = recorded["metaworld"] if args.mw_episodes is None else args.mw_episodes
    point_episodes = recorded["point-robot"] if args.point_episodes is None else args.point_episodes
    seed = recorded["seed"] if args.seed is None else args.seed
    results = evaluate_checkpoints(
        checkpoints, mw_episodes, point_episodes, seed=seed, progress=not args.no_progress
    )
    path = Path(args.json) if args.json else checkpoints[0] / "eval-m3dt.json"
    write_results(results, path)
    for r in results:
        fams = ", ".join(f"{k} {v:.1f}" for k, v in r["family_scores"].items())
        print(
            f"{r['variant']:>12} {r['checkpoint']}: mean score {r['mean_score']:.1f} over {r['n_tasks']} tasks ({fams})"
        )
    if args.update_card:
        for r in results:
            update_card(
                r["checkpoint"],
                {"metrics": {k: r[k] for k in ("mean_score", "family_scores", "episodes", "per_task")}},
            )
    print(f"wrote {path}")
    return 0
