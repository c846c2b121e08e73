"""Plain data returned by the policy: routing statistics, forward outputs, losses."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .routing import cv_squared, normalised_entropy
from .task_moe import TaskRouting
from .token_moe import TokenRouting


@dataclass
class LayerRouting:
    """Routing statistics of one MoE block (DESIGN.md decision 8)."""

    layer: int
    token: TokenRouting | None
    task: TaskRouting | None

    def summary(self) -> dict[str, Tensor]:
        """Scalar tensors (detached) for logging: load CV and normalised usage entropy of each router."""
        out: dict[str, Tensor] = {}
        if self.token is not None:
            usage = self.token.counts.detach().sum(0)
            out["token_load_cv"] = cv_squared(usage).sqrt()
            out["token_entropy"] = normalised_entropy(usage)
        if self.task is not None:
            weights = self.task.weights.detach()
            out["task_load_cv"] = cv_squared(weights).sqrt()
            out["task_entropy"] = normalised_entropy(weights)
        return out


@dataclass
class PolicyOutput:
    """Full-sequence forward result."""

    hidden: Tensor  # (B, T, d) final hidden states
    head: Tensor  # (B, T, width) action logits (discrete) or tanh actions in [-1, 1] (continuous)
    routing: list[LayerRouting]
    balance_loss: Tensor  # () sum of the token-MoE balance losses


@dataclass
class DecodeOutput:
    """Cached-step result for a batch of slots."""

    head: Tensor  # (B, k, width) head output at every new token
    last: Tensor  # (B, width) head output at each row's last new token
    routing: list[LayerRouting]


@dataclass
class LossOutput:
    """Training losses (Algorithm 1 line 14 / Algorithm 3 line 21) and the forward's routing."""

    total: Tensor
    action: Tensor
    balance: Tensor
    contrastive: Tensor
    routing: list[LayerRouting]
    accuracy: Tensor | None  # () action accuracy on labelled tokens (discrete only)
