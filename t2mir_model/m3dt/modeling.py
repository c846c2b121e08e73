"""The M3DT policy: Prompt-DT tokens, causal blocks with a soft MoE beside the dense MLP, tanh head.

Sequence of one row (P prompt steps, K window steps, 3 tokens per step)::

    [R̂_p s_p a_p] x P (prompt embeddings)   [R̂_t s_t a_t] x K (window embeddings)

Each token is its modality's embedding plus a learned timestep embedding (no absolute position
embedding); the prompt has its own embeddings. The action a_t is read at the s_t token. Every block
computes ``x + attn(ln(x))`` then ``x + MLP(ln(x)) + MoE(ln(x))``; the MoE mixes all experts with the
router's softmax weights (or its renormalised top-k). ``expert_ids`` forces one expert per row
(stage 2 of training: expert e learns from its task group only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.attention import CausalSelfAttention, full_attention_mask
from ..layers.experts import ExpertBank
from ..layers.feed_forward import FeedForward
from ..layers.routing import top_k_gates
from ..layers.routing_summary import LayerRoutingSummary
from .batch import M3DTBatch
from .checkpoint import load_m3dt, save_m3dt
from .configuration import M3DTConfig
from .prompt import TaskPrompt

ROUTER, EXPERTS = "moe.router", "moe.experts"
"""Name parts of the router and expert parameters (training freezes parts by them)."""


@dataclass(frozen=True)
class M3DTLayerRouting:
    """One block's soft routing over the valid tokens of one forward (tensors, no host syncs)."""

    layer: int
    weights: Tensor  # (E,) router softmax weights summed over valid tokens
    top: Tensor  # (E,) valid tokens whose highest weight is each expert
    entropy: Tensor  # () sum over valid tokens of the entropy (nats) of their weights
    tokens: Tensor  # () valid tokens

    @classmethod
    def summarize(cls, stats: Sequence[Self]) -> LayerRoutingSummary:
        """Sum one layer's statistics of several forwards (float32 on the CPU)."""

        def total(name: str) -> Tensor:
            return torch.stack([getattr(s, name).float() for s in stats]).sum(0).cpu()

        tokens = float(total("tokens"))
        return LayerRoutingSummary(
            layer=stats[0].layer,
            expert_weights=total("weights"),
            expert_top=total("top"),
            mean_entropy=float(total("entropy")) / max(tokens, 1.0),
        )


@dataclass
class M3DTOutput:
    """Actions predicted at every window state token, and each block's routing."""

    actions: Tensor  # (B, K, act_dim) in [-1, 1]
    routing: tuple[M3DTLayerRouting, ...]


class SoftMoE(nn.Module):
    """Router MLP with a softmax over E experts, each a GELU MLP of the block's size."""

    def __init__(self, config: M3DTConfig) -> None:
        super().__init__()
        d, e = config.d_model, config.n_experts
        self.top_k = config.top_k
        self.router = nn.Sequential(
            nn.Linear(d, config.router_hidden), nn.ReLU(), nn.Linear(config.router_hidden, e)
        )
        self.experts = ExpertBank(e, d, config.ffn_mult * d, d, config.dropout)

    def forward(
        self, h: Tensor, valid: Tensor, layer: int, expert_ids: Tensor | None
    ) -> tuple[Tensor, M3DTLayerRouting]:
        """h (B, T, d), valid (B, T) bool, expert_ids (B,) long or None -> (out (B, T, d), routing)."""
        b, t, d = h.shape
        logits = self.router(h)  # (B, T, E)
        weights = torch.softmax(logits, dim=-1)  # (B, T, E)
        if expert_ids is not None:
            out = self._one_expert_per_row(h, expert_ids)
        else:
            gates = top_k_gates(logits, self.top_k) if self.top_k else weights  # (B, T, E)
            out = self.experts(h.reshape(b * t, d), gates.reshape(b * t, -1)).view(b, t, d)
        w = weights.detach() * valid[..., None]  # (B, T, E), padding rows zero
        top = F.one_hot(weights.detach().argmax(-1), weights.shape[-1]) * valid[..., None]  # (B, T, E)
        entropy = -(weights.detach() * torch.log(weights.detach().clamp_min(1e-12))).sum(-1)  # (B, T)
        routing = M3DTLayerRouting(
            layer=layer,
            weights=w.sum((0, 1)),
            top=top.sum((0, 1)),
            entropy=(entropy * valid).sum(),
            tokens=valid.sum(),
        )
        return out, routing

    def _one_expert_per_row(self, h: Tensor, expert_ids: Tensor) -> Tensor:
        """h (B, T, d), expert_ids (B,) -> row b through expert expert_ids[b] alone (B, T, d).

        Equals the bank's mixture with one-hot gates, at the cost of one expert instead of E."""
        bank = self.experts
        w1 = bank.w1.permute(1, 0, 2)[expert_ids]  # (B, d, hidden)
        hidden = F.gelu(torch.baddbmm(bank.b1[expert_ids][:, None], h, w1))  # (B, T, hidden)
        out = torch.baddbmm(bank.b2[expert_ids][:, None], hidden, bank.w2[expert_ids])  # (B, T, d)
        return bank.dropout(out)


