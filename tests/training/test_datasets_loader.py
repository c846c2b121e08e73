"""Loader validation and error messages for learning-history datasets (no simulators run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.datasets import DatasetError, load_dataset
from training.datasets.format import MANIFEST_NAME, read_task_file, write_task_file
from training.datasets.synthetic import write_synthetic_dataset


@pytest.fixture
def point_ds(tmp_path):
    return write_synthetic_dataset(tmp_path / "pr", "t2mir/PointRobot-v0", n_tasks=3, n_episodes=10)


def _edit_manifest(root, fn):
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    fn(manifest)
    path.write_text(json.dumps(manifest))


def test_load_shapes_continuous(point_ds):
    ds = load_dataset(point_ds, env_id="t2mir/PointRobot-v0", verify_checksums=True)
    assert (ds.n_tasks, ds.obs_dim, ds.act_dim, ds.horizon, ds.action_kind) == (3, 2, 2, 20, "continuous")
    assert ds.n_episodes == 30 and ds.n_steps == 30 * 20
    task = ds.tasks[0]
    assert task.name == "train:0" and task.task.env_id == "t2mir/PointRobot-v0"
    assert task.observations.shape == (10, 20, 2) and task.observations.dtype == np.float32
    assert task.actions.shape == task.labels.shape == (10, 20, 2)
    assert task.rewards.shape == (10, 20) and task.returns.shape == task.lengths.shape == (10,)


def test_load_shapes_discrete(tmp_path):
    root = write_synthetic_dataset(tmp_path / "dr", "t2mir/DarkRoom-v0", n_tasks=2, n_episodes=5)
    ds = load_dataset(root)
    assert (ds.action_kind, ds.action_n, ds.act_dim, ds.horizon) == ("discrete", 5, 1, 100)
    assert ds.tasks[1].actions.shape == (5, 100) and ds.tasks[1].actions.dtype == np.int64


def test_split_filter(point_ds):
    with pytest.raises(DatasetError, match="no tasks of split 'test'"):
        load_dataset(point_ds, split="test")
    assert load_dataset(point_ds, split="train").n_tasks == 3


def test_missing_directory_and_manifest(tmp_path, point_ds):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (point_ds / MANIFEST_NAME).unlink()
    with pytest.raises(DatasetError, match=r"manifest\.json: manifest is missing"):
        load_dataset(point_ds)


def test_manifest_not_json(point_ds):
    (point_ds / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(point_ds)


def test_wrong_schema_version(point_ds):
    _edit_manifest(point_ds, lambda m: m.update(schema_version=99))
    with pytest.raises(DatasetError, match="'schema_version' is 99"):
        load_dataset(point_ds)


def test_wrong_env_id(point_ds):
    with pytest.raises(DatasetError, match="'env_id' is 't2mir/PointRobot-v0' but 't2mir/DarkRoom-v0'"):
        load_dataset(point_ds, env_id="t2mir/DarkRoom-v0")
    _edit_manifest(point_ds, lambda m: m.update(env_id="t2mir/Nope-v0"))
    with pytest.raises(DatasetError, match="not a known environment"):
        load_dataset(point_ds)


def test_manifest_obs_dim_differs_from_env(point_ds):
    _edit_manifest(point_ds, lambda m: m["env"].update(obs_dim=3))
    with pytest.raises(DatasetError, match=r"field 'env\.obs_dim' is 3 but t2mir/PointRobot-v0 now has 2"):
        load_dataset(point_ds)


def test_file_obs_dim_mismatch_names_file_and_field(point_ds):
    path = point_ds / "train_001.npz"
    arrays = read_task_file(path)
    arrays["observations"] = np.zeros((10, 20, 3), np.float32)
    write_task_file(path, arrays)
    with pytest.raises(
        DatasetError, match=r"train_001\.npz: field 'observations': expected shape \(10, 20, 2\)"
    ):
        load_dataset(point_ds)


def test_truncated_npz(point_ds):
    path = point_ds / "train_002.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"train_002\.npz: cannot be read as a numpy archive"):
        load_dataset(point_ds)


def test_missing_file_and_array(point_ds):
    (point_ds / "train_000.npz").unlink()
    with pytest.raises(DatasetError, match=r"train_000\.npz: task file is missing"):
        load_dataset(point_ds)


def test_missing_array(point_ds):
    path = point_ds / "train_000.npz"
    arrays = read_task_file(path)
    del arrays["labels"]
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=r"arrays \['labels'\] are missing"):
        load_dataset(point_ds)


def test_episode_count_and_returns_mismatch(point_ds):
    _edit_manifest(point_ds, lambda m: m["tasks"][0].update(n_episodes=11))
    with pytest.raises(
        DatasetError, match="field 'lengths': 10 episodes in the file but the manifest says 11"
    ):
        load_dataset(point_ds)
    _edit_manifest(point_ds, lambda m: m["tasks"][0].update(n_episodes=10))
    path = point_ds / "train_000.npz"
    arrays = read_task_file(path)
    arrays["returns"] = arrays["returns"] + 1.0
    write_task_file(path, arrays)
    with pytest.raises(DatasetError, match="field 'returns': does not equal the sum"):
        load_dataset(point_ds)


def test_checksum_and_partial(point_ds):
    _edit_manifest(point_ds, lambda m: m["tasks"][1].update(sha256="0" * 64))
    load_dataset(point_ds)  # checksums are opt-in
    with pytest.raises(DatasetError, match="sha256 differs"):
        load_dataset(point_ds, verify_checksums=True)
    _edit_manifest(point_ds, lambda m: m.update(status="partial"))
    with pytest.raises(DatasetError, match="has not finished"):
        load_dataset(point_ds)
    assert load_dataset(point_ds, allow_partial=True).n_tasks == 3


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    arrays = read_task_file(write_synthetic_dataset(tmp_path / "a", n_tasks=1) / "train_000.npz")
    target = tmp_path / "x.npz"
    write_task_file(target, arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "x.npz"]
    with pytest.raises(ValueError, match="lack"):
        write_task_file(tmp_path / "y.npz", {"observations": arrays["observations"]})
    assert not (tmp_path / "y.npz").exists()
