"""Quality rules, budgets, seeds and the DarkRoom noise schedule (pure functions, no learners)."""

from __future__ import annotations

import numpy as np
import pytest

from training.collect.budgets import (
    BUDGET_NAMES,
    FAMILIES,
    NoiseBudget,
    PPOBudget,
    SACBudget,
    budget_json,
    env_id_of,
    family_of,
    get_budget,
    n_snapshots,
)
from training.collect.history import assemble_history
from training.collect.noise import collect_noise_task, epsilon_schedule
from training.collect.quality import select_snapshots, snapshot_performance
from training.collect.runner import task_seed


def test_mixed_keeps_all_and_labels_with_final():
    sel = select_snapshots(np.array([0.0, 1.0, 5.0, 9.0, 10.0]), "mixed")
    assert sel.kept.tolist() == [0, 1, 2, 3, 4] and sel.label_snapshot == 4
    np.testing.assert_allclose(sel.normalized, [0, 0.1, 0.5, 0.9, 1.0])


def test_medium_expert_and_medium_thresholds():
    returns = np.array([0.0, 3.0, 4.9, 5.0, 7.9, 8.0, 6.0, 10.0])
    me = select_snapshots(returns, "medium-expert")
    assert me.kept.tolist() == [0, 1, 2, 3, 4, 6] and me.label_snapshot == 4
    med = select_snapshots(returns, "medium")
    assert med.kept.tolist() == [0, 1, 2] and med.label_snapshot == 2


def test_negative_returns_normalise_between_first_and_final():
    # Point-Robot-like: returns rise from -40 to -4; 80 % of the way is -11.2
    returns = np.array([-40.0, -30.0, -20.0, -12.0, -11.0, -6.0, -4.0])
    me = select_snapshots(returns, "medium-expert")
    assert me.kept.tolist() == [0, 1, 2, 3] and me.label_snapshot == 3
    assert me.first_level == -40.0 and me.final_level == -4.0
    assert select_snapshots(returns, "medium").kept.tolist() == [0, 1]  # -20 is 56 % of the way


def test_no_progress_keeps_everything():
    sel = select_snapshots(np.array([-5.0, -7.0, -6.0, -5.0]), "medium")
    assert not sel.improved and sel.kept.tolist() == [0, 1, 2, 3]
    assert sel.label_snapshot == 3  # the best kept snapshot, latest on ties


def test_smoothing_window():
    r = np.arange(80, dtype=float)
    np.testing.assert_allclose(snapshot_performance(r)[2:-2], r[2:-2])  # linear: unchanged inside
    assert snapshot_performance(r)[0] == pytest.approx(1.0)  # mean of r[0..2]
    spike = np.zeros(80)
    spike[10] = 100.0
    assert snapshot_performance(spike)[10] == pytest.approx(20.0)
    np.testing.assert_array_equal(snapshot_performance(np.array([1.0, 5.0])), [1.0, 5.0])
    with pytest.raises(ValueError):
        select_snapshots(np.array([1.0]), "expert")


def test_assemble_history_keeps_selected_snapshots_and_zeroes_padding():
    rng = np.random.default_rng(0)
    snapshot = np.repeat(np.arange(4), 2)
    lengths = np.array([3, 4, 4, 2, 4, 4, 1, 4])
    valid = np.arange(4)[None] < lengths[:, None]
    rewards = (np.repeat([0.0, 1.0, 2.0, 2.5], 2)[:, None] * valid).astype(np.float32)
    episodes = {
        "observations": rng.normal(size=(8, 4, 3)).astype(np.float32) * valid[..., None],
        "actions": rng.normal(size=(8, 4, 2)).astype(np.float32),
        "rewards": rewards,
        "lengths": lengths,
    }
    arrays, sel = assemble_history(
        episodes, snapshot, "medium-expert", lambda k, kept: np.ones_like(kept["actions"])
    )
    # per-snapshot returns scale 0, ~3.5, ~5, ~4.4: final level is snapshot 3
    assert sel.label_snapshot in sel.kept
    assert set(arrays["snapshot"].tolist()) == set(sel.kept.tolist())
    keep_lengths = arrays["lengths"]
    assert np.all(arrays["labels"][np.arange(4)[None] >= keep_lengths[:, None]] == 0)
    np.testing.assert_allclose(arrays["returns"], arrays["rewards"].sum(1))


