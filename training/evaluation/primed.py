"""Exploit or explore? In-context episodes on training tasks, started from dataset episodes.

An in-context learner has to do two things: exploit a context that already shows the task solved,
and improve on a context that does not. Plain evaluation starts from an empty context and mixes
the two. Here each training task's history is first primed with ``k`` episodes of its own learning
history (the ``best`` k, the ``first`` k of the learner, or the ``worst`` k), and then the policy
plays ``episodes`` episodes on from there, through the same engine and protocol as ``t2mir eval``
(AD reads the best primed / played episodes, DPT the latest). A model that scores near the primed
returns after ``best`` but stays flat after ``first`` exploits but does not explore.

    python -m training.evaluation.primed --checkpoint checkpoints/darkroom-t2mir-dpt \
        --dataset data/darkroom-mixed --mode first --k 1 --episodes 8
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from t2mir_model import Episode, SessionHistory, T2MIRPolicy, card_action_noise, read_card
from training.datasets import load_dataset
from training.datasets.history import TaskHistory
from training.evaluation.runner import EvalResult, evaluate

PrimeMode = Literal["best", "first", "worst"]
MODES: tuple[str, ...] = ("best", "first", "worst")


@dataclass(frozen=True)
class PrimedResult:
    """Returns of the primed episodes and of the episodes played after them."""

    primed_returns: np.ndarray  # (n_tasks, k), in the order they were placed
    played: EvalResult

    @property
    def primed_mean(self) -> float:
        """Mean return of the primed episodes over tasks and slots."""
        return float(self.primed_returns.mean())


def prime_episode_ids(task: TaskHistory, mode: PrimeMode, k: int) -> np.ndarray:
    """Indices into ``task``'s history of the ``k`` episodes to prime with, in placement order."""
    if not 1 <= k <= task.n_episodes:
        raise ValueError(f"k must be in 1..{task.n_episodes}, got {k}")
    ranked = np.argsort(task.returns, kind="stable")  # ascending return
    if mode == "best":
        return ranked[-k:]
    if mode == "worst":
        return ranked[:k]
    if mode == "first":
        return np.arange(k)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def primed_history(task: TaskHistory, episode_ids: np.ndarray) -> SessionHistory:
    """A session history whose closed episodes are the given dataset episodes."""
    history = SessionHistory()
    for e in episode_ids:
        n = int(task.lengths[e])
        history.episodes.append(
            Episode(
                index=history.episode,
                obs=torch.as_tensor(task.observations[e, :n]),  # (n, obs_dim)
                actions=torch.as_tensor(task.actions[e, :n]),  # (n,) or (n, act_dim)
                rewards=torch.as_tensor(task.rewards[e, :n]),  # (n,)
            )
        )
        history.episode += 1
    return history


def evaluate_primed(
    policy: T2MIRPolicy,
    tasks: list[TaskHistory],
    mode: PrimeMode,
    k: int,
    episodes: int,
    seed: int = 0,
    sample: bool = True,
    action_noise: float = 0.0,
) -> PrimedResult:
    """Prime every task with ``k`` of its dataset episodes, then play ``episodes`` in context
    (``action_noise``: exploration on continuous actions, as in ``evaluate``)."""
    ids = [prime_episode_ids(task, mode, k) for task in tasks]
    histories = [primed_history(task, i) for task, i in zip(tasks, ids, strict=True)]
    played = evaluate(
        policy,
        [task.task for task in tasks],
        episodes,
        seed,
        sample,
        histories=histories,
        action_noise=action_noise,
    )
    primed = np.stack([task.returns[i] for task, i in zip(tasks, ids, strict=True)])
    return PrimedResult(primed, played)


def main(argv: list[str] | None = None) -> int:
    """Print the primed returns and the returns of the episodes played after them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--mode", choices=MODES, default="best")
    parser.add_argument("--k", type=int, default=1, help="episodes to prime with")
    parser.add_argument("--tasks", type=int, default=20, help="first N training tasks")
    parser.add_argument("--episodes", type=int, default=4, help="episodes to play after priming")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument(
        "--action-noise",
        type=float,
        help="exploration noise on continuous actions (default: the one the checkpoint's card was measured with)",
    )
    parser.add_argument(
        "--json", help="write the played episodes' summary (as t2mir eval does) plus the primed returns"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    dataset = load_dataset(args.dataset, env_id=policy.config.env_id, split="train")
    tasks = list(dataset.tasks[: args.tasks])
    noise = card_action_noise(read_card(args.checkpoint)) if args.action_noise is None else args.action_noise
    result = evaluate_primed(
        policy, tasks, args.mode, args.k, args.episodes, args.seed, not args.greedy, noise
    )
    best = float(np.mean([t.returns.max() for t in tasks]))
    print(f"{len(tasks)} training tasks, primed with the {args.mode} {args.k} episode(s) of each history")
    print(f"primed episodes: mean return {result.primed_mean:.2f} (history best {best:.2f})")
    print("played episodes: " + " ".join(f"{v:.2f}" for v in result.played.episode_means))
    if args.json:
        primed = {
            "mode": args.mode,
            "k": args.k,
            "primed_mean": result.primed_mean,
            "primed_returns": result.primed_returns.tolist(),
        }
        replace(result.played, info={**result.played.info, "primed": primed}).write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
