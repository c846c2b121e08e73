"""Stage 2 task grouping: which expert learns which tasks.

``gradient`` (M3DT's rule): each task's mean gradient of the stage-1 loss over a few batches, taken
on the backbone's shared parameters; its elementwise product with the mean gradient over all tasks is
its conflict vector (negative entries: the task pulls that parameter against the others). k-means
with k-means++ seeding clusters the conflict vectors into one group per expert; it is repeated with
several seeds and the partition whose group sizes are the most even (smallest standard deviation,
then smallest inertia) is kept. ``random``: a seeded permutation cut into near-equal groups.

Every group is non-empty when there are at least as many tasks as experts (k-means refills an
emptied cluster with the point farthest from its centre).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def random_groups(n_tasks: int, n_groups: int, seed: int) -> list[int]:
    """Task -> group, near-equal sizes, seeded."""
    order = np.random.default_rng(seed).permutation(n_tasks)
    groups = np.zeros(n_tasks, int)
    groups[order] = np.arange(n_tasks) % n_groups
    return groups.tolist()


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> tuple[np.ndarray, float]:
    """k-means++ seeding then Lloyd iterations on x (N, D) -> (labels (N,), inertia)."""
    n = x.shape[0]
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)  # (N,)
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=probs)])
    c = np.stack(centres)  # (k, D)
    labels = np.zeros(n, int)
    sq = (x**2).sum(1)  # (N,)
    for _ in range(iters):
        d2 = np.maximum(sq[:, None] - 2 * x @ c.T + (c**2).sum(1)[None], 0.0)  # (N, k)
        labels = d2.argmin(1)
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0)
            else:  # refill an empty cluster with the worst-fitted point
                far = int(d2[np.arange(n), labels].argmax())
                labels[far], c[j] = j, x[far]
    inertia = float(((x - c[labels]) ** 2).sum())
    return labels, inertia


def balanced_kmeans(x: np.ndarray, k: int, restarts: int, seed: int) -> list[int]:
    """The most even partition (then the tightest) of ``restarts`` k-means++ runs on x (N, D)."""
    rng = np.random.default_rng(seed)
    best: tuple[float, float, np.ndarray] | None = None
    for _ in range(restarts):
        labels, inertia = kmeans(x, k, rng)
        spread = float(np.bincount(labels, minlength=k).std())
        if best is None or (spread, inertia) < best[:2]:
            best = (spread, inertia, labels)
    assert best is not None
    return best[2].tolist()


def conflict_vectors(task_gradients: torch.Tensor) -> np.ndarray:
    """Per-task mean gradients (N, D) -> conflict vectors g_i * mean_j g_j (N, D), unit-normalised."""
    mean = task_gradients.mean(0, keepdim=True)  # (1, D)
    conflict = task_gradients * mean  # (N, D)
    return torch.nn.functional.normalize(conflict, dim=1).numpy()


def gradient_groups(
    n_tasks: int, n_groups: int, task_gradient: Callable[[int], torch.Tensor], restarts: int, seed: int
) -> list[int]:
    """Task -> group by k-means over gradient-conflict vectors; ``task_gradient(t)`` -> (D,)."""
    grads = torch.stack([task_gradient(t) for t in range(n_tasks)])  # (N, D)
    return balanced_kmeans(conflict_vectors(grads), min(n_groups, n_tasks), restarts, seed)
