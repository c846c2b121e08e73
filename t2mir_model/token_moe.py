"""Token-wise MoE (paper 4.1, Appendix B): noisy top-k routing of every token, balance loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .experts import ExpertBank
from .routing import RouterMLP, cv_squared, noisy_logits, smooth_load, top_k_gates


@dataclass
class TokenRouting:
    """Token-router statistics of one forward (tensors, summed over valid tokens)."""

    counts: Tensor  # (3, E) top-k selections by token modality s, a, r
    importance: Tensor  # (E,) sum of gate values (Eq. 12)
    load: Tensor  # (E,) smooth load estimate in training, selection counts otherwise (Eq. 17)
    balance_loss: Tensor  # () w_imp CV^2(importance) + w_load CV^2(load) (Eq. 3)


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

    def gate(self, h: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """h (N, d), weight (N,) -> (gates (N, E), load (E,)); noisy gating only in training."""
        clean = self.router(h)  # (N, E)
        if self.training and self.noisy:
            noisy, noise_std = noisy_logits(clean, h, self.w_noise)
            return top_k_gates(noisy, self.top_k), smooth_load(clean, noisy, noise_std, self.top_k, weight)
        gates = top_k_gates(clean, self.top_k)
        return gates, ((gates > 0).to(h.dtype) * weight[:, None]).sum(0)

    def forward(self, h: Tensor, weight: Tensor, kind: Tensor) -> tuple[Tensor, TokenRouting]:
        """h (B, T, d), weight (B, T) 1 on valid tokens, kind (B, T) modality -> (y (B, T, out), stats)."""
        b, t, d = h.shape
        flat_h = h.reshape(b * t, d)
        flat_w = weight.reshape(b * t).to(h.dtype)
        gates, load = self.gate(flat_h, flat_w)  # (N, E), (E,)
        y = self.experts(flat_h, gates).view(b, t, -1)
        importance = (gates * flat_w[:, None]).sum(0)
        selected = (gates > 0).to(h.dtype) * flat_w[:, None]  # (N, E)
        modality = F.one_hot(kind.reshape(b * t), 3).to(h.dtype)  # (N, 3)
        balance = (
            self.w_imp * cv_squared(importance) + self.w_load * cv_squared(load)
            if self.training
            else h.new_zeros(())
        )
        return y, TokenRouting(
            counts=modality.T @ selected, importance=importance, load=load, balance_loss=balance
        )
