"""Reference policies (stay / random / oracle) that put in-context returns on a scale."""

from __future__ import annotations

import numpy as np
import pytest

from training.envs import make_env, task_split
from training.evaluation.reference import (
    _policies,
    episode_return,
    main,
    normalised_score,
    reference_returns,
    reference_scale,
)


@pytest.mark.parametrize("env_id", ["t2mir/DarkRoom-v0", "t2mir/PointRobot-v0"])
def test_the_oracle_is_far_above_policies_that_ignore_the_task(env_id):
    returns = reference_returns(env_id, episodes=1)
    assert set(returns) == {"stay", "random", "oracle"}
    gap = 50.0 if env_id == "t2mir/DarkRoom-v0" else 10.0
    assert returns["oracle"] > max(returns["stay"], returns["random"]) + gap
    assert reference_returns(env_id, episodes=1) == returns  # seeded: the same numbers again


@pytest.mark.parametrize("seed", [3, 4])
def test_the_darkroom_oracle_reaches_the_best_possible_return(seed):
    # 100 steps: after walking the Manhattan distance d the oracle collects 1 per step, 101 - d in all
    env_id = "t2mir/DarkRoom-v0"
    task = task_split(env_id, 0)[1][0]
    start, _ = make_env(env_id, task, seed=seed).reset()
    distance = int(np.abs(np.rint(start) - np.asarray(task.params["goal"])).sum())
    best = 100 if distance == 0 else 101 - distance
    assert episode_return(env_id, task, _policies(env_id)["oracle"], seed=seed) == best


def test_unknown_families_are_refused():
    with pytest.raises(ValueError, match="reference policies exist for"):
        reference_returns("t2mir/Reach-v0")


def test_normalised_scores_put_stay_at_zero_and_the_oracle_at_one():
    assert normalised_score(-23.0, stay=-23.0, oracle=-5.0) == 0.0
    assert normalised_score(-5.0, stay=-23.0, oracle=-5.0) == 1.0
    assert normalised_score(-14.0, stay=-23.0, oracle=-5.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must score above standing still"):
        normalised_score(1.0, stay=2.0, oracle=2.0)


def test_the_scale_comes_from_the_split_it_is_asked_for():
    env_id = "t2mir/PointRobot-v0"
    held_out = reference_scale(env_id, best=-10.0, last=-12.0, episodes=1)
    fresh = reference_scale(env_id, best=-10.0, last=-12.0, episodes=1, split="train", split_seed=1)
    assert held_out["reference"] == reference_returns(env_id, episodes=1)
    assert fresh["reference"] == reference_returns(env_id, episodes=1, split="train", split_seed=1)
    assert fresh["reference"]["stay"] != held_out["reference"]["stay"]
    refs = held_out["reference"]
    assert held_out["normalised"]["best"] == normalised_score(-10.0, refs["stay"], refs["oracle"])
    assert held_out["normalised"]["last"] < held_out["normalised"]["best"]


def test_families_without_references_get_no_scale():
    assert reference_scale("t2mir/Reach-v0", best=1.0, last=1.0) is None


def test_the_cli_reads_the_split_seed(capsys):
    main(["--env", "t2mir/PointRobot-v0", "--episodes", "1", "--split-seed", "1"])
    out = capsys.readouterr().out
    assert "split 1" in out
    stay = reference_returns("t2mir/PointRobot-v0", episodes=1, split_seed=1)["stay"]
    assert f"{stay:8.2f}" in out
