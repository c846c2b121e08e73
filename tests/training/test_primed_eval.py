"""Primed evaluation: training tasks start from dataset episodes, then play on through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from t2mir_model import T2MIRPolicy
from training.datasets import load_dataset
from training.datasets.synthetic import write_synthetic_dataset
from training.evaluation.primed import evaluate_primed, main, prime_episode_ids, primed_history
from training.evaluation.runner import EvalResult, evaluate

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "pointrobot-t2mir-ad"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "pr", n_tasks=3, n_episodes=10)


@pytest.fixture(scope="module")
def tasks(dataset_dir):
    return list(load_dataset(dataset_dir).tasks)


@pytest.fixture(scope="module")
def policy() -> T2MIRPolicy:
    return T2MIRPolicy.from_pretrained(CHECKPOINT)


def test_episode_choice_per_mode(tasks):
    task = tasks[0]
    ranked = np.argsort(task.returns)
    assert list(prime_episode_ids(task, "best", 3)) == list(ranked[-3:])
    assert task.returns[prime_episode_ids(task, "best", 3)].tolist() == sorted(task.returns[ranked[-3:]])
    assert list(prime_episode_ids(task, "worst", 2)) == list(ranked[:2])
    assert list(prime_episode_ids(task, "first", 4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="k must be"):
        prime_episode_ids(task, "best", 0)
    with pytest.raises(ValueError, match="k must be"):
        prime_episode_ids(task, "best", task.n_episodes + 1)
    with pytest.raises(ValueError, match="mode must be"):
        prime_episode_ids(task, "random", 1)


def test_primed_history_holds_the_dataset_episodes(tasks):
    task = tasks[1]
    history = primed_history(task, np.array([4, 7]))
    assert history.episode == 2 and history.t == -1
    assert [e.index for e in history.episodes] == [0, 1]
    for episode, e in zip(history.episodes, (4, 7), strict=True):
        assert torch.equal(episode.obs, torch.as_tensor(task.observations[e]))
        assert torch.equal(episode.actions, torch.as_tensor(task.actions[e]))
        assert episode.ret == pytest.approx(float(task.returns[e]), rel=1e-5)


def test_primed_play_reads_the_primed_context_and_is_deterministic(tasks, policy):
    first = evaluate_primed(policy, tasks, "best", 3, episodes=2, seed=1)
    again = evaluate_primed(policy, tasks, "best", 3, episodes=2, seed=1)
    assert first.primed_returns.shape == (3, 3)
    assert np.all(np.diff(first.primed_returns, axis=1) >= 0)  # best last
    assert first.played.returns.shape == (3, 2)
    np.testing.assert_array_equal(first.played.returns, again.played.returns)
    empty = evaluate(policy, [t.task for t in tasks], 2, seed=1)
    assert not np.allclose(first.played.returns, empty.returns)  # the primed episodes were read


def test_refuses_histories_that_do_not_match_the_tasks(tasks, policy):
    with pytest.raises(ValueError, match="histories for"):
        evaluate(policy, [t.task for t in tasks], 1, histories=[primed_history(tasks[0], np.array([0]))])


def test_cli_prints_primed_and_played_returns(dataset_dir, capsys, tmp_path):
    argv = ["--checkpoint", str(CHECKPOINT), "--dataset", str(dataset_dir), "--mode", "first"]
    out_json = tmp_path / "primed.json"
    assert main([*argv, "--k", "2", "--tasks", "2", "--episodes", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "2 training tasks, primed with the first 2 episode(s)" in out
    played = [float(v) for v in out.splitlines()[-1].split(":")[1].split()]
    assert len(played) == 2
    saved = json.loads(out_json.read_text())
    np.testing.assert_allclose(saved["episode_means"], played, atol=0.005)
    assert (saved["primed"]["mode"], saved["primed"]["k"]) == ("first", 2)
    assert np.array(saved["primed"]["primed_returns"]).shape == (2, 2)
    assert EvalResult.from_json(out_json).returns.shape == (2, 2)
    assert saved["action_noise"] == 0.4  # the shipped Point-Robot card's exploration, by default
    assert (
        main(
            [
                *argv,
                "--k",
                "2",
                "--tasks",
                "2",
                "--episodes",
                "2",
                "--action-noise",
                "0",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    assert "action_noise" not in json.loads(out_json.read_text())