def test_epsilon_schedule():
    eps = epsilon_schedule(11)
    assert eps[0] == 1.0 and eps[-1] == 0.0 and np.all(np.diff(eps) < 0)
    half = epsilon_schedule(11, decay_fraction=0.5)
    assert half[5] == 0.0 and np.all(half[5:] == 0.0)
    assert epsilon_schedule(1).tolist() == [0.0]


def test_darkroom_history_returns_rise_and_labels_are_optimal():
    from training.envs import darkroom_expert_action, task_split

    train, _ = task_split("t2mir/DarkRoom-v0")
    budget = NoiseBudget(episodes_per_task=200)
    for task in train[:4]:
        data = collect_noise_task("t2mir/DarkRoom-v0", task, budget, "mixed", seed=task.index)
        r = data.arrays["returns"]
        assert r.shape == (200,)
        first, last = r[:20].mean(), r[-20:].mean()
        optimal = 101 - sum(task.params["goal"])
        assert last > first + 40 and last > 0.8 * optimal, (task.name, first, last)
        labels = data.arrays["labels"]
        obs = data.arrays["observations"]
        np.testing.assert_array_equal(labels, darkroom_expert_action(obs, np.asarray(task.params["goal"])))
        # the last episode is noise-free: it follows the expert exactly
        np.testing.assert_array_equal(data.arrays["actions"][-1], labels[-1])
    again = collect_noise_task("t2mir/DarkRoom-v0", train[0], budget, "mixed", seed=0)
    np.testing.assert_array_equal(
        again.arrays["actions"],
        collect_noise_task("t2mir/DarkRoom-v0", train[0], budget, "mixed", seed=0).arrays["actions"],
    )


def test_darkroom_medium_keeps_the_early_history():
    from training.envs import task_split

    task = task_split("t2mir/DarkRoom-v0")[0][5]
    budget = NoiseBudget(episodes_per_task=200)
    mixed = collect_noise_task("t2mir/DarkRoom-v0", task, budget, "mixed", seed=1)
    medium = collect_noise_task("t2mir/DarkRoom-v0", task, budget, "medium", seed=1)
    n = medium.arrays["returns"].shape[0]
    assert 10 < n < 200
    assert medium.arrays["returns"].max() < mixed.arrays["returns"].max()
    assert medium.summary["label_policy"].startswith("darkroom_expert_action")


def test_budgets_match_paper_tables():
    assert get_budget("t2mir/PointRobot-v0", "paper") == SACBudget(2000, 100, 20)
    assert n_snapshots(get_budget("t2mir/PointRobot-v0", "paper")) == 100
    for env_id, steps in [
        ("t2mir/CheetahVel-v0", 250_000),
        ("t2mir/CheetahVel3Cluster-v0", 400_000),
        ("t2mir/WalkerParam-v0", 1_000_000),
    ]:
        b = get_budget(env_id, "paper")
        assert (b.total_steps, b.learning_starts, b.save_freq) == (steps, 2000, 10_000)
        assert (b.learning_rate, b.tau, b.gamma, b.ent_coef) == (3e-4, 0.005, 0.99, 0.2)
    for env_id, steps in [("t2mir/Reach-v0", 400_000), ("t2mir/Push-v0", 1_000_000)]:
        b = get_budget(env_id, "paper")
        assert b == PPOBudget(steps) and (b.n_steps, b.batch_size, b.n_epochs, b.gamma) == (
            2048,
            64,
            10,
            0.99,
        )
    for env_id in FAMILIES:
        for name in BUDGET_NAMES:
            values = budget_json(name, get_budget(env_id, name))
            assert values["name"] == name and values["n_snapshots"] >= 1
    assert get_budget("t2mir/Reach-v0", "tiny", episodes_per_snapshot=3).episodes_per_snapshot == 3
    assert family_of("t2mir/CheetahVel3Cluster-v0") == "cheetah-vel-3cluster"
    assert env_id_of("walker-param") == "t2mir/WalkerParam-v0"
    with pytest.raises(ValueError, match="unknown budget"):
        get_budget("t2mir/Push-v0", "huge")
    with pytest.raises(ValueError, match="unknown environment"):
        env_id_of("nope")


def test_task_seed_is_stable_and_distinct():
    seeds = {task_seed(0, s, i) for s in ("train", "test") for i in range(50)}
    assert len(seeds) == 100
    assert task_seed(0, "train", 3) == task_seed(0, "train", 3) != task_seed(1, "train", 3)
