"""``t2mir eval`` through the console entry point: default curve length, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from t2mir_model import T2MIRPolicy
from t2mir_model.cli import main
from t2mir_model.history import SessionHistory
from training.envs import ENV_IDS, env_info, task_split
from training.evaluation import evaluate
from training.evaluation.protocol import EvalProtocol, measured_metrics, provenance

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


def test_the_summary_carries_the_splits_scale(tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = [
        "eval",
        "--checkpoint",
        str(POINT_ROBOT),
        "--episodes",
        "2",
        "--split-seed",
        "1",
        "--tasks",
        "train",
    ]
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    summary = json.loads(out.read_text())
    refs = summary["reference"]
    assert summary["split_seed"] == 1 and len(summary["tasks"]) == env_info("t2mir/PointRobot-v0").n_train
    assert refs["stay"] < refs["oracle"]
    span = refs["oracle"] - refs["stay"]
    assert summary["normalised"]["best"] == pytest.approx((summary["best_mean"] - refs["stay"]) / span)
    assert summary["normalised"]["last"] == pytest.approx((summary["last_mean"] - refs["stay"]) / span)
    assert "normalised best" in capsys.readouterr().out


def test_action_noise_is_seeded_recorded_and_stays_in_the_box():
    policy = T2MIRPolicy.from_pretrained(POINT_ROBOT)
    tasks = task_split("t2mir/PointRobot-v0", 0)[1][:3]
    plain = evaluate(policy, tasks, 2, seed=5)
    noisy = evaluate(policy, tasks, 2, seed=5, action_noise=0.5)
    again = evaluate(policy, tasks, 2, seed=5, action_noise=0.5)
    np.testing.assert_array_equal(noisy.returns, again.returns)
    assert not np.allclose(noisy.returns, plain.returns)
    assert noisy.summary()["action_noise"] == 0.5 and "action_noise" not in plain.summary()
    protocol = EvalProtocol((5,), 2, action_noise=0.5)
    assert "--action-noise 0.5" in protocol.command("C")
    metrics = measured_metrics(protocol, [noisy], [], provenance(protocol.command("C"), None))
    assert metrics["action_noise"] == 0.5 and "--action-noise 0.5" in metrics["command"]
    histories = [SessionHistory() for _ in tasks]
    evaluate(policy, tasks, 1, seed=5, action_noise=10.0, histories=histories)
    for history in histories:
        played = history.episodes[0].actions.numpy()  # (steps, 2)
        assert np.abs(played).max() <= 0.1 + 1e-7 and np.isclose(np.abs(played), 0.1).mean() > 0.5


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 10.5])
def test_bad_action_noise_is_refused(bad):
    policy = T2MIRPolicy.from_pretrained(POINT_ROBOT)
    with pytest.raises(ValueError, match="action_noise must be finite"):
        evaluate(policy, task_split("t2mir/PointRobot-v0", 0)[1], 1, action_noise=bad)


def test_action_noise_is_refused_for_discrete_actions(tmp_path, capsys):
    darkroom = POINT_ROBOT.parent / "darkroom-t2mir-ad"
    with pytest.raises(ValueError, match="continuous actions"):
        evaluate(
            T2MIRPolicy.from_pretrained(darkroom), task_split("t2mir/DarkRoom-v0", 0)[1], 1, action_noise=0.1
        )
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(darkroom), "--action-noise", "0.1", "--json", str(out)]
    assert main(argv) == 2
    assert "applies to continuous actions" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(POINT_ROBOT), "--action-noise", "-1", "--json", str(out)])
    assert exc.value.code == 2 and not out.exists()


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
