"""The drift probe plays the evaluation protocol on Point-Robot and relates first moves to success."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from t2mir_model import T2MIRPolicy
from training.envs import task_split
from training.evaluation.drift_probe import DriftRow, correlation, drift_rows, main
from training.evaluation.reference import normalised_score, task_references
from training.evaluation.runner import evaluate

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def test_rows_describe_the_first_episode_and_the_best_one():
    policy = T2MIRPolicy.from_pretrained(CHECKPOINTS / "pointrobot-t2mir-ad")
    rows = drift_rows(policy, "train", split_seed=1, n_tasks=3, episodes=2, seed=4, action_noise=0.4)
    tasks = task_split("t2mir/PointRobot-v0", 1)[0][:3]
    assert [r.task for r in rows] == [t.name for t in tasks]
    returns = evaluate(policy, tasks, 2, seed=4, action_noise=0.4).returns  # the probe plays the protocol
    for row, task, task_returns in zip(rows, tasks, returns, strict=True):
        goal = np.asarray(task.params["goal"])
        assert row.goal_angle == pytest.approx(math.degrees(math.atan2(goal[1], goal[0])))
        assert -1 - 1e-9 <= row.cos <= 1 + 1e-9 and -180 <= row.drift_angle <= 180
        assert 0 < row.drift_length <= 20 * 0.1 * math.sqrt(2)
        refs = task_references("t2mir/PointRobot-v0", task, episodes=5, seed=4)
        assert row.best_normalised == pytest.approx(
            normalised_score(task_returns.max(), refs["stay"], refs["oracle"])
        )


def test_correlation_needs_spread():
    aligned = [DriftRow(f"train:{i}", 0.0, 1.0, 0.0, c, c) for i, c in enumerate([-1.0, 0.0, 1.0])]
    assert correlation(aligned) == pytest.approx(1.0)
    assert math.isnan(correlation(aligned[:1]))
    flat = [DriftRow(f"train:{i}", 0.0, 1.0, 0.0, c, 0.5) for i, c in enumerate([-1.0, 1.0])]
    assert math.isnan(correlation(flat))


def test_cli_prints_the_table_and_draws_the_scatter(tmp_path, capsys):
    png = tmp_path / "drift.png"
    argv = ["--checkpoint", str(CHECKPOINTS / "pointrobot-t2mir-ad"), "--n-tasks", "3", "--episodes", "2"]
    assert main([*argv, "--png", str(png)]) == 0  # played with the card's noise, 0.4
    out = capsys.readouterr().out
    assert "correlation of alignment and best normalised return" in out and png.stat().st_size > 0
    assert "(action noise 0.4)" in out


def test_other_environments_are_refused():
    policy = T2MIRPolicy.from_pretrained(CHECKPOINTS / "darkroom-t2mir-ad")
    with pytest.raises(ValueError, match="drift probe is for t2mir/PointRobot-v0"):
        drift_rows(policy, "test", split_seed=0, n_tasks=2, episodes=1)
