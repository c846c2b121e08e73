"""Token-wise MoE (paper 4.1, Appendix B): noisy top-k routing of every token, balance loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.experts import ExpertBank
from ..layers.routing import RouterMLP, cv_squared, noisy_logits, smooth_load, top_k_gates
from .tokens import MODALITIES


def selections(gates: Tensor, weight: Tensor) -> Tensor:
    """gates (N, E), weight (N,) 1 on valid tokens -> (N, E) 1 where a valid token selected the expert."""
    return (gates > 0).to(gates.dtype) * weight[:, None]


def modality_counts(gates: Tensor, weight: Tensor, kind: Tensor) -> Tensor:
    """gates (N, E), weight (N,), kind (N,) token modality -> (3, E) top-k selections by modality."""
    modality = F.one_hot(kind, len(MODALITIES)).to(gates.dtype)  # (N, 3)
    return modality.T @ selections(gates, weight)


@dataclass
class TokenRouting:
    """Token-router gates of one forward and the statistics summed over its valid tokens.

    The statistics are computed on first access, so a decoding step that nobody inspects (or whose
    statistics are read later, off the answer path) pays only for the gates it needed anyway."""

    gates: Tensor  # (N, E) gate values of every token, zero off its top-k
    weight: Tensor  # (N,) 1 on valid tokens
    kind: Tensor  # (N,) long token modality s, a, r
    balance_loss: Tensor  # () w_imp CV^2(importance) + w_load CV^2(load) (Eq. 3); 0 outside training
    smooth_load: Tensor | None = None  # (E,) differentiable load estimate (Eq. 17), noisy training only

    @cached_property
    def importance(self) -> Tensor:
        """(E,) sum of gate values over valid tokens (Eq. 12)."""
        return (self.gates * self.weight[:, None]).sum(0)

    @cached_property
    def selected(self) -> Tensor:
        """(N, E) 1 where a valid token selected the expert."""
        return selections(self.gates, self.weight)

    @cached_property
    def counts(self) -> Tensor:
        """(3, E) top-k selections by token modality s, a, r."""
        return modality_counts(self.gates, self.weight, self.kind)

    @staticmethod
    def merged_counts(stats: Sequence[TokenRouting]) -> Tensor:
        """(3, E) top-k selections by token modality over several routings, in one pass."""
        return modality_counts(
            torch.cat([s.gates for s in stats]),
            torch.cat([s.weight for s in stats]),
            torch.cat([s.kind for s in stats]),
        )

    @property
    def load(self) -> Tensor:
        """(E,) the smooth load estimate in noisy training, selection counts otherwise (Eq. 17)."""
        return self.smooth_load if self.smooth_load is not None else self.selected.sum(0)


class TokenMoE(nn.Module):
    """Routes each token to its top-k of E experts by its own hidden state."""

    def __init__(
        self,
        d_model: int,
        out: int,
        hidden: int,
        n_experts: int,
        top_k: int,
        noisy: bool,
        w_imp: float,
        w_load: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.router = RouterMLP(d_model, n_experts)
        self.w_noise = nn.Linear(d_model, n_experts, bias=False)
        nn.init.zeros_(self.w_noise.weight)
        self.experts = ExpertBank(n_experts, d_model, hidden, out, dropout)
        self.top_k = top_k
        self.noisy = noisy
        self.w_imp = w_imp
        self.w_load = w_load

    def gate(self, h: Tensor, weight: Tensor) -> tuple[Tensor, Tensor | None]:
        """h (N, d), weight (N,) -> (gates (N, E), smooth load (E,) or None); noisy only in training."""
        clean = self.router(h)  # (N, E)
        if self.training and self.noisy:
            noisy, noise_std = noisy_logits(clean, h, self.w_noise)
            return top_k_gates(noisy, self.top_k), smooth_load(clean, noisy, noise_std, self.top_k, weight)
        return top_k_gates(clean, self.top_k), None

    def forward(self, h: Tensor, weight: Tensor, kind: Tensor) -> tuple[Tensor, TokenRouting]:
        """h (B, T, d), weight (B, T) 1 on valid tokens, kind (B, T) modality -> (y (B, T, out), stats)."""
        b, t, d = h.shape
        flat_h = h.reshape(b * t, d)
        flat_w = weight.reshape(b * t).to(h.dtype)
        gates, load = self.gate(flat_h, flat_w)  # (N, E), (E,) or None
        y = self.experts(flat_h, gates).view(b, t, -1)
        stats = TokenRouting(gates, flat_w, kind.reshape(b * t), h.new_zeros(()), load)
        if self.training:
            stats.balance_loss = self.w_imp * cv_squared(stats.importance) + self.w_load * cv_squared(
                stats.load
            )
        return y, stats
