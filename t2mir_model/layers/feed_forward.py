"""The position-wise feed-forward sublayer of a transformer block."""

from __future__ import annotations

from torch import Tensor, nn


class FeedForward(nn.Module):
    """GELU FFN d -> hidden -> d."""

    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model), nn.Dropout(dropout)
        )

    def forward(self, h: Tensor) -> Tensor:
        """h (B, T, d) -> (B, T, d)."""
        return self.net(h)
