"""A bank of feed-forward experts evaluated together with stacked weights.

All experts run on every token as two plain matrix products and the gates (zero off the top-k)
pick the mixture: the first layers of all experts are one (d, E * hidden) matrix; gating each
expert's hidden units before the second layer turns the gate-weighted sum of expert outputs into one
(E * hidden, out) product, since sum_e g_e (W2_e h_e + b2_e) = [g_1 h_1, ..., g_E h_E] W2 + g b2. This costs E/k times the FLOPs of a sparse dispatch inside the MoE block, but it has
fixed shapes and no host syncs (DESIGN.md decision 7), and a token's output never depends on which
other tokens share its batch, which keeps cached decoding exactly equal to the full forward. At the
paper's sizes (6 and 8 small experts in one block) the extra cost is a fraction of the attention.

Training may switch a bank to sparse dispatch (``ExpertBank.sparse``, set by ``t2mir train
expert_dispatch=sparse``): in training mode each expert then runs on its selected tokens only. The
mixture and its gradients are the same up to float rounding (unselected gates are zero and carry
no gradient to the router either way); it costs one host sync per call and pays off where the
dense banks dominate a step, as on CPU. Evaluation mode always takes the dense path.
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
        self.w1 = nn.Parameter(torch.empty(d_model, n_experts, hidden))  # expert e's first layer: w1[:, e]
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, out))
        self.b2 = nn.Parameter(torch.zeros(n_experts, out))
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.w1, std=1.0 / math.sqrt(d_model))
        nn.init.normal_(self.w2, std=1.0 / math.sqrt(hidden))
        self.sparse = False

    def extra_repr(self) -> str:
        n_experts, hidden, out = self.w2.shape
        return f"experts={n_experts}, hidden={hidden}, out={out}, sparse={self.sparse}"

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        """x (N, d), gates (N, E) -> gate-weighted sum of expert outputs (N, out).

        The weights are read in their stored layout (views, no per-call copies)."""
        if self.sparse and self.training:
            return self.dropout(self._sparse_mixture(x, gates))
        n, (d, n_experts, hidden) = x.shape[0], self.w1.shape
        h = F.gelu(torch.addmm(self.b1.view(-1), x, self.w1.view(d, -1)))  # (N, E * hidden)
        h = h.view(n, n_experts, hidden) * gates[:, :, None]  # (N, E, hidden) gated per expert
        out = torch.addmm(gates @ self.b2, h.view(n, -1), self.w2.view(n_experts * hidden, -1))  # (N, out)
        return self.dropout(out)

    def _sparse_mixture(self, x: Tensor, gates: Tensor) -> Tensor:
        """x (N, d), gates (N, E) -> (N, out), each expert applied to its selected tokens only.

        Every expert runs, on zero rows when nobody chose it, so all parameters stay in the autograd
        graph (data-parallel training needs a gradient, if zero, for each of them)."""
        n_experts = self.w2.shape[0]
        token, expert = gates.nonzero(as_tuple=True)  # (S,), (S,) selected (token, expert) pairs
        token = token[torch.argsort(expert, stable=True)]  # grouped by expert
        counts = torch.bincount(expert, minlength=n_experts).tolist()  # the one host sync
        out = x.new_zeros(x.shape[0], self.w2.shape[2])
        for e, rows in enumerate(token.split(counts)):
            h = F.gelu(torch.addmm(self.b1[e], x[rows], self.w1[:, e]))  # (S_e, hidden)
            y = torch.addmm(self.b2[e], h, self.w2[e])  # (S_e, out)
            out = out.index_add(0, rows, y * gates[rows, e, None])
        return out


def set_sparse_dispatch(model: nn.Module, enabled: bool) -> int:
    """Switch every expert bank in ``model`` to sparse (True) or dense (False) dispatch in training
    mode; returns how many banks there are."""
    banks = [m for m in model.modules() if isinstance(m, ExpertBank)]
    for bank in banks:
        bank.sparse = enabled
    return len(banks)
