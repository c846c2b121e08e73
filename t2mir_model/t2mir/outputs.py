"""Plain data returned by the policy: routing statistics, forward outputs, losses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ..layers.routing import cv_squared, normalised_entropy
from ..layers.routing_summary import LayerRoutingSummary
from .task_moe import TaskRouting
from .token_moe import TokenRouting
from .tokens import MODALITIES


@dataclass
class LayerRouting:
    """Routing statistics of one MoE block (DESIGN.md decision 8)."""

    layer: int
    token: TokenRouting | None
    task: TaskRouting | None

    @classmethod
    def summarize(cls, stats: Sequence[LayerRouting]) -> LayerRoutingSummary:
        """Token counts by modality and task weights of one layer over several forwards, summed in
        one pass each and copied to the CPU (see `t2mir_model.summarize_routing`)."""
        tokens = [s.token for s in stats if s.token is not None]
        tasks = [s.task for s in stats if s.task is not None]
        return LayerRoutingSummary(
            layer=stats[0].layer,
            modalities=MODALITIES if tokens else (),
            token_counts=TokenRouting.merged_counts(tokens).detach().float().cpu() if tokens else None,
            task_weights=TaskRouting.merged_weights(tasks).detach().float().cpu() if tasks else None,
        )

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
