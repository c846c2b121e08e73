"""Changing a token after position t never changes an output at or before t."""

from __future__ import annotations

import pytest
import torch
from model_factory import random_steps, tiny_policy

from t2mir_model import append_queries


def perturb_after(tokens, t: int, seed: int):
    """A copy of a one-row TokenBatch whose tokens after position t get new random values."""
    g = torch.Generator().manual_seed(seed)
    out = type(tokens)(*(x.clone() for x in vars(tokens).values()))
    k = out.kind.shape[1] - t - 1
    out.obs[:, t + 1 :] = torch.randn(out.obs[:, t + 1 :].shape, generator=g)
    out.reward[:, t + 1 :] = torch.randn(1, k, generator=g)
    if out.action.dtype == torch.long:
        out.action[:, t + 1 :] = torch.randint(0, 5, (1, k), generator=g)
    else:
        out.action[:, t + 1 :] = torch.rand(out.action[:, t + 1 :].shape, generator=g) * 4 - 2
    return out


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
def test_outputs_up_to_t_ignore_later_tokens(backbone):
    policy = tiny_policy(backbone=backbone)
    tokens = random_steps(policy.config, 10, seed=3)
    with torch.no_grad():
        base = policy(tokens)
        for t in (0, 4, 13, 28):
            changed = policy(perturb_after(tokens, t, seed=t))
            torch.testing.assert_close(changed.head[:, : t + 1], base.head[:, : t + 1], atol=1e-6, rtol=0)
            torch.testing.assert_close(changed.hidden[:, : t + 1], base.hidden[:, : t + 1], atol=1e-6, rtol=0)
            assert not torch.allclose(changed.head[:, t + 1 :], base.head[:, t + 1 :])


def test_dpt_queries_do_not_see_each_other():
    policy = tiny_policy(backbone="dpt")
    config = policy.config
    prompt = random_steps(config, 6, seed=1)
    ones = torch.ones(1, 2, dtype=torch.bool)
    a = append_queries(prompt, torch.randn(1, 2, 4), torch.tensor([[1, 2]]), ones)
    b = append_queries(
        prompt, torch.cat([a.obs[:, -2:-1], torch.randn(1, 1, 4)], 1), torch.tensor([[1, 3]]), ones
    )
    with torch.no_grad():
        torch.testing.assert_close(policy(a).head[0, 18], policy(b).head[0, 18], atol=1e-6, rtol=0)


def test_sequence_mean_routing_leaks_the_future():
    """The paper's whole-trajectory mean is not causal; it exists for comparison only."""
    policy = tiny_policy(task_routing="sequence", token_moe=False)
    tokens = random_steps(policy.config, 10, seed=3)
    with torch.no_grad():
        base = policy(tokens).head
        changed = policy(perturb_after(tokens, 4, seed=9)).head
    assert not torch.allclose(changed[:, :5], base[:, :5])
