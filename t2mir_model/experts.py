"""A bank of feed-forward experts evaluated together with stacked weights.

All experts run on every token in one batched contraction and the gates (zero off the top-k) pick
the mixture. This costs E/k times the FLOPs of a sparse dispatch inside the MoE block, but it has
fixed shapes and no host syncs (DESIGN.md decision 7), and a token's output never depends on which
other tokens share its batch, which keeps cached decoding exactly equal to the full forward. At the
paper's sizes (6 and 8 small experts in one block) the extra cost is a fraction of the attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ExpertBank(nn.Module):
    """E two-layer GELU FFN experts d -> hidden -> out."""

    def __init__(self, n_experts: int, d_model: int, hidden: int, out: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, out))
        self.b2 = nn.Parameter(torch.zeros(n_experts, out))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.w1, std=1.0 / math.sqrt(d_model))
        nn.init.normal_(self.w2, std=1.0 / math.sqrt(hidden))

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        """x (N, d), gates (N, E) -> gate-weighted sum of expert outputs (N, out).

        Batched over experts with the weights in their stored layout (no per-call weight copies)."""
        hidden = F.gelu(torch.matmul(x, self.w1) + self.b1[:, None, :])  # (E, N, hidden)
        out = torch.bmm(hidden, self.w2) + self.b2[:, None, :]  # (E, N, out)
        return self.dropout((out * gates.T.unsqueeze(-1)).sum(0))  # (N, out)
