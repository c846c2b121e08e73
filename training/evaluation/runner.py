"""Algorithm 2 (AD) / Algorithm 4 (DPT) over many tasks at once, through ``DecodeEngine``.

Every task runs ``episodes`` episodes in lockstep in one batch environment; the policy never
changes, only its context grows (AD: the best earlier episodes; DPT: the previous episode). The
engine is the one the server uses, so what is measured here is what is deployed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from t2mir_model import ActRequest, DecodeEngine, SessionHistory, T2MIRPolicy, check_action_noise, explore
from training.envs import TaskSpec, make_batch_env


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap confidence interval of the mean of ``values`` (n,)."""
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class EvalResult:
    """Returns of every task and episode, and their summaries."""

    env_id: str
    tasks: list[str]
    returns: np.ndarray  # (n_tasks, n_episodes)
    seed: int
    sample: bool
    info: dict = field(default_factory=dict)

    @property
    def episode_means(self) -> np.ndarray:
        """Mean over tasks of each episode's return (n_episodes,)."""
        return self.returns.mean(0)

    @property
    def last_mean(self) -> float:
        """Mean over tasks of the last episode's return."""
        return float(self.returns[:, -1].mean())

    @property
    def best_mean(self) -> float:
        """Best per-episode mean over tasks (the paper's 'best performance' of a return curve)."""
        return float(self.episode_means.max())

    def summary(self) -> dict:
        """JSON-ready summary: per-episode means with 95% CIs, last-episode mean and CI."""
        cis = [bootstrap_ci(self.returns[:, e], self.seed) for e in range(self.returns.shape[1])]
        seeds = self.info.get("seeds", [self.seed])
        return {
            "env_id": self.env_id,
            "tasks": self.tasks[: len(self.tasks) // len(seeds)],  # each seed's rows, in this order
            "seed": self.seed,
            "sample": self.sample,
            "episodes": int(self.returns.shape[1]),
            "last_mean": self.last_mean,
            "last_ci95": list(cis[-1]),
            "best_mean": self.best_mean,
            "episode_means": self.episode_means.tolist(),
            "episode_ci95": [list(c) for c in cis],
            "returns": self.returns.tolist(),
            **self.info,
        }

    @classmethod
    def from_json(cls, path: str | Path) -> EvalResult:
        """Read back a summary written by ``write`` (rows of several evaluation seeds stay stacked)."""
        data = json.loads(Path(path).read_text())
        seeds = data.get("seeds", [data["seed"]])
        return cls(
            data["env_id"],
            data["tasks"] * len(seeds),
            np.array(data["returns"], dtype=float),
            data["seed"],
            data["sample"],
            {"seeds": seeds} if len(seeds) > 1 else {},
        )

    def write(self, json_path: str | Path | None = None, csv_path: str | Path | None = None) -> None:
        """Write the summary JSON and a task x episode CSV."""
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(self.summary(), indent=2) + "\n")
        if csv_path:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            seeds = self.info.get("seeds", [self.seed])
            rows_per_seed = len(self.tasks) // len(seeds)
            lines = ["seed,task," + ",".join(f"episode_{e + 1}" for e in range(self.returns.shape[1]))]
            lines += [
                f"{seeds[row // rows_per_seed]},{t}," + ",".join(f"{r:.4f}" for r in returns)
                for row, (t, returns) in enumerate(zip(self.tasks, self.returns, strict=True))
            ]
            Path(csv_path).write_text("\n".join(lines) + "\n")


def pool_runs(results: list[EvalResult]) -> EvalResult:
    """Evaluations of several training runs (seeds) of one variant as one result.

    The runs must share environment, tasks, episode count and evaluation seed. Rows of the pooled
    returns are (run, task) pairs, so its episode means average over runs and tasks and its
    bootstrap intervals resample pairs; ``info["run_best"]`` keeps each run's best episode mean.
    """
    if not results:
        raise ValueError("nothing to pool")
    first = results[0]

    def shared(r: EvalResult) -> tuple:
        return r.env_id, r.tasks, r.returns.shape, r.seed, r.sample

    if any(shared(r) != shared(first) for r in results[1:]):
        raise ValueError("pooled runs must share env, tasks, episodes, evaluation seed and sampling")
    returns = np.concatenate([r.returns for r in results])  # (runs * n_tasks, n_episodes)
    info = {"runs": len(results), "run_best": [r.best_mean for r in results]}
    return EvalResult(first.env_id, first.tasks * len(results), returns, first.seed, first.sample, info)


