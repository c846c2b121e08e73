"""Routers and gating maths shared by the token-wise and task-wise MoE (paper Eq. 1-4, 12-18).

Everything here works on fixed-shape tensors: no ``.item()``, no data-dependent Python control flow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RouterMLP(nn.Module):
    """Router network of Appendix F: Linear(d, E, no bias) -> Tanh -> Linear(E, E, no bias)."""

    def __init__(self, d_model: int, n_experts: int) -> None:
        super().__init__()
        self.inner = nn.Linear(d_model, n_experts, bias=False)
        self.outer = nn.Linear(n_experts, n_experts, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        """h (..., d) -> router logits (..., E)."""
        return self.outer(torch.tanh(self.inner(h)))


def top_k_gates(logits: Tensor, k: int) -> Tensor:
    """Softmax over the top-k logits only; zero elsewhere (Eq. 1). logits (..., E) -> gates (..., E)."""
    values, index = logits.topk(k, dim=-1)  # (..., k)
    return torch.zeros_like(logits).scatter(-1, index, torch.softmax(values, dim=-1))


def smooth_load(clean: Tensor, noisy: Tensor, noise_std: Tensor, k: int, weight: Tensor) -> Tensor:
    """Shazeer's differentiable estimate of how many tokens each expert receives (Eq. 15-17).

    clean, noisy, noise_std (N, E); weight (N,) 0/1 token mask -> load (E,). P(i; h) is the
    probability that expert i stays in the top-k when its own noise is redrawn, the others fixed:
    the threshold is the k-th largest noisy logit excluding i, which is the (k+1)-th largest when i
    is currently in the top-k and the k-th largest otherwise.
    """
    n_experts = clean.shape[-1]
    if k >= n_experts:
        return weight.sum() * torch.ones(n_experts, dtype=clean.dtype, device=clean.device)
    top = noisy.topk(k + 1, dim=-1).values  # (N, k+1)
    threshold_if_in = top[:, k : k + 1]  # (N, 1)
    threshold_if_out = top[:, k - 1 : k]  # (N, 1)
    normal = torch.distributions.Normal(0.0, 1.0)
    prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
    prob = torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out)  # (N, E)
    return (prob * weight[:, None]).sum(0)


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation (population variance / mean^2) of a vector (E,) -> ()."""
    if x.numel() < 2:
        return x.new_zeros(())
    return x.var(correction=0) / (x.mean() ** 2 + 1e-10)


def usage_entropy(usage: Tensor) -> Tensor:
    """Entropy in nats of the normalised expert usage (..., E) -> (...); log(E) when balanced."""
    p = usage / usage.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def normalised_entropy(usage: Tensor) -> Tensor:
    """usage_entropy divided by log(E): 1 for balanced use, 0 when one expert takes everything."""
    n = usage.shape[-1]
    return usage_entropy(usage) / math.log(n) if n > 1 else usage.new_ones(usage.shape[:-1])


def noisy_logits(clean: Tensor, h: Tensor, w_noise: nn.Linear) -> tuple[Tensor, Tensor]:
    """Noisy gating of Eq. 14: clean (N, E), h (N, d) -> (noisy logits, noise std), both (N, E)."""
    noise_std = F.softplus(w_noise(h)) + 1e-6
    return clean + torch.randn_like(clean) * noise_std, noise_std
