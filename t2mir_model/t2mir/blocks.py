"""Pre-norm transformer blocks; an MoE block puts token-wise and task-wise MoE side by side.

x ──► LN ─► attention ─► + ──► LN ─► h ─┬─► token MoE (d/2) ─┐
└──────────────────────────┘            │                     concat ─► + ─► x'
                                        └─► task MoE  (d/2) ─┘        │
(residual around each sublayer) ─────────────────────────────────────┘
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers.attention import CausalSelfAttention
from ..layers.feed_forward import FeedForward
from .configuration import T2MIRConfig
from .outputs import LayerRouting
from .task_moe import TaskMoE, prefix_mean, sequence_mean
from .token_moe import TokenMoE


@dataclass
class BlockContext:
    """Per-token facts every block needs, computed once per forward."""

    valid: Tensor  # (B, T) bool
    keep: Tensor  # (B, T) bool: tokens that join the context (valid and not a query)
    query: Tensor | None  # (B, T) bool DPT queries; None for a backbone without queries (AD)
    kind: Tensor  # (B, T) long modality
    prev_count: Tensor  # (B,) context tokens before this chunk (0 for a full forward)
    prev_sums: dict[int, Tensor]  # layer -> (B, d) running sums of h before this chunk (cached mode)


class MoELayer(nn.Module):
    """Token-wise MoE in parallel with task-wise MoE, outputs concatenated (Fig. 2a)."""

    def __init__(self, config: T2MIRConfig, layer: int) -> None:
        super().__init__()
        moe, d = config.moe, config.d_model
        both = moe.token_moe and moe.task_moe
        width = d // 2 if both else d
        hidden = config.ffn_mult * width
        self.layer = layer
        self.sequence_routing = moe.task_routing == "sequence"
        self.token: TokenMoE | None = (
            TokenMoE(
                d,
                width,
                hidden,
                moe.token_experts,
                moe.token_top_k,
                moe.noisy_gating,
                moe.w_imp,
                moe.w_load,
                config.dropout,
            )
            if moe.token_moe
            else None
        )
        self.task: TaskMoE | None = (
            TaskMoE(d, width, hidden, moe.task_experts, moe.task_top_k, config.dropout)
            if moe.task_moe
            else None
        )

    def task_input(self, h: Tensor, ctx: BlockContext) -> tuple[Tensor, Tensor]:
        """h (B, T, d) -> (h-bar (B, T, d), running sum after the chunk (B, d))."""
        prev = ctx.prev_sums.get(self.layer)
        if prev is None:
            prev = h.new_zeros(h.shape[0], h.shape[2])
        if self.sequence_routing:
            return sequence_mean(h, ctx.keep), prev
        return prefix_mean(h, ctx.keep, ctx.query, prev, ctx.prev_count)

    def forward(self, h: Tensor, ctx: BlockContext) -> tuple[Tensor, LayerRouting, Tensor | None]:
        """h (B, T, d) -> (y (B, T, d), routing, new running sum (B, d) or None)."""
        parts, token_stats, task_stats, new_sum = [], None, None, None
        if self.token is not None:
            y_token, token_stats = self.token(h, ctx.valid, ctx.kind)
            parts.append(y_token)
        if self.task is not None:
            h_bar, new_sum = self.task_input(h, ctx)
            y_task, task_stats = self.task(h, h_bar, ctx.valid)
            parts.append(y_task)
        return torch.cat(parts, dim=-1), LayerRouting(self.layer, token_stats, task_stats), new_sum


Attend = Callable[[CausalSelfAttention, Tensor], Tensor]


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + FFN-or-MoE(LN(x))."""

    def __init__(self, config: T2MIRConfig, layer: int, use_moe: bool) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_heads, config.dropout)
        self.ln2 = nn.LayerNorm(d)
        self.moe: MoELayer | None = MoELayer(config, layer) if use_moe else None
        self.ffn: FeedForward | None = (
            None if use_moe else FeedForward(d, config.ffn_mult * d, config.dropout)
        )

    def attend(self, x: Tensor, attend: Attend) -> tuple[Tensor, Tensor]:
        """Attention sublayer: x (B, T, d) -> (x + attn(LN(x)), h = LN(that)), both (B, T, d)."""
        x = x + attend(self.attn, self.ln1(x))
        return x, self.ln2(x)

    def mix(
        self, x: Tensor, h: Tensor, ctx: BlockContext
    ) -> tuple[Tensor, LayerRouting | None, Tensor | None]:
        """FFN / MoE sublayer -> (x' (B, T, d), routing or None, new task-router running sum or None)."""
        if self.moe is not None:
            y, routing, new_sum = self.moe(h, ctx)
            return x + y, routing, new_sum
        assert self.ffn is not None  # __init__ builds exactly one of moe / ffn
        return x + self.ffn(h), None, None

    def forward(
        self, x: Tensor, ctx: BlockContext, attend: Attend
    ) -> tuple[Tensor, LayerRouting | None, Tensor | None]:
        """x (B, T, d) -> (x' (B, T, d), routing or None, new task-router running sum or None)."""
        return self.mix(*self.attend(x, attend), ctx)
