"""A session's next decode step as one ahead-of-time compiled program (``--compile``).

An eager decode step dispatches a few hundred small tensor operations; for one session at d_model 64
their per-call overhead, not arithmetic, is the step's cost. `FusedStep` is the same step written as
a pure function of fixed shapes: one cache slot (read, never written), the running task-router sums
and the step's new tokens in; the action head, the new keys/values, the new sums and the gates out.
Exported with ``torch.export`` and compiled by AOTInductor, it runs as fused kernels behind a C++
entry point, with no Python per operation and no guard checks per call.

Attention reads the slot's whole capacity and masks positions at or past the slot's length, so the
shapes never change as the context grows; the new tokens attend to the cache and to each other in
one softmax split over the two parts (no concatenation of the cache). `CompiledDecoder` writes what
the program returns into the cache, so the slot ends exactly as `T2MIRPolicy.decode` leaves it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers.kv_cache import KVCache, StepRow
from .modeling import T2MIRPolicy
from .outputs import DecodeOutput, LayerRouting
from .task_moe import TaskRouting
from .token_moe import TokenRouting
from .tokens import TokenBatch


def _two_part_attention(
    q: Tensor,
    cache_k: Tensor,
    cache_v: Tensor,
    cached: Tensor,
    new_k: Tensor,
    new_v: Tensor,
    new_mask: Tensor,
) -> Tensor:
    """Softmax attention over cached and new keys without joining them.

    q, new_k, new_v (B, H, k, Dh); cache_k (B, H, Dh, cap), cache_v (B, H, cap, Dh); cached
    (B, 1, 1, cap) bool visible cached positions; new_mask (k, k) bool visible new positions
    -> (B, H, k, Dh).
    """
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    s_cache = (q @ cache_k).masked_fill(~cached, float("-inf"))  # (B, H, k, cap)
    s_new = (q @ new_k.transpose(-1, -2)).masked_fill(~new_mask, float("-inf"))  # (B, H, k, k)
    p = torch.softmax(torch.cat([s_cache, s_new], -1), -1)  # (B, H, k, cap + k)
    cap = cache_v.shape[2]
    return p[..., :cap] @ cache_v + p[..., cap:] @ new_v


class FusedStep(nn.Module):
    """One decode step of ``k = n_commit + n_query`` new tokens per row, as tensors in, tensors out.

    AD appends a_{t-1}, r_{t-1}, s_t (``n_commit=3``); DPT reads the query s_t (``n_query=1``)."""

    new_mask: Tensor  # (k, k) bool buffer
    query_flags: Tensor  # (k,) bool buffer

    def __init__(self, policy: T2MIRPolicy, n_commit: int, n_query: int) -> None:
        super().__init__()
        if n_commit + n_query < 1:
            raise ValueError("a step needs at least one new token")
        self.policy = policy
        self.n_commit, self.n_query = n_commit, n_query
        j = torch.arange(n_commit + n_query)
        visible = (j[None, :] <= j[:, None]) & ((j[None, :] < n_commit) | (j[None, :] == j[:, None]))
        self.register_buffer("new_mask", visible, persistent=False)  # (k, k)
        self.register_buffer("query_flags", j >= n_commit, persistent=False)  # (k,)

    def forward(
        self,
        cache_k: Tensor,
        cache_v: Tensor,
        sums: Tensor,
        lengths: Tensor,
        kind: Tensor,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        timestep: Tensor,
    ) -> tuple[Tensor, ...]:
        """cache_k (L, B, H, Dh, cap), cache_v (L, B, H, cap, Dh) the rows' slots; sums (n_task, B, d)
        running task-router sums; lengths (B,) cached tokens; kind, reward, timestep (B, k), obs
        (B, k, obs_dim), action (B, k) or (B, k, act_dim) -> (head at the last token (B, width), new
        keys and values (L, B, H, k, Dh), new sums (n_task, B, d), then per MoE layer its token gates
        (B*k, E) and its task logits and gates (B, k, E)), the last three only where the layer has
        that MoE."""
        p = self.policy
        b, k = kind.shape
        valid = torch.ones_like(kind, dtype=torch.bool)
        tokens = TokenBatch(kind, obs, action, reward, timestep, valid, self.query_flags[None].expand(b, k))
        prev = {layer: sums[n] for n, layer in enumerate(p.task_layers)}
        ctx = p._context(tokens, lengths, prev)
        cap = cache_v.shape[3]
        cached = (torch.arange(cap, device=kind.device)[None, :] < lengths[:, None])[:, None, None]
        x = p.embed(tokens)  # (B, k, d)
        new_k: list[Tensor] = []
        new_v: list[Tensor] = []
        new_sums: list[Tensor] = []
        stats: list[Tensor] = []
        for i, block in enumerate(p.blocks):

            def attend(attn, xn: Tensor, i: int = i) -> Tensor:
                q, kk, vv = (t.transpose(1, 2) for t in attn._split(xn))  # (B, H, k, Dh) each
                new_k.append(kk)
                new_v.append(vv)
                return attn._merge(
                    _two_part_attention(q, cache_k[i], cache_v[i], cached, kk, vv, self.new_mask)
                )

            x, routing, new_sum = block(x, ctx, attend)
            if new_sum is not None:
                new_sums.append(new_sum.float())
            if routing is not None and routing.token is not None:
                stats.append(routing.token.gates)
            if routing is not None and routing.task is not None:
                stats.extend((routing.task.logits, routing.task.gates))
        head = p._head(x[:, -1])  # (B, width)
        sums_out = torch.stack(new_sums) if new_sums else sums
        return (head, torch.stack(new_k), torch.stack(new_v), sums_out, *stats)


class StepCompileError(RuntimeError):
    """AOTInductor could not build the decode step."""


class CompiledDecoder:
    """Runs one-session cached steps of one engine through an AOTInductor-compiled `FusedStep`."""

    def __init__(self, policy: T2MIRPolicy, cache: KVCache) -> None:
        """Export and compile the step for ``cache``'s shapes (tens of seconds on a CPU).

        Raises `StepCompileError` when AOTInductor cannot build it (for example without a C++
        compiler on the host), and for a cache off the CPU: on an H200 with torch 2.11 the compiled
        CUDA package crashed the process (segmentation fault) when loaded, so it is never tried."""
        if cache.device.type != "cpu":
            raise StepCompileError(
                f"the compiled decode step is built for CPU serving only (cache on {cache.device}); "
                "loading its CUDA package crashed the process on an H200 with torch 2.11"
            )
        config = policy.config
        self.policy = policy
        self.n_commit, self.n_query = (3, 0) if config.backbone == "ad" else (0, 1)
        self.step = FusedStep(policy, self.n_commit, self.n_query).to(cache.device).eval()
        self.layers = [
            (i, moe.token is not None, moe.task is not None)
            for i in range(len(policy.blocks))
            if (moe := policy.block(i).moe) is not None
        ]
        example = self._inputs(cache, 0, self._example_tokens(cache.device))
        try:
            with torch.inference_mode(False), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
                program = torch.export.export(self.step, example)
                package = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(Path(tmp) / "decode_step.pt2")
                )
                self.runner = torch._inductor.aoti_load_package(package)
        except Exception as exc:
            raise StepCompileError(
                f"compiling the decode step failed ({type(exc).__name__}: {str(exc)[:500]}); "
                "--compile needs a C++ compiler (g++) on the host"
            ) from exc

    def _example_tokens(self, device: torch.device) -> TokenBatch:
        config = self.policy.config
        k = self.n_commit + self.n_query
        action = (
            torch.zeros(1, k, dtype=torch.long)
            if config.action.is_discrete
            else torch.zeros(1, k, config.action.width)
        )
        return TokenBatch(
            kind=torch.zeros(1, k, dtype=torch.long),
            obs=torch.zeros(1, k, config.observation.dim),
            action=action,
            reward=torch.zeros(1, k),
            timestep=torch.zeros(1, k, dtype=torch.long),
            valid=torch.ones(1, k, dtype=torch.bool),
            query=self.step.query_flags[None].clone(),
        ).to(device)

    def _inputs(self, cache: KVCache, slot: int, tokens: TokenBatch) -> tuple[Tensor, ...]:
        sums = (
            torch.stack([cache.route_sums[layer][slot : slot + 1] for layer in self.policy.task_layers])
            if self.policy.task_layers
            else torch.zeros(1, 1, self.policy.config.d_model, device=cache.device)
        )  # (n_task, 1, d)
        lengths = torch.tensor([cache.lengths[slot]], device=cache.device)
        return (
            cache.keys[:, slot : slot + 1],  # (L, 1, H, Dh, cap) views of the slot, no copy
            cache.values[:, slot : slot + 1],  # (L, 1, H, cap, Dh)
            sums,
            lengths,
            tokens.kind,
            tokens.obs,
            tokens.action,
            tokens.reward,
            tokens.timestep,
        )

    def accepts(self, rows: list[StepRow], tokens: TokenBatch) -> bool:
        """True for one row of exactly the step this program was compiled for."""
        return (
            len(rows) == 1
            and rows[0].n_commit == self.n_commit
            and rows[0].n_query == self.n_query
            and tokens.shape == (1, self.n_commit + self.n_query)
        )

    def decode(self, cache: KVCache, rows: list[StepRow], tokens: TokenBatch) -> DecodeOutput:
        """Like `T2MIRPolicy.decode` for a step that `accepts` (the head only at the last token)."""
        cache.check(rows, tokens.shape[1])
        slot = rows[0].slot
        head, new_k, new_v, new_sums, *stats = self.runner(*self._inputs(cache, slot, tokens))
        start = cache.lengths[slot]
        span = slice(start, start + self.n_commit)
        cache.keys[:, slot, ..., span] = (
            new_k[:, 0, :, : self.n_commit].transpose(-1, -2).to(cache.keys.dtype)
        )
        cache.values[:, slot, :, span] = new_v[:, 0, :, : self.n_commit].to(cache.values.dtype)
        for n, layer in enumerate(self.policy.task_layers):
            cache.route_sums[layer][slot : slot + 1] = new_sums[n]
        cache.advance(rows)
        return DecodeOutput(head=head[:, None], last=head, routing=self._routing(stats, tokens))

    def _routing(self, stats: list[Tensor], tokens: TokenBatch) -> list[LayerRouting]:
        """Routing statistics objects from the program's gate outputs (statistics stay lazy)."""
        weight = tokens.valid.reshape(-1).to(stats[0].dtype if stats else torch.float32)  # (B*k,)
        routing, at = [], 0
        for layer, has_token, has_task in self.layers:
            token = task = None
            if has_token:
                gates = stats[at]
                token = TokenRouting(gates, weight, tokens.kind.reshape(-1), gates.new_zeros(()))
                at += 1
            if has_task:
                task = TaskRouting(stats[at], stats[at + 1], tokens.valid)
                at += 2
            routing.append(LayerRouting(layer, token, task))
        return routing
