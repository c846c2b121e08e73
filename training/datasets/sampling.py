"""Training batches from learning histories: AD segments (Algorithm 1) and DPT tuples (Algorithm 3).

Both samplers return a query batch and a key batch drawn from the same tasks (row ``b`` of both
comes from task ``task_ids[b]``), for the contrastive router loss. Everything is plain numpy and a
pure function of the dataset and the ``numpy.random.Generator`` passed in.

Episodes are packed: the valid steps of consecutive episodes are laid end to end and the padding of
short episodes (Walker-Param may terminate early) is moved to the end of the row, so a causal model
never sees a hole in the middle of its context. ``timesteps`` restarts at 0 with every episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.datasets.history import LearningHistoryDataset, TaskHistory

AD_POOLS = ("history", "prefix")
"""Where `sample_ad_batch` draws a row's episodes from (see its ``pool`` argument)."""


@dataclass(frozen=True)
class Segments:
    """``B`` rows, each ``L`` whole episodes of one task packed into ``N = L * T`` step slots."""

    observations: np.ndarray  # (B, N, obs_dim) float32
    actions: np.ndarray  # (B, N) int64 | (B, N, act_dim) float32
    rewards: np.ndarray  # (B, N) float32
    timesteps: np.ndarray  # (B, N) int64, step index inside its episode (0 on padding)
    valid: np.ndarray  # (B, N) bool, False on padding
    episode_ids: np.ndarray  # (B, L) int64, index of each placed episode in its task's history
    episode_returns: np.ndarray  # (B, L) float32, in placement order (ascending for AD)


@dataclass(frozen=True)
class ADBatch:
    """Algorithm 1: ``query`` = L episodes sorted by return (best last); ``key`` = another L of the task."""

    task_ids: np.ndarray  # (B,) int64, index into ``dataset.tasks``
    query: Segments
    key: Segments


@dataclass(frozen=True)
class DPTQueries:
    """``Q`` states of a task with their within-episode timestep and expert label."""

    observations: np.ndarray  # (B, Q, obs_dim) float32
    timesteps: np.ndarray  # (B, Q) int64
    labels: np.ndarray  # (B, Q) int64 | (B, Q, act_dim) float32


@dataclass(frozen=True)
class DPTBatch:
    """Algorithm 3: a prompt episode and query states per row, plus the key pair from the same task."""

    task_ids: np.ndarray  # (B,) int64
    prompt: Segments  # L = 1: one whole episode, N = T
    query: DPTQueries
    key_prompt: Segments
    key_query: DPTQueries