class M3DTBlock(nn.Module):
    """Pre-norm block: x + attn(ln1 x), then x + MLP(ln2 x) + MoE(ln2 x)."""

    def __init__(self, config: M3DTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_heads, config.dropout)
        self.mlp = FeedForward(d, config.ffn_mult * d, config.dropout)
        self.moe = SoftMoE(config) if config.moe else None

    def forward(
        self, x: Tensor, mask: Tensor, valid: Tensor, layer: int, expert_ids: Tensor | None, use_moe: bool
    ) -> tuple[Tensor, M3DTLayerRouting | None]:
        """x (B, T, d), mask (B, 1, T, T), valid (B, T) -> (x (B, T, d), routing or None)."""
        x = x + self.attn(self.ln1(x), mask)[0]
        h = self.ln2(x)
        if self.moe is None or not use_moe:
            return x + self.mlp(h), None
        moe_out, routing = self.moe(h, valid, layer, expert_ids)
        return x + self.mlp(h) + moe_out, routing


class _StepEmbedding(nn.Module):
    """Embeddings of the return-to-go, state and action tokens plus a learned timestep embedding."""

    def __init__(self, config: M3DTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.rtg = nn.Linear(1, d)
        self.obs = nn.Linear(config.obs_dim, d)
        self.act = nn.Linear(config.act_dim, d)
        self.time = nn.Embedding(config.max_timestep + 1, d)

    def forward(self, rtg: Tensor, obs: Tensor, act: Tensor, timesteps: Tensor) -> Tensor:
        """rtg (B, n), obs (B, n, o), act (B, n, a), timesteps (B, n) -> (B, 3n, d) as R̂, s, a per step."""
        time = self.time(timesteps)  # (B, n, d)
        tokens = torch.stack(
            [self.rtg(rtg[..., None]) + time, self.obs(obs) + time, self.act(act) + time], dim=2
        )
        return tokens.flatten(1, 2)  # (B, 3n, d)


class M3DTPolicy(nn.Module):
    """M3DT (``config.moe``) or a dense Prompt-DT (``moe=False``) over padded multi-task inputs."""

    def __init__(self, config: M3DTConfig) -> None:
        super().__init__()
        self.config = config
        self.prompt_embed = _StepEmbedding(config)
        self.embed = _StepEmbedding(config)
        self.embed_ln = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(M3DTBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.act_dim)

    def forward(self, batch: M3DTBatch, expert_ids: Tensor | None = None, use_moe: bool = True) -> M3DTOutput:
        """batch (B rows; P prompt, K window steps) -> actions (B, K, act_dim).

        ``expert_ids`` (B,): route every token of row b to expert expert_ids[b] only (stage 2);
        ``use_moe=False``: the backbone alone, without the MoE branch (stage 1)."""
        c = self.config
        scale = c.rtg_scale
        prompt = self.prompt_embed(
            batch.prompt_rtg * scale, batch.prompt_obs, batch.prompt_actions, batch.prompt_timesteps
        )  # (B, 3P, d)
        window = self.embed(batch.rtg * scale, batch.obs, batch.actions, batch.timesteps)  # (B, 3K, d)
        x = self.drop(self.embed_ln(torch.cat([prompt, window], dim=1)))  # (B, T = 3(P + K), d)
        valid = torch.cat([batch.prompt_mask, batch.mask], dim=1).repeat_interleave(3, dim=1)  # (B, T)
        mask = full_attention_mask(valid, torch.zeros_like(valid), dense=False)  # (B, 1, T, T)
        routing = []
        for i, block in enumerate(self.blocks):
            x, stats = block(x, mask, valid, i, expert_ids, use_moe)
            if stats is not None:
                routing.append(stats)
        p = batch.prompt_mask.shape[1]
        states = self.ln_f(x)[:, 3 * p + 1 :: 3]  # (B, K, d): the window's s_t tokens
        return M3DTOutput(actions=torch.tanh(self.head(states)), routing=tuple(routing))

    def loss(
        self, batch: M3DTBatch, expert_ids: Tensor | None = None, use_moe: bool = True
    ) -> tuple[Tensor, M3DTOutput]:
        """MSE of the predicted actions on real window steps and each row's real action dimensions."""
        out = self(batch, expert_ids, use_moe)
        weight = batch.mask[..., None] & batch.action_mask[:, None, :]  # (B, K, a)
        err = (out.actions - batch.actions) ** 2 * weight
        return err.sum() / weight.sum().clamp_min(1), out

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def active_parameters(self) -> int:
        """Parameters one token runs through with one expert per block (top-1), for size matching."""
        if not self.config.moe:
            return self.num_parameters()
        experts = sum(p.numel() for n, p in self.named_parameters() if EXPERTS in n)
        return self.num_parameters() - experts + experts // self.config.n_experts

    def save_pretrained(
        self,
        directory: str | Path,
        card: dict[str, Any] | None = None,
        prompts: Mapping[str, TaskPrompt] | None = None,
    ) -> Path:
        """Write a checkpoint directory: weights, config (``"family": "m3dt"``), card, README and the
        task prompts shipped with the model (`t2mir_model.m3dt.checkpoint`)."""
        return save_m3dt(self, directory, card or {}, prompts or {})

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> M3DTPolicy:
        """Load a checkpoint directory written by `save_pretrained` (refuses missing or extra tensors)."""
        return load_m3dt(cls, directory, map_location)
