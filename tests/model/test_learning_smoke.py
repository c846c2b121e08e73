"""T2MIR-AD learns in context on a tiny multi-task bandit problem within a few hundred CPU steps.

Task = the rewarding arm of a 5-armed bandit (never given to the model). Each learning history is
a sequence of one-step episodes from a noise-distilled learner whose epsilon decays from 1 to 0, so
late actions are the best arm, which the model can only find from the rewards earlier in its context.
"""

from __future__ import annotations

import torch

from t2mir_model import (
    ActionSpec,
    MoEConfig,
    ObservationSpec,
    PolicyBatch,
    T2MIRConfig,
    T2MIRPolicy,
    interleave_steps,
)

ARMS, PULLS = 5, 24


def histories(tasks: torch.Tensor, g: torch.Generator) -> PolicyBatch:
    """Learning histories for tasks (B,) -> PolicyBatch over (B, PULLS) steps."""
    b = tasks.shape[0]
    eps = (1.0 - torch.arange(PULLS) / 14).clamp_min(0.0)  # (PULLS,)
    explore = torch.rand(b, PULLS, generator=g) < eps
    actions = torch.where(explore, torch.randint(0, ARMS, (b, PULLS), generator=g), tasks[:, None])
    rewards = (actions == tasks[:, None]).float()
    tokens = interleave_steps(
        torch.zeros(b, PULLS, 1),
        actions,
        rewards,
        torch.zeros(b, PULLS, dtype=torch.long),
        torch.ones(b, PULLS, dtype=torch.bool),
    )
    return PolicyBatch(tokens, tokens.action, tokens.kind == 0, tasks, dense=True)


def test_in_context_accuracy_rises_far_above_chance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    config = T2MIRConfig(
        observation=ObservationSpec(1),
        action=ActionSpec("discrete", n=ARMS),
        d_model=32,
        n_layers=2,
        ffn_mult=2,
        n_heads=4,
        dropout=0.0,
        max_episode_steps=1,
        context_episodes=PULLS,
        moe=MoEConfig(),
    )
    policy = T2MIRPolicy(config)
    optimiser = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    for _ in range(250):
        tasks = torch.randint(0, ARMS, (32,), generator=g)
        loss = policy.compute_loss(histories(tasks, g), histories(tasks, g))
        optimiser.zero_grad()
        loss.total.backward()
        optimiser.step()
        policy.momentum_update()
    policy.eval()
    tasks = torch.arange(ARMS).repeat(40)
    batch = histories(tasks, g)
    with torch.no_grad():
        predicted = policy(batch.tokens, dense=True).head[:, 0::3].argmax(-1)  # (B, PULLS) at state tokens
    late = predicted[:, 16:] == tasks[:, None]  # the learner has stopped exploring by then
    first = predicted[:, 0] == tasks
    assert late.float().mean() > 0.8  # chance is 0.2
    assert first.float().mean() < 0.5  # with an empty context the arm cannot be known