def stack_seeds(results: list[EvalResult]) -> EvalResult:
    """Evaluations of one checkpoint at several evaluation seeds as one result.

    The results must share environment, tasks, episode count and sampling. Rows of the stacked
    returns are (seed, task) pairs in the order given, so its episode means average over seeds and
    tasks; ``seed`` is the first seed and ``info["seeds"]`` lists them all. One result is returned
    as it is.
    """
    if not results:
        raise ValueError("no evaluations to stack")
    first = results[0]
    if len(results) == 1:
        return first

    def shared(r: EvalResult) -> tuple:
        return r.env_id, r.tasks, r.returns.shape, r.sample, r.info.get("action_noise")

    if any(shared(r) != shared(first) for r in results[1:]):
        raise ValueError("stacked evaluations must share env, tasks, episodes, sampling and noise")
    returns = np.concatenate([r.returns for r in results])  # (seeds * n_tasks, n_episodes)
    info = {**first.info, "seeds": [r.seed for r in results]}
    return EvalResult(first.env_id, first.tasks * len(results), returns, first.seed, first.sample, info)


def _sample_seed(seed: int, task: int, episode: int, t: int) -> int:
    return ((seed * 1_000_003 + task) * 10_007 + episode) * 100_003 + t


@torch.no_grad()
def evaluate(
    policy: T2MIRPolicy,
    tasks: list[TaskSpec],
    episodes: int,
    seed: int = 0,
    sample: bool = True,
    progress: bool = False,
    histories: list[SessionHistory] | None = None,
    action_noise: float = 0.0,
) -> EvalResult:
    """Run ``episodes`` in-context episodes on every task; deterministic for a seed.

    ``histories`` (one per task) start the tasks from earlier episodes instead of an empty context
    (see :mod:`training.evaluation.primed`); they are extended in place. ``action_noise`` (continuous
    actions only) adds seeded Gaussian noise of that many half-ranges of the action box to every
    action before it is played and recorded, clipped to the box: the continuous counterpart of
    sampling discrete actions, for policies trained on histories that explore by sampling
    (``t2mir collect --snapshot-actions stochastic``).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    action_noise = check_action_noise(action_noise, policy.config.action)
    if histories is not None and len(histories) != len(tasks):
        raise ValueError(f"{len(histories)} histories for {len(tasks)} tasks")
    config = policy.config
    env = make_batch_env(tasks[0].env_id, tasks, seed=seed)
    engine = DecodeEngine(policy, num_slots=len(tasks))
    if histories is None:
        histories = [SessionHistory() for _ in tasks]
    returns = np.zeros((len(tasks), episodes))
    discrete = config.action.is_discrete
    bar = tqdm(total=episodes, desc=f"eval {tasks[0].env_id}", disable=not progress, leave=False)
    for n in range(episodes):
        obs = env.reset(seed=seed + 7919 * n)
        done = np.zeros(len(tasks), dtype=bool)
        last_action: list[torch.Tensor | None] = [None] * len(tasks)
        last_reward = np.zeros(len(tasks))
        for t in range(env.episode_steps):
            live = np.flatnonzero(~done)
            requests = []
            for i in live:
                o = torch.as_tensor(obs[i], dtype=torch.float32)
                if t == 0:
                    histories[i].observe(o)
                else:
                    histories[i].observe(o, reward=float(last_reward[i]), action=last_action[i])
                requests.append(
                    ActRequest(int(i), histories[i], _sample_seed(seed, int(i), n, t) if sample else None)
                )
            results = engine.act(requests).results
            actions = (
                np.zeros((len(tasks),), np.int64)
                if discrete
                else np.zeros((len(tasks), config.action.width), np.float32)
            )
            played = [res.action for res in results]
            if action_noise > 0:
                played = [
                    explore(a, config.action, action_noise, _sample_seed(seed, int(i), n, t))
                    for a, i in zip(played, live, strict=True)
                ]
            action_of = dict(zip(live, played, strict=True))
            for i, action in action_of.items():
                last_action[i] = action
                actions[i] = action.numpy()
            obs, rewards, terminated, truncated = env.step(actions)
            for i in live:
                returns[i, n] += rewards[i]
                last_reward[i] = rewards[i]
                if terminated[i] or truncated[i] or t == env.episode_steps - 1:
                    histories[i].close(action_of[i], float(rewards[i]))
                    done[i] = True
            if done.all():
                break
        bar.update(1)
        bar.set_postfix(mean_return=f"{returns[:, n].mean():.2f}")
    bar.close()
    env.close()
    info = {"action_noise": action_noise} if action_noise > 0 else {}
    return EvalResult(tasks[0].env_id, [t.name for t in tasks], returns, seed, sample, info)
