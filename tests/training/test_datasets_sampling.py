"""AD segments (Algorithm 1) and DPT tuples (Algorithm 3) from learning histories."""

from __future__ import annotations

import numpy as np
import pytest

from training.datasets import load_dataset, sample_ad_batch, sample_dpt_batch, sample_task_ids
from training.datasets.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def cont_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "pr"
    return load_dataset(write_synthetic_dataset(root, "t2mir/PointRobot-v0", n_tasks=5, n_episodes=12))


@pytest.fixture(scope="module")
def var_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "walker"
    path = write_synthetic_dataset(
        root, "t2mir/WalkerParam-v0", n_tasks=3, n_episodes=6, variable_lengths=True
    )
    return load_dataset(path)


@pytest.fixture(scope="module")
def disc_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "dr"
    return load_dataset(write_synthetic_dataset(root, "t2mir/DarkRoom-v0", n_tasks=4, n_episodes=8))


def test_task_ids_in_rounds():
    ids = sample_task_ids(np.random.default_rng(0), 5, 12)
    assert sorted(ids[:5]) == list(range(5)) and sorted(ids[5:10]) == list(range(5))
    assert np.bincount(ids, minlength=5).max() - np.bincount(ids, minlength=5).min() <= 1


def test_ad_shapes_and_sorted_best_last(cont_ds):
    batch = sample_ad_batch(cont_ds, np.random.default_rng(1), batch_size=7, n_trajectories=4)
    q = batch.query
    assert q.observations.shape == (7, 80, 2) and q.actions.shape == (7, 80, 2)
    assert q.rewards.shape == q.timesteps.shape == q.valid.shape == (7, 80)
    assert q.episode_ids.shape == q.episode_returns.shape == (7, 4)
    assert q.valid.all()
    assert np.all(np.diff(q.episode_returns, axis=1) >= 0), "episodes must be sorted by return, best last"
    assert np.array_equal(q.timesteps[0], np.tile(np.arange(20), 4))
    for b in range(7):
        task = cont_ds.tasks[batch.task_ids[b]]
        for j, e in enumerate(q.episode_ids[b]):
            seg = slice(20 * j, 20 * (j + 1))
            np.testing.assert_array_equal(q.observations[b, seg], task.observations[e])
            np.testing.assert_array_equal(q.actions[b, seg], task.actions[e])
            assert q.rewards[b, seg].sum() == pytest.approx(task.returns[e], rel=1e-5)


def test_ad_key_from_same_task_and_disjoint(cont_ds):
    batch = sample_ad_batch(cont_ds, np.random.default_rng(2), batch_size=10, n_trajectories=3)
    assert batch.task_ids.shape == (10,)
    for b in range(10):  # 12 episodes >= 2 * 3: query and key episodes are disjoint
        assert not set(batch.query.episode_ids[b]) & set(batch.key.episode_ids[b])
        task = cont_ds.tasks[batch.task_ids[b]]
        np.testing.assert_array_equal(batch.key.episode_returns[b], task.returns[batch.key.episode_ids[b]])
    assert np.all(np.diff(batch.key.episode_returns, axis=1) >= 0)


def test_ad_history_order_option(cont_ds):
    batch = sample_ad_batch(cont_ds, np.random.default_rng(3), 4, 5, sort_by_return=False)
    assert np.all(np.diff(batch.query.episode_ids, axis=1) > 0)


def test_ad_prefix_pool_weights_the_early_history(cont_ds):
    """'prefix' draws episode i of n with weight about ln(n / i): early episodes far more often."""
    draws = {
        pool: np.concatenate(
            [
                sample_ad_batch(cont_ds, np.random.default_rng(s), 10, 2, pool=pool).query.episode_ids.ravel()
                for s in range(200)
            ]
        )
        for pool in ("history", "prefix")
    }
    history, prefix = (np.bincount(draws[p], minlength=12) / draws[p].size for p in ("history", "prefix"))
    np.testing.assert_allclose(history, 1 / 12, atol=0.01)  # uniform over the whole history
    assert prefix[:3].sum() > 2 * history[:3].sum() and prefix[-3:].sum() < history[-3:].sum() / 3
    assert np.all(np.diff(prefix[1:]) < 0.005)  # non-increasing (up to noise) after the first two
    batch = sample_ad_batch(cont_ds, np.random.default_rng(5), 8, 4, pool="prefix")
    assert np.all(np.diff(batch.query.episode_returns, axis=1) >= 0)  # still sorted, best last
    for b in range(8):  # a prefix holds >= L episodes: each group is drawn without replacement
        task = cont_ds.tasks[batch.task_ids[b]]
        for group in (batch.query, batch.key):
            assert len(set(group.episode_ids[b])) == 4
            np.testing.assert_array_equal(group.episode_returns[b], task.returns[group.episode_ids[b]])


def test_ad_pool_is_validated(cont_ds):
    with pytest.raises(ValueError, match="pool"):
        sample_ad_batch(cont_ds, np.random.default_rng(0), 2, 2, pool="recent")


