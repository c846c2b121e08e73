"""Reference returns on a task split: policies that ignore the context, and an oracle that knows the goal.

They put the in-context returns of ``docs/results.md`` on a scale: ``stay`` (no move) and
``random`` are what a policy that learned nothing about the task gets, ``oracle`` is the best a
policy can do when it knows the goal from the first step (DarkRoom: close the x gap, then the y
gap; Point-Robot: the largest allowed step straight at the goal). Same envs, tasks and 20-step /
100-step episodes as ``t2mir eval``; each episode's start is drawn from a seeded env.

    python -m training.evaluation.reference --env t2mir/PointRobot-v0 --episodes 20
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from training.envs import darkroom_expert_action, make_env, task_split
from training.envs.darkroom import STAY
from training.envs.point_robot import MAX_MOVE
from training.envs.tasks import TaskSpec

Policy = Callable[[np.ndarray, TaskSpec, np.random.Generator], np.ndarray | int]

FAMILIES = ("t2mir/DarkRoom-v0", "t2mir/PointRobot-v0")


def _policies(env_id: str) -> dict[str, Policy]:
    """name -> policy(obs, task, rng) for one of ``FAMILIES``."""
    if env_id == "t2mir/DarkRoom-v0":
        return {
            "stay": lambda obs, task, rng: STAY,
            "random": lambda obs, task, rng: int(rng.integers(0, STAY + 1)),
            "oracle": lambda obs, task, rng: int(darkroom_expert_action(obs, task.params["goal"])),
        }
    if env_id == "t2mir/PointRobot-v0":
        return {
            "stay": lambda obs, task, rng: np.zeros(2, np.float32),
            "random": lambda obs, task, rng: rng.uniform(-MAX_MOVE, MAX_MOVE, 2).astype(np.float32),
            "oracle": lambda obs, task, rng: np.clip(
                np.asarray(task.params["goal"]) - obs, -MAX_MOVE, MAX_MOVE
            ).astype(np.float32),
        }
    raise ValueError(f"reference policies exist for {', '.join(FAMILIES)}, not {env_id!r}")


def episode_return(env_id: str, task: TaskSpec, policy: Policy, seed: int) -> float:
    """Undiscounted return of one full episode of ``policy`` on ``task`` (start drawn from ``seed``)."""
    env = make_env(env_id, task, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs, task, rng))
        total += float(reward)
        done = terminated or truncated
    env.close()
    return total


def reference_returns(
    env_id: str, episodes: int = 20, seed: int = 0, split: str = "test", split_seed: int = 0
) -> dict[str, float]:
    """Mean return over the split's tasks and ``episodes`` seeded starts per task, for each policy."""
    train, test = task_split(env_id, split_seed)
    per_task = [task_references(env_id, t, episodes, seed) for t in (test if split == "test" else train)]
    return {name: float(np.mean([refs[name] for refs in per_task])) for name in per_task[0]}


def task_references(env_id: str, task: TaskSpec, episodes: int = 20, seed: int = 0) -> dict[str, float]:
    """Mean return of each reference policy on one task over ``episodes`` seeded starts."""
    return {
        name: float(np.mean([episode_return(env_id, task, policy, seed + i) for i in range(episodes)]))
        for name, policy in _policies(env_id).items()
    }


def normalised_score(value: float, stay: float, oracle: float) -> float:
    """``value`` on the scale where standing still is 0 and the oracle is 1."""
    if not oracle > stay:
        raise ValueError(f"the oracle ({oracle}) must score above standing still ({stay})")
    return (value - stay) / (oracle - stay)


def reference_scale(
    env_id: str,
    best: float,
    last: float,
    *,
    episodes: int = 20,
    seed: int = 0,
    split: str = "test",
    split_seed: int = 0,
) -> dict[str, dict[str, float]] | None:
    """The split's reference returns and ``best`` / ``last`` normalised on them (None: no references).

    Returns ``{"reference": {"stay", "random", "oracle"}, "normalised": {"best", "last"}}`` for the
    families in ``FAMILIES``; None for the others, whose evaluations carry returns only.
    """
    if env_id not in FAMILIES:
        return None
    refs = reference_returns(env_id, episodes, seed, split, split_seed)
    return {
        "reference": refs,
        "normalised": {
            "best": normalised_score(best, refs["stay"], refs["oracle"]),
            "last": normalised_score(last, refs["stay"], refs["oracle"]),
        },
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: print the reference returns of one env family."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, choices=FAMILIES)
    parser.add_argument("--episodes", type=int, default=20, help="seeded episodes per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", choices=("test", "train"), default="test")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the task split")
    args = parser.parse_args(argv)
    result = reference_returns(args.env, args.episodes, args.seed, args.tasks, args.split_seed)
    print(
        f"{args.env}, {args.tasks} tasks of split {args.split_seed}, {args.episodes} episodes each"
        " (mean return per episode):"
    )
    for name, value in result.items():
        print(f"  {name:>7}: {value:8.2f}")


if __name__ == "__main__":
    main()
