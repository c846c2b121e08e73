"""Every shipped checkpoint loads, and a short in-context evaluation reproduces its card's numbers.

The card records the protocol of its measurement (held-out tasks, evaluation seeds, sampling,
exploration noise) and the per-episode mean returns at each seed. Evaluation is deterministic for a
seed, and its first K episodes do not depend on how many episodes follow, so re-running K episodes
at the card's first seed must give that seed's first K episode means; the tolerance only absorbs
floating-point differences between machines that can flip a sampled action. A change to the model
code that alters behaviour fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from t2mir_model import T2MIRPolicy, read_card, read_family
from training.envs import env_info, task_split
from training.evaluation import evaluate
from training.evaluation.protocol import card_protocol, play_context_rule

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
    protocol = play_context_rule(policy, card_protocol(card, env_info(policy.config.env_id).eval_episodes))
    train_tasks, test_tasks = task_split(policy.config.env_id, protocol.split_seed)
    result = evaluate(
        policy,
        test_tasks if protocol.tasks == "test" else train_tasks,
        EPISODES,
        seed=protocol.seeds[0],
        sample=protocol.sample,
        action_noise=protocol.action_noise,
    )
    first_seed = metrics.get("seed_episode_means", [metrics["episode_means"]])[0]
    expected = np.array(first_seed[:EPISODES])
    spread = max(first_seed) - min(first_seed)
    np.testing.assert_allclose(result.episode_means, expected, atol=TOLERANCE * spread + 1e-6, rtol=0)


@pytest.mark.parametrize("checkpoint", M3DT_CHECKPOINTS, ids=[p.name for p in M3DT_CHECKPOINTS])
def test_m3dt_checkpoint_reproduces_its_card_on_point_robot_tasks(checkpoint):
    """Three Point-Robot goals and two Meta-World tasks the card scores above zero, replayed on the
    card's episodes (fresh goals drawn from its seed), give the card's per-task scores."""
    from training.m3dt.evaluate import evaluate_checkpoints

    torch.set_num_threads(1)
    card = read_card(checkpoint)
    metrics = card["metrics"]
    assert card["training"]["command"].startswith("t2mir train") and card["data"]["dataset_sha256"]
    names = [n for n in card["tasks"] if n.startswith("point-robot")][:3]
    names += [n for n in card["tasks"] if not n.startswith("point-robot") and metrics["per_task"][n] > 0][:2]
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
