"""SB3 learning histories: train SAC (Table 2) or PPO (Table 3) on one task, snapshot, roll out.

Training runs in chunks of ``save_freq`` environment steps (SAC) or one rollout of ``n_steps``
(PPO, i.e. one update per chunk). After every chunk the current policy is a snapshot: it rolls out
``episodes_per_snapshot`` episodes in a separate evaluation env of the same task, with its mean
action or, with ``snapshot_actions="stochastic"``, actions sampled from its policy, and those
episodes, in snapshot order, are the task's learning history. DPT labels always use the mean. Every SAC actor
is kept (a few hundred kB each) until training ends, because the DPT label policy (final / best
below 80 % / best below 50 %) is only known once the final level is.

Meta-World (PPO): the DPT labels are the dataset's own actions (paper D.2).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from training.collect.budgets import PPOBudget, SACBudget
from training.collect.history import (
    TaskHistoryData,
    assemble_history,
    concat_episodes,
    run_episodes,
    selection_summary,
)


def _make_model(budget: SACBudget | PPOBudget, env: Any, seed: int):
    if isinstance(budget, SACBudget):
        from stable_baselines3 import SAC

        return SAC(
            "MlpPolicy",
            env,
            learning_rate=budget.learning_rate,
            buffer_size=min(budget.buffer_size, budget.total_steps),
            learning_starts=budget.learning_starts,
            batch_size=budget.batch_size,
            tau=budget.tau,
            gamma=budget.gamma,
            train_freq=budget.train_freq,
            gradient_steps=budget.gradient_steps,
            ent_coef=budget.ent_coef,
            policy_kwargs={"net_arch": list(budget.net_arch)},
            seed=seed,
            device="cpu",
            verbose=0,
        )
    from stable_baselines3 import PPO

    return PPO(
        "MlpPolicy",
        env,
        learning_rate=budget.learning_rate,
        n_steps=budget.n_steps,
        batch_size=budget.batch_size,
        n_epochs=budget.n_epochs,
        gamma=budget.gamma,
        seed=seed,
        device="cpu",
        verbose=0,
    )


def _actor_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.actor.state_dict().items()}


def collect_sb3_task(
    env_id: str,
    task,
    budget: SACBudget | PPOBudget,
    quality: str,
    seed: int,
    on_snapshot: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TaskHistoryData:
    """Train one learner on ``task`` and return its learning history for ``quality``.

    ``seed`` seeds SB3 (torch / numpy), the training env (``seed``) and the evaluation env
    (``seed + 1``). ``on_snapshot(k, K)`` is called after each snapshot's rollouts.
    """
    from training.envs import env_info, make_env

    info = env_info(env_id)
    if info.action_dim is None:
        raise ValueError(f"{env_id}: SB3 learners collect continuous-action families only")
    sac = isinstance(budget, SACBudget)
    if isinstance(budget, SACBudget):
        chunk, total = budget.save_freq, budget.total_steps
    else:
        chunk, total = budget.n_steps, budget.total_timesteps
    n_snap = total // chunk
    if n_snap < 1:
        raise ValueError(f"budget trains {total} steps, fewer than one snapshot interval ({chunk})")
    train_env = make_env(env_id, task, seed=seed)
    eval_env = make_env(env_id, task, seed=seed + 1)
    model = _make_model(budget, train_env, seed)

    deterministic = budget.snapshot_actions == "deterministic"

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=deterministic)[0]

    actors: list[dict[str, Any]] = []
    chunks: list[dict[str, np.ndarray]] = []
    snapshot_ids: list[np.ndarray] = []
    started = time.perf_counter()
    report_every = max(1, n_snap // 10)
    for k in range(n_snap):
        model.learn(total_timesteps=chunk, reset_num_timesteps=(k == 0), progress_bar=False)
        if sac:
            actors.append(_actor_state(model))
        eps = run_episodes(
            eval_env,
            act,
            budget.episodes_per_snapshot,
            horizon=info.episode_steps,
            obs_dim=info.obs_dim,
            action_kind="continuous",
            act_dim=info.action_dim,
        )
        chunks.append(eps)
        snapshot_ids.append(np.full(budget.episodes_per_snapshot, k, np.int64))
        if on_snapshot is not None:
            on_snapshot(k + 1, n_snap)
        if log is not None and ((k + 1) % report_every == 0 or k + 1 == n_snap):
            mean_return = float(eps["rewards"].sum(axis=1).mean())
            log(
                f"{task.name}: snapshot {k + 1}/{n_snap} at step {model.num_timesteps}: "
                f"return {mean_return:.2f} ({time.perf_counter() - started:.0f} s)"
            )
    train_env.close()
    eval_env.close()
    episodes = concat_episodes(chunks)
    snapshot = np.concatenate(snapshot_ids)

    def label_fn(label_snapshot: int, kept: dict[str, np.ndarray]) -> np.ndarray:
        if not sac:  # Meta-World: the dataset's own (in-bounds) actions are the query labels
            return kept["actions"].copy()
        model.actor.load_state_dict(actors[label_snapshot])
        flat = kept["observations"].reshape(-1, info.obs_dim)
        labels = np.asarray(model.predict(flat, deterministic=True)[0], dtype=np.float32)
        return labels.reshape(kept["actions"].shape)

    arrays, selection = assemble_history(episodes, snapshot, quality, label_fn)
    summary = selection_summary(selection)
    summary["env_steps"] = int(model.num_timesteps)
    summary["label_policy"] = f"snapshot {selection.label_snapshot}" if sac else "dataset actions"
    return TaskHistoryData(arrays=arrays, summary=summary)
