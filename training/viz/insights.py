"""Routing statistics and gradient similarities read off a trained policy (paper Figures 1, 6, 7).

Everything is measured on real trajectories of the dataset: per task, a few context batches are run
through the policy and the routers' decisions are collected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t2mir_model import T2MIRPolicy
from training.datasets import LearningHistoryDataset
from training.datasets.sampling import ADBatch, DPTBatch, sample_ad_batch, sample_dpt_batch
from training.train.batches import to_policy_batches


@dataclass
class RoutingInsights:
    """Routing of one MoE layer, aggregated per task."""

    layer: int
    task_names: list[str]
    token_counts: np.ndarray | None  # (3, E1) top-k selections by modality s, a, r
    task_weights: np.ndarray | None  # (n_tasks, E2) mean task-gate weights at the last token of each row
    task_repr: np.ndarray | None  # (n_rows, E2) router representations z
    repr_task: np.ndarray  # (n_rows,) task index of every row of task_repr


def _one_task_batch(
    ds: LearningHistoryDataset, task: int, rows: int, policy: T2MIRPolicy, rng: np.random.Generator
):
    """A batch whose every row comes from ``task`` (same samplers as training)."""
    single = LearningHistoryDataset(
        ds.root,
        ds.env_id,
        ds.quality,
        ds.obs_dim,
        ds.action_kind,
        ds.action_n,
        ds.act_dim,
        ds.horizon,
        (ds.tasks[task],),
        ds.manifest,
    )
    if policy.config.backbone == "ad":
        sample: ADBatch | DPTBatch = sample_ad_batch(single, rng, rows, policy.config.context_episodes)
    else:
        sample = sample_dpt_batch(single, rng, rows, 1)
    batch, _ = to_policy_batches(sample, ds.action_kind == "discrete")
    return batch


@torch.no_grad()
def collect_routing(
    policy: T2MIRPolicy, ds: LearningHistoryDataset, n_tasks: int, rows: int, seed: int = 0
) -> list[RoutingInsights]:
    """Run ``rows`` dataset contexts of each of the first ``n_tasks`` tasks; one entry per MoE layer."""
    policy.eval()
    rng = np.random.default_rng(seed)
    per_layer: dict[int, dict[str, list]] = {}
    tasks = list(range(min(n_tasks, ds.n_tasks)))
    for task in tasks:
        batch = _one_task_batch(ds, task, rows, policy, rng)
        out = policy(batch.tokens, dense=batch.dense)
        for layer in out.routing:
            acc = per_layer.setdefault(layer.layer, {"counts": [], "weights": [], "repr": [], "task": []})
            if layer.token is not None:
                acc["counts"].append(layer.token.counts.numpy())
            if layer.task is not None:
                acc["weights"].append(layer.task.gates_last.mean(0).numpy())
                acc["repr"].append(layer.task.logits_last.numpy())
                acc["task"].append(np.full(rows, task))
    names = [ds.tasks[t].name for t in tasks]
    return [
        RoutingInsights(
            layer=layer,
            task_names=names,
            token_counts=np.sum(acc["counts"], axis=0) if acc["counts"] else None,
            task_weights=np.stack(acc["weights"]) if acc["weights"] else None,
            task_repr=np.concatenate(acc["repr"]) if acc["repr"] else None,
            repr_task=np.concatenate(acc["task"]) if acc["task"] else np.zeros(0, dtype=int),
        )
        for layer, acc in sorted(per_layer.items())
    ]


def task_gradient_similarity(
    policy: T2MIRPolicy, ds: LearningHistoryDataset, n_tasks: int, rows: int, seed: int = 0
) -> np.ndarray:
    """Cosine similarity (n_tasks, n_tasks) between the action-loss gradients of different tasks,
    over all trainable parameters. Negative entries are gradient conflicts (paper Fig. 7)."""
    rng = np.random.default_rng(seed)
    policy.eval()
    grads = []
    for task in range(min(n_tasks, ds.n_tasks)):
        batch = _one_task_batch(ds, task, rows, policy, rng)
        policy.zero_grad(set_to_none=True)
        policy.compute_loss(batch).action.backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    g = torch.nn.functional.normalize(torch.stack(grads), dim=1)
    policy.zero_grad(set_to_none=True)
    return (g @ g.T).numpy()
