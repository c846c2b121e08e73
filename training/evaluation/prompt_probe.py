"""Does a goal-reaching policy read its context, or copy it? A probe for Point-Robot checkpoints.

For each task, play a few in-context episodes through the serving engine and compare each episode's
mean action direction with the direction to the goal and with the previous episode's mean action
direction. A policy that infers the goal from rewards turns toward it (cosine to the goal rising);
one that learned to follow its prompt repeats the previous episode (cosine to it near 1)
whatever the rewards said.

    python -m training.evaluation.prompt_probe --checkpoint runs/pointrobot-dpt-cpu/final --tasks 3
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import torch

from t2mir_model import ActRequest, DecodeEngine, SessionHistory, T2MIRPolicy
from training.envs import make_env, resolve_task


@dataclass(frozen=True)
class ProbeRow:
    """One in-context episode of one task."""

    task: str
    episode: int
    ret: float
    cos_goal: float
    """Cosine between the episode's mean action and the start-to-goal direction."""
    cos_previous: float
    """Cosine between the episode's mean action and the previous episode's (NaN for the first)."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-9)


def probe(policy: T2MIRPolicy, tasks: list[str], episodes: int) -> list[ProbeRow]:
    """Play ``episodes`` greedy in-context episodes per task (env seeds 0..episodes-1)."""
    env_id = policy.config.env_id
    engine = DecodeEngine(policy, num_slots=1)
    rows: list[ProbeRow] = []
    for task in tasks:
        env = make_env(env_id, resolve_task(env_id, task))
        history = SessionHistory()
        previous: np.ndarray | None = None
        engine.evict(task)
        for episode in range(episodes):
            obs, _ = env.reset(seed=episode)
            start = np.asarray(obs, dtype=np.float64)
            history.observe(torch.as_tensor(obs, dtype=torch.float32))
            actions, ret = [], 0.0
            while True:
                action = engine.act([ActRequest(task, history)]).results[0].action
                actions.append(action.numpy())
                obs, reward, terminated, truncated, _ = env.step(action.numpy())
                ret += float(reward)
                if terminated or truncated:
                    history.close(action, float(reward))
                    break
                history.observe(torch.as_tensor(obs, dtype=torch.float32), float(reward), action)
            direction = _unit(np.mean(actions, 0))  # (act_dim,)
            task_spec = env.unwrapped.task  # type: ignore[attr-defined]  # a t2mir env carries its task
            goal = _unit(np.asarray(task_spec.params["goal"], dtype=np.float64) - start)
            cos_previous = float(direction @ previous) if previous is not None else math.nan
            rows.append(ProbeRow(task, episode, ret, float(direction @ goal), cos_previous))
            previous = direction
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the probe's table for a checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tasks", type=int, default=3, help="first N held-out tasks")
    parser.add_argument("--episodes", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    rows = probe(policy, [f"test:{i}" for i in range(args.tasks)], args.episodes)
    print("task     episode  return  cos(action, goal)  cos(action, previous episode)")
    for r in rows:
        print(f"{r.task:8} {r.episode:7d} {r.ret:7.1f} {r.cos_goal:18.2f} {r.cos_previous:30.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
