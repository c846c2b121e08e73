"""``t2mir viz``: the paper's routing insight plots (PNG) from a checkpoint and its dataset.

Usage: ``t2mir viz --checkpoint DIR --dataset DIR [--baseline DIR]``.

* ``token_modality.png``: token-router expert use by modality (s / a / r), Fig. 1 left / Fig. 6.
* ``task_weights.png``: task-router expert weights per task (heatmap).
* ``task_tsne.png``: t-SNE of task-router representations coloured by task, Fig. 1 right.
* ``gradient_similarity.png``: cosine similarity of per-task gradients, with MoE and (given
  ``--baseline``, e.g. the vanilla AD checkpoint) without, Fig. 7.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from t2mir_model import MODALITIES, T2MIRPolicy, variant_name
from training.datasets import load_dataset
from training.figures import save_figure
from training.viz.insights import collect_routing, task_gradient_similarity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir viz``."""
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True, help="dataset directory of the checkpoint's environment")
    parser.add_argument("--baseline", help="a checkpoint without MoE for the gradient-conflict comparison")
    parser.add_argument("--out", help="output folder (default: <checkpoint>/viz)")
    parser.add_argument("--tasks", type=int, default=12, help="tasks to analyse")
    parser.add_argument("--rows", type=int, default=8, help="contexts per task")
    parser.add_argument("--seed", type=int, default=0)


def plot_token_modality(counts: np.ndarray, layer: int, path: Path) -> None:
    """Share of each modality's top-k selections (``counts``: (3, E)) going to each expert."""
    share = counts / counts.sum(1, keepdims=True).clip(min=1)
    experts = np.arange(share.shape[1])
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for m, name in enumerate(MODALITIES):
        ax.bar(
            experts + (m - 1) * 0.27,
            share[m],
            width=0.27,
            label={"s": "state", "a": "action", "r": "reward"}[name],
        )
    ax.set_xticks(experts, [f"E{e}" for e in experts])
    ax.set_ylabel("share of the modality's tokens")
    ax.set_title(f"token router, layer {layer}: expert use by modality")
    ax.legend()
    save_figure(fig, path)


def plot_task_weights(weights: np.ndarray, task_names: list[str], layer: int, path: Path) -> None:
    """Heatmap tasks x experts of mean task-gate weights (``weights``: (n_tasks, E))."""
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(task_names) + 1.5), dpi=120)
    image = ax.imshow(weights, aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(task_names)), task_names)
    ax.set_xticks(range(weights.shape[1]), [f"E{e}" for e in range(weights.shape[1])])
    ax.set_title(f"task router, layer {layer}: expert weights per task")
    fig.colorbar(image, ax=ax)
    save_figure(fig, path)


def plot_task_tsne(
    representations: np.ndarray, row_task: np.ndarray, layer: int, path: Path, seed: int
) -> None:
    """2-d t-SNE of router representations (n_rows, E), one colour per task (``row_task``: (n_rows,))."""
    from sklearn.manifold import TSNE

    perplexity = max(2.0, min(30.0, (len(representations) - 1) / 3))
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(
        representations
    )
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=row_task, cmap="tab20", s=14)
    ax.set_title(f"task-router representations (t-SNE), layer {layer}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(scatter, ax=ax, label="task")
    save_figure(fig, path)


def plot_gradient_similarity(matrices: dict[str, np.ndarray], path: Path) -> None:
    """Side-by-side task x task gradient cosine similarity heatmaps."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.0), dpi=120, squeeze=False)
    for ax, (label, matrix) in zip(axes[0], matrices.items(), strict=True):
        off = matrix[~np.eye(len(matrix), dtype=bool)]
        image = ax.imshow(matrix, cmap="RdBu", vmin=-1, vmax=1)
        ax.set_title(f"{label}\nmean off-diagonal {off.mean():.3f}, conflicts {np.mean(off < 0):.0%}")
        fig.colorbar(image, ax=ax)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    """Collect routing statistics and gradients, write the PNGs and a JSON summary."""
    torch.manual_seed(args.seed)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint)
    dataset = load_dataset(args.dataset, env_id=policy.config.env_id or None, split="train")
    out = Path(args.out or Path(args.checkpoint) / "viz")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": args.checkpoint, "variant": variant_name(policy.config), "layers": []}
    for info in collect_routing(policy, dataset, args.tasks, args.rows, args.seed):
        entry: dict = {"layer": info.layer}
        if info.token_counts is not None:
            plot_token_modality(info.token_counts, info.layer, out / f"token_modality_layer{info.layer}.png")
            entry["token_counts_by_modality"] = info.token_counts.tolist()
        if info.task_weights is not None:
            plot_task_weights(
                info.task_weights, info.task_names, info.layer, out / f"task_weights_layer{info.layer}.png"
            )
            if info.task_repr is not None:
                path = out / f"task_tsne_layer{info.layer}.png"
                plot_task_tsne(info.task_repr, info.repr_task, info.layer, path, args.seed)
            entry["task_weights"] = info.task_weights.tolist()
        summary["layers"].append(entry)
    matrices = {
        variant_name(policy.config): task_gradient_similarity(
            policy, dataset, args.tasks, args.rows, args.seed
        )
    }
    if args.baseline:
        baseline = T2MIRPolicy.from_pretrained(args.baseline)
        matrices[variant_name(baseline.config)] = task_gradient_similarity(
            baseline, dataset, args.tasks, args.rows, args.seed
        )
    plot_gradient_similarity(matrices, out / "gradient_similarity.png")
    summary["gradient_similarity_mean_offdiag"] = {
        k: float(m[~np.eye(len(m), dtype=bool)].mean()) for k, m in matrices.items()
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote plots and summary.json to {out}")
    return 0