def sample_task_ids(rng: np.random.Generator, n_tasks: int, batch_size: int) -> np.ndarray:
    """Tasks in shuffled rounds: every task appears once before any task appears twice."""
    rounds = -(-batch_size // n_tasks)
    return np.concatenate([rng.permutation(n_tasks) for _ in range(rounds)])[:batch_size].astype(np.int64)


def _draw_episode_pairs(
    rng: np.random.Generator, n_episodes: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two groups of ``count`` episode ids: disjoint when the task has ``2 * count`` episodes,
    each without replacement when it has ``count``, with replacement otherwise."""
    if n_episodes >= 2 * count:
        ids = rng.choice(n_episodes, size=2 * count, replace=False)
        return ids[:count], ids[count:]
    replace = n_episodes < count
    return (
        rng.choice(n_episodes, size=count, replace=replace),
        rng.choice(n_episodes, size=count, replace=replace),
    )


def _alloc(ds: LearningHistoryDataset, batch: int, n: int, n_eps: int) -> dict[str, np.ndarray]:
    act_shape = (batch, n) if ds.action_kind == "discrete" else (batch, n, ds.act_dim)
    return {
        "observations": np.zeros((batch, n, ds.obs_dim), np.float32),
        "actions": np.zeros(act_shape, np.int64 if ds.action_kind == "discrete" else np.float32),
        "rewards": np.zeros((batch, n), np.float32),
        "timesteps": np.zeros((batch, n), np.int64),
        "valid": np.zeros((batch, n), bool),
        "episode_ids": np.zeros((batch, n_eps), np.int64),
        "episode_returns": np.zeros((batch, n_eps), np.float32),
    }


def _pack_row(out: dict[str, np.ndarray], row: int, task: TaskHistory, episodes: np.ndarray) -> None:
    """Write the given episodes of ``task``, in the given order, into row ``row`` of ``out``."""
    pos = 0
    for j, e in enumerate(episodes):
        n = int(task.lengths[e])
        out["observations"][row, pos : pos + n] = task.observations[e, :n]
        out["actions"][row, pos : pos + n] = task.actions[e, :n]
        out["rewards"][row, pos : pos + n] = task.rewards[e, :n]
        out["timesteps"][row, pos : pos + n] = np.arange(n)
        out["valid"][row, pos : pos + n] = True
        out["episode_ids"][row, j] = e
        out["episode_returns"][row, j] = task.returns[e]
        pos += n


def _sorted_by_return(task: TaskHistory, episodes: np.ndarray) -> np.ndarray:
    """Ascending return (best last); equal returns keep history order."""
    return episodes[np.lexsort((episodes, task.returns[episodes]))]


def sample_ad_batch(
    ds: LearningHistoryDataset,
    rng: np.random.Generator,
    batch_size: int,
    n_trajectories: int,
    *,
    sort_by_return: bool = True,
    pool: str = "history",
) -> ADBatch:
    """Algorithm 1, lines 3-10: per row a task, L episodes sorted by return and another L as the key.

    Rows have ``N = n_trajectories * ds.horizon`` step slots. ``sort_by_return=False`` keeps the
    sampled episodes in history order instead (plain AD). ``pool`` says where a row's episodes come
    from: ``"history"``, anywhere in the task's learning history (Algorithm 1); ``"prefix"``, the
    first ``c`` episodes for a cutoff ``c`` drawn uniformly from ``L .. n_episodes`` per row, i.e.
    what the learner had produced by a random point of its learning (episode ``i`` of ``n`` is drawn
    with weight about ``ln(n / i)``). Meant for histories that converge early; on Point-Robot it
    trained worse than ``"history"`` (docs/results.md), since a prefix's best episode is itself poor.
    """
    if batch_size < 1 or n_trajectories < 1:
        raise ValueError("batch_size and n_trajectories must be >= 1")
    if pool not in AD_POOLS:
        raise ValueError(f"pool must be one of {AD_POOLS}, got {pool!r}")
    task_ids = sample_task_ids(rng, ds.n_tasks, batch_size)
    n = n_trajectories * ds.horizon
    query = _alloc(ds, batch_size, n, n_trajectories)
    key = _alloc(ds, batch_size, n, n_trajectories)
    for b, t in enumerate(task_ids):
        task = ds.tasks[t]
        n_eps = task.n_episodes
        if pool == "prefix" and n_eps > n_trajectories:
            n_eps = int(rng.integers(n_trajectories, n_eps + 1))
        q_eps, k_eps = _draw_episode_pairs(rng, n_eps, n_trajectories)
        if sort_by_return:
            q_eps, k_eps = _sorted_by_return(task, q_eps), _sorted_by_return(task, k_eps)
        else:
            q_eps, k_eps = np.sort(q_eps), np.sort(k_eps)
        _pack_row(query, b, task, q_eps)
        _pack_row(key, b, task, k_eps)
    return ADBatch(task_ids=task_ids, query=Segments(**query), key=Segments(**key))


def _sample_states(
    rng: np.random.Generator, task: TaskHistory, n_queries: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_queries`` states drawn uniformly from all valid steps of the task (the query dataset)."""
    ends = np.cumsum(task.lengths)
    flat = rng.integers(0, ends[-1], size=n_queries)
    episode = np.searchsorted(ends, flat, side="right")
    step = flat - (ends[episode] - task.lengths[episode])
    return task.observations[episode, step], step.astype(np.int64), task.labels[episode, step]


def sample_dpt_batch(
    ds: LearningHistoryDataset,
    rng: np.random.Generator,
    batch_size: int,
    n_queries: int = 1,
    prompt_history: float = 1.0,
) -> DPTBatch:
    """Algorithm 3, lines 9-17: per row a task, a prompt episode and ``n_queries`` labelled query
    states; the key is another episode and other query states of the same task. Prompt and key
    episodes come from the first ``prompt_history`` fraction of the task's episodes (collection
    order, at least two); query states come from all of them."""
    if batch_size < 1 or n_queries < 1:
        raise ValueError("batch_size and n_queries must be >= 1")
    if not 0 < prompt_history <= 1:
        raise ValueError(f"prompt_history must be in (0, 1], got {prompt_history}")
    task_ids = sample_task_ids(rng, ds.n_tasks, batch_size)
    prompt = _alloc(ds, batch_size, ds.horizon, 1)
    key_prompt = _alloc(ds, batch_size, ds.horizon, 1)
    label_shape = (
        (batch_size, n_queries) if ds.action_kind == "discrete" else (batch_size, n_queries, ds.act_dim)
    )
    label_dtype = np.int64 if ds.action_kind == "discrete" else np.float32
    queries: list[dict[str, np.ndarray]] = [
        {
            "observations": np.zeros((batch_size, n_queries, ds.obs_dim), np.float32),
            "timesteps": np.zeros((batch_size, n_queries), np.int64),
            "labels": np.zeros(label_shape, label_dtype),
        }
        for _ in range(2)
    ]
    for b, t in enumerate(task_ids):
        task = ds.tasks[t]
        pool = min(task.n_episodes, max(2, math.ceil(prompt_history * task.n_episodes)))
        p_ep, k_ep = _draw_episode_pairs(rng, pool, 1)
        _pack_row(prompt, b, task, p_ep)
        _pack_row(key_prompt, b, task, k_ep)
        for q in queries:
            obs, steps, labels = _sample_states(rng, task, n_queries)
            q["observations"][b], q["timesteps"][b], q["labels"][b] = obs, steps, labels
    return DPTBatch(
        task_ids=task_ids,
        prompt=Segments(**prompt),
        query=DPTQueries(**queries[0]),
        key_prompt=Segments(**key_prompt),
        key_query=DPTQueries(**queries[1]),
    )