def test_ad_deterministic(cont_ds):
    a = sample_ad_batch(cont_ds, np.random.default_rng(7), 6, 3)
    b = sample_ad_batch(cont_ds, np.random.default_rng(7), 6, 3)
    c = sample_ad_batch(cont_ds, np.random.default_rng(8), 6, 3)
    np.testing.assert_array_equal(a.query.observations, b.query.observations)
    np.testing.assert_array_equal(a.key.episode_ids, b.key.episode_ids)
    assert not np.array_equal(a.query.episode_ids, c.query.episode_ids)


def test_ad_packs_variable_length_episodes(var_ds):
    batch = var_ds.sample_ad(np.random.default_rng(4), batch_size=5, n_trajectories=3)
    q = batch.query
    assert q.observations.shape == (5, 600, 17)
    for b in range(5):
        task = var_ds.tasks[batch.task_ids[b]]
        lens = task.lengths[q.episode_ids[b]]
        total = int(lens.sum())
        assert q.valid[b, :total].all() and not q.valid[b, total:].any(), "padding only at the end"
        assert not q.observations[b, total:].any() and not q.timesteps[b, total:].any()
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        assert np.array_equal(np.flatnonzero(q.timesteps[b, :total] == 0), starts)
        e, n = q.episode_ids[b, -1], lens[-1]
        np.testing.assert_array_equal(q.observations[b, total - n : total], task.observations[e, :n])


def test_few_episodes_fall_back_to_replacement(tmp_path):
    ds = load_dataset(write_synthetic_dataset(tmp_path / "s", n_tasks=2, n_episodes=2))
    batch = sample_ad_batch(ds, np.random.default_rng(0), 3, 4)
    assert batch.query.episode_ids.shape == (3, 4) and batch.query.episode_ids.max() <= 1


def test_dpt_shapes_labels_and_pairs(cont_ds):
    batch = sample_dpt_batch(cont_ds, np.random.default_rng(5), batch_size=6, n_queries=4)
    assert batch.prompt.observations.shape == (6, 20, 2) and batch.prompt.episode_ids.shape == (6, 1)
    assert batch.query.observations.shape == (6, 4, 2) and batch.query.labels.shape == (6, 4, 2)
    assert batch.query.timesteps.shape == (6, 4) and batch.key_query.labels.shape == (6, 4, 2)
    for b in range(6):
        task = cont_ds.tasks[batch.task_ids[b]]
        assert batch.prompt.episode_ids[b, 0] != batch.key_prompt.episode_ids[b, 0]
        np.testing.assert_array_equal(
            batch.key_prompt.observations[b], task.observations[batch.key_prompt.episode_ids[b, 0]]
        )
        for qs in (batch.query, batch.key_query):
            for i in range(4):  # each query state is a stored state of the same task, with its label
                hits = np.flatnonzero(np.all(task.observations == qs.observations[b, i], axis=-1).reshape(-1))
                assert hits.size >= 1
                e, t = divmod(int(hits[0]), cont_ds.horizon)
                assert t == qs.timesteps[b, i]
                np.testing.assert_array_equal(task.labels[e, t], qs.labels[b, i])


def test_dpt_discrete_and_variable_lengths(disc_ds, var_ds):
    batch = disc_ds.sample_dpt(np.random.default_rng(6), 3, n_queries=2)
    assert batch.query.labels.shape == (3, 2) and batch.query.labels.dtype == np.int64
    vb = var_ds.sample_dpt(np.random.default_rng(6), 20, n_queries=8)
    for b in range(20):
        task = var_ds.tasks[vb.task_ids[b]]
        # queries come only from valid (non-padding) steps of some episode
        assert np.all(vb.query.timesteps[b] < task.lengths.max())
        n = task.lengths[vb.prompt.episode_ids[b, 0]]
        assert vb.prompt.valid[b].sum() == n


def test_dpt_prompts_from_the_early_history_only(cont_ds):
    """prompt_history=0.25 of 12 episodes: prompts and keys from episodes 0-2, queries from all 12."""
    batch = sample_dpt_batch(cont_ds, np.random.default_rng(8), 64, n_queries=8, prompt_history=0.25)
    assert batch.prompt.episode_ids.max() <= 2 and batch.key_prompt.episode_ids.max() <= 2
    assert np.all(batch.prompt.episode_ids[:, 0] != batch.key_prompt.episode_ids[:, 0])
    late = 0
    for b in range(64):
        task = cont_ds.tasks[batch.task_ids[b]]
        for i in range(8):
            hit = np.flatnonzero(
                np.all(task.observations == batch.query.observations[b, i], axis=-1).reshape(-1)
            )
            late += int(hit[0]) // cont_ds.horizon > 2
    assert late > 0  # query states still come from the whole history
    tiny = sample_dpt_batch(cont_ds, np.random.default_rng(8), 16, prompt_history=0.01)
    assert set(tiny.prompt.episode_ids[:, 0]) | set(tiny.key_prompt.episode_ids[:, 0]) <= {0, 1}


def test_bad_arguments(cont_ds):
    with pytest.raises(ValueError):
        sample_ad_batch(cont_ds, np.random.default_rng(0), 0, 2)
    with pytest.raises(ValueError):
        sample_dpt_batch(cont_ds, np.random.default_rng(0), 2, 0)
    with pytest.raises(ValueError, match="prompt_history"):
        sample_dpt_batch(cont_ds, np.random.default_rng(0), 2, 1, prompt_history=0.0)
