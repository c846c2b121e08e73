"""The results protocol: ``t2mir eval`` replays a card's settings, ``--seeds`` aggregates over
evaluation seeds with a t-interval, and evaluations and training cards record their provenance."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_checkpoint

from t2mir_model import ActionSpec, ObservationSpec, T2MIRPolicy, read_card, update_card
from t2mir_model.cli import main
from training.datasets.synthetic import write_synthetic_dataset
from training.envs import task_split
from training.evaluation import evaluate
from training.evaluation.protocol import git_commit, manifest_sha256, t_interval
from training.evaluation.select import main as select_main
from training.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
POINT_ROBOT = "t2mir/PointRobot-v0"
CARD_METRICS = {
    "eval_tasks": "test",
    "episodes": 2,
    "seeds": [3, 4],
    "split_seed": 1,
    "sample": True,
    "action_noise": 0.3,
}


@pytest.fixture
def tiny_point_robot(tmp_path) -> Path:
    """A random Point-Robot checkpoint whose card says it was measured at seeds 3, 4, split 1, noise 0.3."""
    directory = write_checkpoint(
        tmp_path / "ckpt",
        "tiny-pointrobot",
        "1",
        observation=ObservationSpec(2),
        action=ActionSpec("continuous", dim=2, low=(-0.1, -0.1), high=(0.1, 0.1)),
        env_id=POINT_ROBOT,
        max_episode_steps=20,
    )
    update_card(
        directory, {"training": {"dataset": "data/point-robot-mixed-stochastic"}, "metrics": CARD_METRICS}
    )
    return directory


def _eval(checkpoint: Path, out: Path, *flags: str) -> dict:
    assert main(["eval", "--checkpoint", str(checkpoint), "--json", str(out), "--no-progress", *flags]) == 0
    return json.loads(out.read_text())


def test_eval_without_flags_replays_the_cards_settings(tiny_point_robot, tmp_path):
    summary = _eval(tiny_point_robot, tmp_path / "eval.json")
    assert summary["seeds"] == [3, 4] and summary["episodes"] == 2 and summary["split_seed"] == 1
    assert summary["action_noise"] == 0.3 and summary["sample"] is True
    policy = T2MIRPolicy.from_pretrained(tiny_point_robot)
    tasks = task_split(POINT_ROBOT, 1)[1]
    expected = [evaluate(policy, tasks, 2, seed=s, action_noise=0.3).returns for s in (3, 4)]
    np.testing.assert_allclose(np.array(summary["returns"]), np.concatenate(expected))
    command = summary["command"]
    assert "--seeds 3,4" in command and "--action-noise 0.3" in command and "--split-seed 1" in command
    manifest = REPO / "docs" / "manifests" / "point-robot-mixed-stochastic.json"
    assert summary["dataset_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert summary["commit"] == git_commit()
    csv = (tmp_path / "eval.csv").read_text().splitlines()
    assert csv[0].startswith("seed,task,") and csv[1].startswith("3,") and csv[-1].startswith("4,")


def test_flags_override_the_card(tiny_point_robot, tmp_path):
    summary = _eval(
        tiny_point_robot, tmp_path / "eval.json", "--seed", "5", "--action-noise", "0", "--episodes", "1"
    )
    assert summary["seed"] == 5 and "seeds" not in summary and "action_noise" not in summary
    assert summary["episodes"] == 1 and summary["split_seed"] == 1
    assert "--seeds 5 " in summary["command"] and "--action-noise" not in summary["command"]


def test_seeds_report_the_mean_and_t_interval_over_seeds(tiny_point_robot, tmp_path, capsys):
    summary = _eval(tiny_point_robot, tmp_path / "eval.json", "--seeds", "0,1,2", "--update-card")
    policy = T2MIRPolicy.from_pretrained(tiny_point_robot)
    tasks = task_split(POINT_ROBOT, 1)[1]
    best = [evaluate(policy, tasks, 2, seed=s, action_noise=0.3).best_mean for s in (0, 1, 2)]
    over = summary["over_seeds"]
    assert over["best_mean"]["per_seed"] == pytest.approx(best, abs=1e-4)
    assert over["best_mean"]["mean"] == pytest.approx(np.mean(best), abs=1e-4)
    half = 4.302653 * np.std(best, ddof=1) / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert over["best_mean"]["ci95"] == pytest.approx([np.mean(best) - half, np.mean(best) + half], abs=1e-3)
    assert "over 3 seeds: best episode mean" in capsys.readouterr().out
    metrics = read_card(tiny_point_robot)["metrics"]
    assert metrics["seeds"] == [0, 1, 2] and metrics["action_noise"] == 0.3
    assert metrics["best_episode_mean_return"] == over["best_mean"]
    assert metrics["command"] == summary["command"] and metrics["commit"] == summary["commit"]
    again = _eval(tiny_point_robot, tmp_path / "again.json")  # the updated card is the new protocol
    assert again["seeds"] == [0, 1, 2] and again["over_seeds"] == over


def test_the_context_rule_played_is_recorded_and_the_card_records_only_the_served_one(
    tiny_point_robot, tmp_path, capsys
):
    short = ("--seed", "5", "--episodes", "1")
    summary = _eval(tiny_point_robot, tmp_path / "keep.json", *short)
    assert summary["unrewarded_context"] == "keep"  # the config's
    assert summary["command"].endswith("--unrewarded-context keep")
    summary = _eval(tiny_point_robot, tmp_path / "drop.json", *short, "--unrewarded-context", "drop")
    assert summary["unrewarded_context"] == "drop" and "--unrewarded-context drop" in summary["command"]
    argv = ["eval", "--checkpoint", str(tiny_point_robot), *short, "--unrewarded-context", "drop"]
    assert main([*argv, "--json", str(tmp_path / "card.json"), "--update-card", "--no-progress"]) == 2
    assert "serves" in capsys.readouterr().err
    assert "unrewarded_context" not in read_card(tiny_point_robot)["metrics"]


def test_select_plays_each_context_rule_on_training_tasks(tiny_point_robot, tmp_path, capsys):
    out = tmp_path / "select.json"
    argv = ["--seeds", "1", "--validation", "2", "--episodes", "1", "--json", str(out)]
    assert select_main([*argv, "--unrewarded-context", "keep,drop", str(tiny_point_robot)]) == 0
    record = json.loads(out.read_text())
    assert sorted(row["unrewarded_context"] for row in record["rows"]) == ["drop", "keep"]
    assert all(row["training_tasks"] == 2 for row in record["rows"])
    assert "--unrewarded-context keep,drop" in record["command"]
    assert "chosen:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        select_main([*argv, "--unrewarded-context", "keep,often", str(tiny_point_robot)])


def test_t_interval():
    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    assert t_interval([7.0]) == (7.0, 7.0)


def test_bad_seed_lists_are_refused(tiny_point_robot, tmp_path, capsys):
    for bad in ("1,x", "1,1"):
        with pytest.raises(SystemExit) as exc:
            main(["eval", "--checkpoint", str(tiny_point_robot), "--seeds", bad])
        assert exc.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_manifest_hash_falls_back_to_the_committed_copy(tmp_path):
    committed = REPO / "docs" / "manifests" / "darkroom-mixed.json"
    assert manifest_sha256("data/darkroom-mixed") == hashlib.sha256(committed.read_bytes()).hexdigest()
    assert manifest_sha256(tmp_path / "no-such-dataset") == "unknown"
    assert manifest_sha256(None) == "unknown"


def test_training_cards_record_command_commit_and_manifest(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "ds", POINT_ROBOT, n_tasks=2, n_episodes=4)
    config = TrainConfig.from_dict(
        {
            "dataset": str(dataset),
            "out": str(tmp_path / "run"),
            "n_queries": 2,
            "batch_size": 2,
            "steps": 2,
            "warmup_steps": 1,
            "checkpoint_every": 100,
            "final_eval": False,
            "threads": 1,
            "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "ffn_mult": 2, "context_episodes": 2},
        }
    )
    training = read_card(train(config, progress=False).final_dir)["training"]
    assert training["commit"] == git_commit()
    manifest = Path(dataset) / "manifest.json"
    assert training["dataset_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert "command" in training
