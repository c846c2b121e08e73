"""The T2MIR policy: embeddings, causal transformer with MoE blocks, action head, losses, decoding.

``forward`` runs a whole token sequence (training, reference); ``decode`` appends tokens to cached
slots and reads the action at each row's last token (evaluation, serving). Both run the same blocks
through the same masks, so decoding reproduces the full forward (DESIGN.md decision 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..layers.attention import FEW_QUERIES, CachedStep, cached_attention_mask, full_attention_mask
from ..layers.kv_cache import KVCache, SlotIndex, SlotWindow, StepRow
from .blocks import BlockContext, MoELayer, TransformerBlock
from .configuration import T2MIRConfig
from .embeddings import TokenEmbedding
from .outputs import DecodeOutput, LayerRouting, LossOutput, PolicyOutput
from .task_moe import TaskMoE, info_nce, last_valid
from .tokens import TokenBatch


@dataclass
class PolicyBatch:
    """Tokens plus action labels at the tokens that predict an action.

    AD: every state token is labelled with the action taken (Eq. 10). DPT: the query tokens are
    labelled with the expert action (Eq. 11). ``task_ids`` pair query and key batches (Eq. 7).
    """

    tokens: TokenBatch  # (B, K)
    targets: Tensor  # (B, K) long or (B, K, act_dim) raw action units
    target_mask: Tensor  # (B, K) bool
    task_ids: Tensor  # (B,) long
    dense: bool = False  # every token valid and no queries: plain causal attention

    def to(self, device: torch.device | str) -> PolicyBatch:
        """The same batch on another device."""
        return PolicyBatch(
            self.tokens.to(device),
            self.targets.to(device),
            self.target_mask.to(device),
            self.task_ids.to(device),
            self.dense,
        )


class T2MIRPolicy(nn.Module):
    """T2MIR-AD / T2MIR-DPT policy (and the ablations, by config)."""

    def __init__(self, config: T2MIRConfig) -> None:
        super().__init__()
        self.config = config
        moe_layers = set(config.moe.layer_indices(config.n_layers))
        self.embed = TokenEmbedding(config)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config, i, i in moe_layers) for i in range(config.n_layers)
        )
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.action.width)
        self.task_layers = tuple(i for i in sorted(moe_layers) if config.moe.task_moe)

    def block(self, layer: int) -> TransformerBlock:
        """Transformer block ``layer`` (0-based)."""
        block = self.blocks[layer]
        assert isinstance(block, TransformerBlock)  # __init__ fills self.blocks with TransformerBlocks only
        return block

    def _task_moe(self, layer: int) -> tuple[MoELayer, TaskMoE]:
        """The MoE layer of block ``layer`` (one of ``task_layers``) and its task MoE."""
        moe = self.block(layer).moe
        if moe is None or moe.task is None:
            raise ValueError(f"layer {layer} has no task MoE")
        return moe, moe.task

    # ----------------------------------------------------------------- full sequence
    def _context(self, tokens: TokenBatch, prev_count: Tensor, prev_sums: dict[int, Tensor]) -> BlockContext:
        return BlockContext(
            valid=tokens.valid,
            keep=tokens.valid & ~tokens.query if self.config.backbone == "dpt" else tokens.valid,
            query=tokens.query if self.config.backbone == "dpt" else None,
            kind=tokens.kind,
            prev_count=prev_count,
            prev_sums=prev_sums,
        )

    def _head(self, x: Tensor) -> Tensor:
        """Final hidden (..., d) -> logits, or tanh actions in [-1, 1] (..., width)."""
        out = self.head(self.ln_f(x))
        return out if self.config.action.is_discrete else torch.tanh(out)

    def forward(self, tokens: TokenBatch, dense: bool = False) -> PolicyOutput:
        """Run a whole right-padded token batch (B, K). ``dense`` declares every token valid and no
        queries, which allows plain causal attention (and flash kernels)."""
        mask = full_attention_mask(tokens.valid, tokens.query, dense)
        ctx = self._context(tokens, torch.zeros_like(tokens.valid[:, 0], dtype=torch.long), {})
        x = self.embed_dropout(self.embed(tokens))  # (B, K, d)
        routing: list[LayerRouting] = []
        for block in self.blocks:
            x, layer_routing, _ = block(x, ctx, lambda attn, xn: attn(xn, mask)[0])
            if layer_routing is not None:
                routing.append(layer_routing)
        balance = sum((r.token.balance_loss for r in routing if r.token is not None), x.new_zeros(()))
        return PolicyOutput(hidden=x, head=self._head(x), routing=routing, balance_loss=balance)

    @torch.no_grad()
    def key_representations(self, tokens: TokenBatch, dense: bool = False) -> dict[int, Tensor]:
        """Momentum key-router representation z' of each row for every task-MoE layer: {layer: (B, E)}.

        Stops after the last task-MoE router, so the key batch costs less than a full forward."""
        mask = full_attention_mask(tokens.valid, tokens.query, dense)
        ctx = self._context(tokens, torch.zeros_like(tokens.valid[:, 0], dtype=torch.long), {})
        x = self.embed_dropout(self.embed(tokens))
        reps: dict[int, Tensor] = {}
        for i in range(len(self.blocks)):
            block = self.block(i)
            x, h = block.attend(x, lambda attn, xn: attn(xn, mask)[0])
            if i in self.task_layers:
                moe, task = self._task_moe(i)
                h_bar, _ = moe.task_input(h, ctx)  # (B, T, d)
                reps[i] = task.key_router(last_valid(h_bar, tokens.valid))  # (B, E)
                if i == self.task_layers[-1]:
                    break
            x, _, _ = block.mix(x, h, ctx)
        return reps

    def compute_loss(self, batch: PolicyBatch, keys: PolicyBatch | None = None) -> LossOutput:
        """Imitation loss + balance loss + w_con * contrastive loss (Algorithms 1 and 3).

        ``keys`` is the key batch: other trajectories of the same tasks; without it (or without a
        task MoE) the contrastive term is zero."""
        out = self.forward(batch.tokens, dense=batch.dense)
        mask = batch.target_mask
        accuracy = None
        if self.config.action.is_discrete:
            logits = out.head[mask]  # (M, n)
            labels = batch.targets[mask]  # (M,)
            action_loss = F.cross_entropy(logits, labels)
            accuracy = (logits.argmax(-1) == labels).float().mean()
        else:
            target = self.embed.normalise_action(batch.targets).clamp(-1.0, 1.0)
            action_loss = F.mse_loss(out.head[mask], target[mask])
        contrastive = out.hidden.new_zeros(())
        if keys is not None and self.task_layers and self.config.moe.w_con > 0:
            key_reps = self.key_representations(keys.tokens, dense=keys.dense)
            terms = [
                info_nce(
                    r.task.logits_last,
                    key_reps[r.layer],
                    self._task_moe(r.layer)[1].bilinear,
                    batch.task_ids,
                    keys.task_ids,
                )
                for r in out.routing
                if r.task is not None
            ]
            contrastive = torch.stack(terms).mean()
        total = action_loss + out.balance_loss + self.config.moe.w_con * contrastive
        return LossOutput(total, action_loss, out.balance_loss, contrastive, out.routing, accuracy)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """Move every key router toward its query router (Eq. 8); call after each optimiser step."""
        for layer in self.task_layers:
            self._task_moe(layer)[1].momentum_update(self.config.moe.momentum)

    # ----------------------------------------------------------------- cached decoding
    def new_cache(
        self, num_slots: int, max_tokens: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """A KV cache on this policy's device for ``num_slots`` sessions."""
        param = next(self.parameters())
        return KVCache(
            self.config,
            num_slots,
            max_tokens,
            device=param.device,
            dtype=dtype or param.dtype,
            route_layers=self.task_layers,
        )

    @staticmethod
    def _cached_step(cache: KVCache, rows: list[StepRow], k: int, dtype: torch.dtype) -> CachedStep:
        """Index tensors and the attention mask of one decode step of ``k`` tokens a row, built once
        for all layers from host data in one host-to-device copy."""
        device = cache.device
        slots = [r.slot for r in rows]
        window = SlotWindow.plan(slots, device)
        cache.reads.count(window, len(rows))
        lengths = [cache.lengths[s] for s in slots]
        kv_len = max(n + r.n_tokens for n, r in zip(lengths, rows, strict=True))
        held = window.host_rows(slots)  # window row -> batch row or None (padding)
        facts = torch.tensor(
            [
                (slots[b], lengths[b], rows[b].n_commit, rows[b].n_tokens) if b is not None else (0, 0, 0, 0)
                for b in held
            ],
            device=device,
        )  # (R, 4) per window row: slot, cached length, context tokens, valid tokens
        slot_w, lengths_w, n_commit_w, n_tokens_w = facts.unbind(1)  # (R,) each
        mask = cached_attention_mask(lengths_w, n_commit_w, n_tokens_w, k, kv_len, dtype)  # (R, 1, k, kv)
        if window.place is None:  # window row b is batch row b
            slot_b, lengths_b, n_tokens_b = slot_w, lengths_w, n_tokens_w
        else:
            slot_b, lengths_b, _, n_tokens_b = window.take_rows(facts).unbind(1)  # (B,) each
        index = SlotIndex(slot_b, tuple(slots))
        heads = cache.values.shape[2]
        scores = mask.new_empty(window.rows, heads, k, kv_len) if k <= FEW_QUERIES else None  # (R, H, k, kv)
        if len(rows) == 1 and rows[0].n_tokens == k:  # one unpadded row: a contiguous run of positions
            return CachedStep(index, lengths_b, lengths[0], window, kv_len, mask, scores)
        steps = torch.arange(k, device=device)[None, :]  # (1, k)
        write_pos = torch.where(steps < n_tokens_b[:, None], lengths_b[:, None] + steps, cache.max_tokens)
        gathered = cache.gather_workspace(window.rows, kv_len) if window.gather is not None else None
        return CachedStep(index, lengths_b, write_pos, window, kv_len, mask, scores, gathered)

    def decode(self, cache: KVCache, rows: Sequence[StepRow], tokens: TokenBatch) -> DecodeOutput:
        """Append tokens to cached slots and read the head at every new token.

        tokens (B, k): row b holds rows[b].n_commit context tokens, then rows[b].n_query query
        tokens (``tokens.query`` set), then padding (``tokens.valid`` False). To rebuild a slot,
        reset it and append its whole context in one row.
        """
        if self.training:
            raise RuntimeError("decode() needs eval mode: call policy.eval() first")
        if self.config.moe.task_routing != "prefix":
            raise ValueError("cached decoding needs causal task routing (moe.task_routing='prefix')")
        rows = list(rows)
        b, k = tokens.shape
        if len(rows) != b:
            raise ValueError(f"{len(rows)} rows for a token batch of {b}")
        cache.check(rows, k)
        x = self.embed(tokens)  # (B, k, d)
        step = self._cached_step(cache, rows, k, x.dtype)
        sums = {layer: step.slots.read(s) for layer, s in cache.route_sums.items()}  # (B, d) each
        ctx = self._context(tokens, step.lengths, sums)
        routing: list[LayerRouting] = []
        for i, block in enumerate(self.blocks):

            def attend(attn, xn, i=i):
                return attn.forward_cached(xn, cache.keys[i], cache.values[i], step)

            x, layer_routing, new_sum = block(x, ctx, attend)
            if layer_routing is not None:
                routing.append(layer_routing)
            if new_sum is not None:
                step.slots.write(cache.route_sums[i], new_sum.to(torch.float32))
        cache.advance(rows)
        head = self._head(x)  # (B, k, width)
        last = head[:, -1] if all(r.n_tokens == k for r in rows) else last_valid(head, tokens.valid)
        return DecodeOutput(head=head, last=last, routing=routing)

    # ----------------------------------------------------------------- actions
    def select_action(
        self, head: Tensor, greedy: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Head output (B, width) -> actions: (B,) long for discrete, (B, act_dim) raw units otherwise.

        Discrete actions are the argmax, or sampled from the softmax when ``greedy`` is False."""
        if self.config.action.is_discrete:
            if greedy:
                return head.argmax(-1)
            return torch.multinomial(torch.softmax(head.float(), -1), 1, generator=generator).squeeze(-1)
        return self.embed.denormalise_action(head)

    # ----------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write safetensors weights, the JSON config and the model card into ``directory``."""
        return save_checkpoint(self, directory, card or {})

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> T2MIRPolicy:
        """Load a checkpoint written by ``save_pretrained``; raises CheckpointError with a clear reason."""
        return load_checkpoint(cls, directory, map_location)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
