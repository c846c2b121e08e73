"""Task-wise MoE (paper 4.2): experts chosen per trajectory from the causal prefix mean.

The router reads h-bar, the mean hidden state over the valid context tokens up to and including the
current one (DESIGN.md decision 4), so routing is task-level, causal and decodable step by step
with a running sum. A momentum copy of the router (the key router, Eq. 8) encodes the key batch of
the contrastive loss (Eq. 7) and never receives gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from ..layers.experts import ExpertBank
from ..layers.routing import RouterMLP, top_k_gates


def gate_totals(gates: Tensor, valid: Tensor) -> Tensor:
    """gates (..., E), valid (...) bool -> (E,) gate values summed over the valid tokens."""
    return (gates * valid[..., None].to(gates.dtype)).reshape(-1, gates.shape[-1]).sum(0)


@dataclass
class TaskRouting:
    """Task-router logits and gates of one forward; statistics are computed on first access."""

    logits: Tensor  # (B, T, E) router output at every token
    gates: Tensor  # (B, T, E) top-k gates at every token
    valid: Tensor  # (B, T) bool

    @cached_property
    def weights(self) -> Tensor:
        """(E,) task-gate values summed over valid tokens."""
        return gate_totals(self.gates, self.valid)

    @staticmethod
    def merged_weights(stats: Sequence[TaskRouting]) -> Tensor:
        """(E,) task-gate values summed over the valid tokens of several routings, in one pass."""
        n_experts = stats[0].gates.shape[-1]
        return gate_totals(
            torch.cat([s.gates.reshape(-1, n_experts) for s in stats]),
            torch.cat([s.valid.reshape(-1) for s in stats]),
        )

    @cached_property
    def _last(self) -> Tensor:
        """(B,) position of each right-padded row's last valid token."""
        return last_valid_index(self.valid)

    @property
    def gates_last(self) -> Tensor:
        """(B, E) task gates at each row's last valid token."""
        return self.gates[torch.arange(self.gates.shape[0], device=self.gates.device), self._last]

    @property
    def logits_last(self) -> Tensor:
        """(B, E) router output at the last valid token: the router representation z."""
        return self.logits[torch.arange(self.logits.shape[0], device=self.logits.device), self._last]


def prefix_mean(
    h: Tensor, keep: Tensor, query: Tensor | None, prev_sum: Tensor, prev_count: Tensor
) -> tuple[Tensor, Tensor]:
    """Causal mean of context hidden states, continuing a running sum.

    h (B, T, d); keep (B, T) 1 for tokens that join the context; query (B, T) 1 for DPT queries
    (each sees the context plus itself), or None when there are none; prev_sum (B, d) and
    prev_count (B,) from earlier tokens -> (h-bar (B, T, d), new running sum (B, d) after the kept tokens).
    """
    keep = keep.to(h.dtype)
    running = prev_sum[:, None, :] + torch.cumsum(h * keep[..., None], dim=1)  # (B, T, d)
    count = prev_count[:, None].to(h.dtype) + torch.cumsum(keep, dim=1)  # (B, T)
    if query is None:
        return running / count.clamp_min(1.0)[..., None], running[:, -1]
    query = query.to(h.dtype)
    total = running + h * query[..., None]
    return total / (count + query).clamp_min(1.0)[..., None], running[:, -1]


def sequence_mean(h: Tensor, keep: Tensor) -> Tensor:
    """Non-causal whole-row mean (the paper's literal formulation; comparison only). (B, T, d) -> (B, T, d)."""
    keep = keep.to(h.dtype)
    mean = (h * keep[..., None]).sum(1) / keep.sum(1).clamp_min(1.0)[:, None]  # (B, d)
    return mean[:, None, :].expand_as(h)


def last_valid_index(valid: Tensor) -> Tensor:
    """valid (B, T) bool, right-padded -> (B,) position of each row's last valid token (0 if none)."""
    return (valid.sum(1) - 1).clamp_min(0)


def last_valid(x: Tensor, valid: Tensor) -> Tensor:
    """x (B, T, ...) at each right-padded row's last valid position -> (B, ...)."""
    return x[torch.arange(x.shape[0], device=x.device), last_valid_index(valid)]


class TaskMoE(nn.Module):
    """Routes all tokens of a trajectory prefix to the same top-k experts by h-bar."""

    def __init__(
        self, d_model: int, out: int, hidden: int, n_experts: int, top_k: int, dropout: float
    ) -> None:
        super().__init__()
        self.router = RouterMLP(d_model, n_experts)
        self.key_router = RouterMLP(d_model, n_experts)
        self.key_router.load_state_dict(self.router.state_dict())
        self.key_router.requires_grad_(False)
        self.bilinear = nn.Parameter(torch.eye(n_experts))
        self.experts = ExpertBank(n_experts, d_model, hidden, out, dropout)
        self.top_k = top_k

    def forward(self, h: Tensor, h_bar: Tensor, valid: Tensor) -> tuple[Tensor, TaskRouting]:
        """h, h_bar (B, T, d); valid (B, T) bool -> (y (B, T, out), routing)."""
        b, t, d = h.shape
        logits = self.router(h_bar)  # (B, T, E)
        gates = top_k_gates(logits, self.top_k)  # (B, T, E)
        y = self.experts(h.reshape(b * t, d), gates.reshape(b * t, -1)).view(b, t, -1)
        return y, TaskRouting(logits, gates, valid)

    @torch.no_grad()
    def momentum_update(self, beta: float) -> None:
        """key <- beta * key + (1 - beta) * query (Eq. 8)."""
        for key, query in zip(self.key_router.parameters(), self.router.parameters(), strict=True):
            key.lerp_(query, 1.0 - beta)


def info_nce(query: Tensor, key: Tensor, bilinear: Tensor, query_task: Tensor, key_task: Tensor) -> Tensor:
    """Contrastive loss of Eq. 7 with bilinear scores q^T W k.

    query (B, E) router representations (with gradient), key (B', E) from the key router,
    bilinear (E, E), query_task (B,), key_task (B',) task ids -> mean loss (). Positives of a query
    are all keys of its task; every query must have at least one.
    """
    scores = query @ bilinear @ key.T  # (B, B')
    positive = query_task[:, None] == key_task[None, :]  # (B, B')
    pos_scores = scores.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(scores, dim=1) - torch.logsumexp(pos_scores, dim=1)).mean()
