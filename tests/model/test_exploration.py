"""Seeded exploration noise for continuous actions (t2mir_model.exploration)."""

from __future__ import annotations

import math

import pytest
import torch

from t2mir_model import ActionSpec
from t2mir_model.exploration import MAX_ACTION_NOISE, card_action_noise, check_action_noise, explore

BOX = ActionSpec("continuous", dim=2, low=(-0.1, -2.0), high=(0.1, 2.0))


def test_noise_is_a_function_of_the_seed():
    action = torch.tensor([0.02, -0.5])
    assert torch.equal(explore(action, BOX, 0.3, seed=7), explore(action, BOX, 0.3, seed=7))
    assert not torch.equal(explore(action, BOX, 0.3, seed=7), explore(action, BOX, 0.3, seed=8))
    assert torch.equal(explore(action, BOX, 0.0, seed=7), action)


def test_noise_is_scaled_per_dimension_and_stays_in_the_box():
    action = torch.zeros(2)
    draws = torch.stack([explore(action, BOX, 0.2, seed=s) for s in range(2000)])  # (2000, 2)
    half = torch.tensor([0.1, 2.0])
    std = draws.std(0) / half  # in half-ranges: about 0.2 in both dimensions
    assert torch.allclose(std, torch.full((2,), 0.2), atol=0.02)
    wide = torch.stack([explore(action, BOX, 5.0, seed=s) for s in range(200)])  # (200, 2)
    assert (wide.abs() <= half + 1e-7).all() and (wide.abs() >= half - 1e-7).float().mean() > 0.7


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, MAX_ACTION_NOISE + 1])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="action_noise must be finite"):
        check_action_noise(bad, BOX)


def test_discrete_actions_take_no_noise():
    discrete = ActionSpec("discrete", n=5)
    assert check_action_noise(0, discrete) == 0.0
    with pytest.raises(ValueError, match="applies to continuous actions"):
        check_action_noise(0.1, discrete)


def test_the_cards_noise_is_what_its_numbers_were_measured_with():
    assert card_action_noise({"metrics": {"action_noise": 0.4}}) == 0.4
    assert card_action_noise({"metrics": {"best_episode_mean_return": -8.0}}) == 0.0
    assert card_action_noise({}) == 0.0
