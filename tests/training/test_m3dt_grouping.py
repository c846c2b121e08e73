"""Stage 2 task grouping: random and gradient-conflict k-means."""

from __future__ import annotations

import numpy as np
import torch

from training.m3dt.grouping import balanced_kmeans, conflict_vectors, gradient_groups, kmeans, random_groups


def test_random_groups_are_near_equal_and_seeded():
    groups = random_groups(10, 3, seed=1)
    assert sorted(np.bincount(groups).tolist()) == [3, 3, 4]
    assert groups == random_groups(10, 3, seed=1)
    assert groups != random_groups(10, 3, seed=2)


def test_kmeans_separates_clear_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (5, 4)), rng.normal(5, 0.1, (5, 4))])
    labels, inertia = kmeans(x, 2, rng)
    assert len(set(labels[:5])) == 1 and len(set(labels[5:])) == 1 and labels[0] != labels[5]
    assert inertia < 1.0


def test_balanced_kmeans_never_leaves_a_group_empty():
    x = np.concatenate([np.zeros((9, 2)), np.ones((1, 2))])
    groups = balanced_kmeans(x, 3, restarts=5, seed=0)
    assert sorted(set(groups)) == [0, 1, 2]


def test_gradient_groups_follow_gradient_conflict():
    # tasks 0-2 pull one way, 3-5 against it on the first coordinate
    direction = torch.tensor([1.0, 0.2, 0.0])
    grads = {t: direction * (1 if t < 3 else -1) + 0.01 * t for t in range(6)}
    grads = {t: g + torch.tensor([0.0, 0.0, 0.3]) for t, g in grads.items()}
    vectors = conflict_vectors(torch.stack([grads[t] for t in range(6)]))
    assert vectors.shape == (6, 3)
    groups = gradient_groups(6, 2, lambda t: grads[t], restarts=4, seed=0)
    assert len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1 and groups[0] != groups[3]


def test_result_plots_read_eval_files(tmp_path):
    from training.m3dt.evaluate import mean_ci
    from training.m3dt.plots import main

    paths = []
    for seed, score in enumerate((40.0, 50.0, 60.0)):
        path = tmp_path / f"s{seed}.json"
        path.write_text(f'[{{"mean_score": {score}}}]')
        paths.append(str(path))
    mean, half = mean_ci([40.0, 50.0, 60.0])
    assert mean == 50.0 and abs(half - 4.303 * 10 / 3**0.5) < 1e-6
    main(["bars", str(tmp_path / "b.png"), f"A={','.join(paths)}", f"B={paths[0]}"])
    main(["sweep", str(tmp_path / "s.png"), f"M3DT@2={paths[0]}", f"M3DT@8={','.join(paths)}"])
    sweep = ["sweep", str(tmp_path / "r.png"), f"M3DT@2={paths[0]}", f"M3DT@32={','.join(paths)}"]
    main([*sweep, "--reference", f"dense={','.join(paths)}", "--log2-x"])
    for name in ("b.png", "s.png", "r.png"):
        assert (tmp_path / name).stat().st_size > 0
