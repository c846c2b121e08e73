"""Every shipped checkpoint loads, and a short in-context evaluation reproduces its card's numbers.

The card records the per-episode mean returns of the evaluation that was run when the checkpoint
was made (held-out tasks, seed, sampling). Evaluation is deterministic for a seed, and its first K
episodes do not depend on how many episodes follow, so re-running K episodes must give the card's
first K episode means; the tolerance only absorbs floating-point differences between machines that
can flip a sampled action. A change to the model code that alters behaviour fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from t2mir_model import T2MIRPolicy, read_card, read_family
from training.envs import task_split
from training.evaluation import evaluate

SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[2] / "checkpoints").glob("*") if p.is_dir())
CHECKPOINTS = [p for p in SHIPPED if read_family(p) == "t2mir"]
M3DT_CHECKPOINTS = [p for p in SHIPPED if read_family(p) == "m3dt"]
EPISODES = 3
TOLERANCE = 0.05  # relative to the spread between the worst and best episode mean on the card, plus 1e-6


def test_the_checkpoints_the_demo_and_server_need_are_shipped():
    names = {p.name for p in CHECKPOINTS}
    assert {"darkroom-t2mir-ad", "pointrobot-t2mir-ad"} <= names


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=[p.name for p in CHECKPOINTS])
def test_checkpoint_reproduces_its_card(checkpoint):
    torch.set_num_threads(1)
    card = read_card(checkpoint)
    policy = T2MIRPolicy.from_pretrained(checkpoint)
    assert card["env_id"] == policy.config.env_id
    metrics = card["metrics"]
    assert "training" in card and card["training"]["command"].startswith("t2mir train")
    tasks = task_split(policy.config.env_id, 0)[1]
    result = evaluate(
        policy,
        tasks,
        EPISODES,
        seed=metrics["seed"],
        sample=metrics["sample"],
        action_noise=metrics.get("action_noise", 0.0),
    )
    expected = np.array(metrics["episode_means"][:EPISODES])
    spread = max(metrics["episode_means"]) - min(metrics["episode_means"])
    np.testing.assert_allclose(result.episode_means, expected, atol=TOLERANCE * spread + 1e-6, rtol=0)


@pytest.mark.parametrize("checkpoint", M3DT_CHECKPOINTS, ids=[p.name for p in M3DT_CHECKPOINTS])
def test_m3dt_checkpoint_reproduces_its_card_on_point_robot_tasks(checkpoint):
    """Three Point-Robot goals replayed on the card's episodes give the card's per-task scores."""
    from training.m3dt.evaluate import evaluate_checkpoints

    torch.set_num_threads(1)
    card = read_card(checkpoint)
    metrics = card["metrics"]
    assert card["training"]["command"].startswith("t2mir train") and card["data"]["dataset_sha256"]
    names = [n for n in card["tasks"] if n.startswith("point-robot")][:3]
    (result,) = evaluate_checkpoints(
        [checkpoint],
        metrics["episodes"]["metaworld"],
        metrics["episodes"]["point-robot"],
        seed=metrics["episodes"]["seed"],
        progress=False,
        only=names,
    )
    for name in names:
        assert result["per_task"][name] == pytest.approx(metrics["per_task"][name], abs=1e-3)
