"""Seeded exploration, shared by evaluation, the engine and the server.

Discrete heads explore by sampling their categorical distribution (`sample_discrete`: a Gumbel-max
draw from a seed, so a step's action is a pure function of its logits and seed). The continuous head is a tanh
mean (paper, Appendix E) with nothing to sample, so a policy trained on histories whose learners
explored by sampling (``t2mir collect --snapshot-actions stochastic``) plays its mean plus
Gaussian noise of ``scale`` half-ranges of the action box, clipped to the box. The noise of a step
is a pure function of its seed, so an evaluation is repeatable and every server replica answers a
retried step alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .t2mir.configuration import ActionSpec

MAX_ACTION_NOISE = 10.0
"""Largest accepted scale: beyond a few half-ranges every action is clipped to a corner anyway."""


def sample_discrete(logits: Tensor, seed: int | None) -> Tensor:
    """Logits (n,) -> a discrete action (): the argmax without a seed, else a Gumbel-max sample
    drawn from ``seed`` alone."""
    if seed is None:
        return logits.argmax(-1)
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(logits.shape, generator=generator).clamp(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(uniform))
    return (torch.log_softmax(logits, -1) + gumbel).argmax(-1)


def check_action_noise(scale: float, action: ActionSpec) -> float:
    """``scale`` as a float if it is valid for ``action``; raises ValueError naming the problem."""
    scale = float(scale)
    if not (math.isfinite(scale) and 0.0 <= scale <= MAX_ACTION_NOISE):
        raise ValueError(f"action_noise must be finite and in [0, {MAX_ACTION_NOISE}], got {scale}")
    if scale > 0 and action.is_discrete:
        raise ValueError("action_noise applies to continuous actions; discrete actions are sampled")
    return scale


def explore(action: Tensor, spec: ActionSpec, scale: float, seed: int) -> Tensor:
    """``action`` (act_dim,) plus seeded Gaussian noise of ``scale`` half-ranges, clipped to the box."""
    low = torch.tensor(spec.low, dtype=action.dtype)  # (act_dim,)
    high = torch.tensor(spec.high, dtype=action.dtype)  # (act_dim,)
    generator = torch.Generator().manual_seed(int(seed) & (2**63 - 1))
    draw = torch.randn(action.shape, generator=generator, dtype=action.dtype)  # (act_dim,)
    return torch.minimum(torch.maximum(action + draw * scale * (high - low) / 2, low), high)


def card_action_noise(card: dict[str, Any]) -> float:
    """The exploration noise a model card's measured numbers were played with (0 when none)."""
    return float(card.get("metrics", {}).get("action_noise", 0.0))
