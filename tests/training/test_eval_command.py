"""``t2mir eval`` through the console entry point: default curve length, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2mir_model import T2MIRPolicy
from t2mir_model.cli import main
from training.envs import ENV_IDS, env_info, task_split
from training.evaluation import evaluate

POINT_ROBOT = Path(__file__).resolve().parents[2] / "checkpoints" / "pointrobot-t2mir-ad"


def test_every_env_has_the_papers_curve_length():
    lengths = {env_id: env_info(env_id).eval_episodes for env_id in ENV_IDS}
    assert lengths["t2mir/DarkRoom-v0"] == 100
    assert lengths["t2mir/PointRobot-v0"] == 30
    assert lengths["t2mir/WalkerParam-v0"] == 40
    assert all(n >= 1 for n in lengths.values())


def test_default_episodes_follow_the_checkpoints_env(tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(POINT_ROBOT), "--json", str(out), "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["episodes"] == env_info("t2mir/PointRobot-v0").eval_episodes
    assert len(summary["episode_means"]) == summary["episodes"]
    assert summary["best_mean"] == max(summary["episode_means"])
    assert out.with_suffix(".csv").exists() and out.with_suffix(".png").exists()
    assert "30 episodes" in capsys.readouterr().out


def test_explicit_episodes_override_the_default(tmp_path):
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(POINT_ROBOT), "--episodes", "2", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["episodes"] == 2


@pytest.mark.parametrize("bad", ["0", "-3", "two"])
def test_bad_episode_counts_are_refused_before_any_work(tmp_path, bad, capsys):
    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(POINT_ROBOT), "--episodes", bad, "--json", str(out)])
    assert exc.value.code == 2
    assert "--episodes" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_refuses_zero_episodes():
    policy = T2MIRPolicy.from_pretrained(POINT_ROBOT)
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate(policy, task_split("t2mir/PointRobot-v0", 0)[1], 0)
