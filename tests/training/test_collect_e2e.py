"""``t2mir collect`` end to end with the ``tiny`` budget: every family, manifest, resume, workers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from t2mir_model.cli import main
from training.collect.budgets import budget_json, get_budget
from training.datasets import load_dataset
from training.datasets.format import read_task_file, sha256_file

SB3_IDS = [
    "t2mir/PointRobot-v0",
    "t2mir/CheetahVel-v0",
    "t2mir/CheetahVel3Cluster-v0",
    "t2mir/WalkerParam-v0",
    "t2mir/Reach-v0",
    "t2mir/Push-v0",
]


def _collect(out, env, *extra, quality="mixed", budget="tiny"):
    argv = [
        "collect",
        "--env",
        env,
        "--quality",
        quality,
        "--budget",
        budget,
        "--out",
        str(out),
        "--no-progress",
    ]
    return main([*argv, *extra])


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("env_id", SB3_IDS)
def test_tiny_sb3_collection(tmp_path, env_id):
    out = tmp_path / "ds"
    eps_per_snap = 2 if env_id == "t2mir/PointRobot-v0" else 1
    assert _collect(out, env_id, "--max-tasks", "1", "--episodes-per-snapshot", str(eps_per_snap)) == 0
    manifest = _manifest(out)
    budget = get_budget(env_id, "tiny", episodes_per_snapshot=eps_per_snap)
    assert manifest["status"] == "complete" and manifest["schema_version"] == 1
    assert manifest["env_id"] == env_id and manifest["quality"] == "mixed"
    assert manifest["budget"] == budget_json("tiny", budget)
    assert manifest["command"].startswith(f"t2mir collect --env {env_id} --quality mixed --budget tiny")
    entry = manifest["tasks"][0]
    assert entry["file"] == "train_000.npz" and entry["task"]["split"] == "train"
    n_snap = manifest["budget"]["n_snapshots"]
    assert entry["n_episodes"] == n_snap * eps_per_snap and entry["n_snapshots"] == n_snap
    assert entry["sha256"] == sha256_file(out / entry["file"])

    ds = load_dataset(out, env_id=env_id, verify_checksums=True)
    task = ds.tasks[0]
    np.testing.assert_allclose(task.returns, entry["returns"], atol=1e-3)
    assert task.snapshot.tolist() == np.repeat(np.arange(n_snap), eps_per_snap).tolist()
    valid = np.arange(ds.horizon)[None] < task.lengths[:, None]
    assert np.all(np.abs(task.actions[valid]) <= np.asarray(manifest["env"]["action_high"]) + 1e-6)
    assert not task.observations[~valid].any() and not task.labels[~valid].any()
    last = task.snapshot == n_snap - 1
    if env_id in ("t2mir/Reach-v0", "t2mir/Push-v0"):
        np.testing.assert_array_equal(task.labels, task.actions)  # Meta-World: the dataset's own actions
    else:  # Mixed labels come from the final (deterministic) snapshot, which also produced its episodes
        np.testing.assert_allclose(task.labels[last], task.actions[last], atol=1e-5)
    assert "end: complete" in (out / "collect.log").read_text()


def test_darkroom_tiny_and_quality(tmp_path):
    mixed, medium = tmp_path / "mixed", tmp_path / "medium"
    assert _collect(mixed, "darkroom") == 0
    assert _collect(medium, "t2mir/DarkRoom-v0", quality="medium-expert") == 0
    m, me = load_dataset(mixed), load_dataset(medium)
    assert m.n_tasks == me.n_tasks == 3 and m.tasks[0].n_episodes == 40
    assert all(a.n_episodes < b.n_episodes for a, b in zip(me.tasks, m.tasks, strict=True))
    assert me.manifest["quality"] == "medium-expert"
    for a, b in zip(me.tasks, m.tasks, strict=True):  # same seed: the kept episodes are the mixed ones
        np.testing.assert_array_equal(a.actions, b.actions[a.snapshot])
        assert a.returns.max() <= b.returns.max()


def test_resume_after_killed_run(tmp_path):
    out = tmp_path / "ds"
    assert _collect(out, "darkroom") == 0
    original = {name: read_task_file(out / name) for name in ("train_000.npz", "train_002.npz")}
    kept_stat = os.stat(out / "train_000.npz").st_mtime_ns
    # simulate a run killed while writing task 2: its file never got renamed into place, a stray
    # temporary file is left behind and the manifest still says "partial" without that task
    (out / "train_002.npz").unlink()
    stray = out / f".train_002.npz.{os.getpid()}.tmp"
    stray.write_bytes(b"half-written garbage")
    manifest = _manifest(out)
    manifest["status"] = "partial"
    manifest["tasks"] = manifest["tasks"][:1]  # the manifest lagged behind train_001 as well
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="has not finished"):
        load_dataset(out)

    assert _collect(out, "darkroom") == 0
    assert not stray.exists()
    assert os.stat(out / "train_000.npz").st_mtime_ns == kept_stat  # finished task skipped
    log = (out / "collect.log").read_text()
    assert "resuming: 2 tasks already collected, 1 to go" in log
    assert "removing stray temporary file" in log
    after = _manifest(out)
    assert after["status"] == "complete" and [t["file"] for t in after["tasks"]] == [
        "train_000.npz",
        "train_001.npz",
        "train_002.npz",
    ]
    redone = read_task_file(out / "train_002.npz")  # recollected deterministically
    for key, value in original["train_002.npz"].items():
        np.testing.assert_array_equal(redone[key], value)
    load_dataset(out, verify_checksums=True)


def test_refuses_to_mix_settings(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _collect(out, "darkroom", "--max-tasks", "1") == 0
    assert _collect(out, "darkroom", "--max-tasks", "1", "--seed", "1") == 2
    assert "field 'seed' is 0 but this run has 1" in capsys.readouterr().err


def test_parallel_workers_match_serial(tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert _collect(serial, "darkroom", "--max-tasks", "2") == 0
    assert _collect(parallel, "darkroom", "--max-tasks", "2", "--workers", "2") == 0
    a, b = load_dataset(serial), load_dataset(parallel)
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        np.testing.assert_array_equal(ta.actions, tb.actions)
        np.testing.assert_array_equal(ta.returns, tb.returns)
    assert _manifest(parallel)["workers"] == 2


def test_refuses_a_directory_being_written(tmp_path, capsys):
    import fcntl

    out = tmp_path / "ds"
    out.mkdir()
    with open(out / ".collect.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _collect(out, "darkroom") == 2
    assert "another `t2mir collect` is writing this directory" in capsys.readouterr().err
    assert _collect(out, "darkroom") == 0


def test_test_split_files(tmp_path):
    out = tmp_path / "ds"
    assert _collect(out, "darkroom", "--tasks", "test", "--max-tasks", "2") == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["test_000.npz", "test_001.npz"]
    ds = load_dataset(out, split="test")
    assert [t.name for t in ds.tasks] == ["test:0", "test:1"]


def test_sb3_medium_quality_keeps_a_subset_of_snapshots(tmp_path):
    out = tmp_path / "ds"
    assert _collect(out, "point-robot", "--max-tasks", "1", quality="medium") == 0
    entry = _manifest(out)["tasks"][0]
    ds = load_dataset(out)
    kept = ds.tasks[0].snapshot
    assert entry["kept_snapshots"] == len(kept) >= 1 and 0 in kept
    assert entry["label_snapshot"] in kept.tolist()
    assert ds.tasks[0].labels.shape == ds.tasks[0].actions.shape


def test_stochastic_snapshots_sample_their_policy(tmp_path, capsys):
    out = tmp_path / "stochastic"
    argv = ["--max-tasks", "1", "--snapshot-actions", "stochastic"]
    assert _collect(out, "t2mir/PointRobot-v0", *argv) == 0
    manifest = _manifest(out)
    assert manifest["budget"] == budget_json(
        "tiny", get_budget("t2mir/PointRobot-v0", "tiny", snapshot_actions="stochastic")
    )
    assert manifest["budget"]["snapshot_actions"] == "stochastic"
    assert manifest["command"].endswith("--snapshot-actions stochastic")
    task = load_dataset(out).tasks[0]
    last = task.snapshot == task.snapshot.max()
    # the final snapshot labels every state with its mean; its own episode sampled around it
    assert np.abs(task.labels[last] - task.actions[last]).max() > 1e-3
    assert np.abs(task.actions).max() <= 0.1 + 1e-6
    again = tmp_path / "again"
    assert _collect(again, "t2mir/PointRobot-v0", *argv) == 0
    np.testing.assert_array_equal(load_dataset(again).tasks[0].actions, task.actions)  # seeded

    assert _collect(tmp_path / "dr", "darkroom", "--snapshot-actions", "stochastic") == 2
    assert "--snapshot-actions does not apply to DarkRoom" in capsys.readouterr().err
    with pytest.raises(ValueError, match="snapshot_actions must be one of"):
        get_budget("t2mir/PointRobot-v0", "tiny", snapshot_actions="noisy")
