"""Causal multi-head self-attention: full-sequence through SDPA (or flash-attn on CUDA); KV-cached
decode steps through two matrix products (`FEW_QUERIES`), longer cached steps through SDPA.

Masks are boolean, ``True`` = may attend. The full-sequence mask and the cached-step mask express the
same rule, so cached decoding equals the full forward:

* a token sees earlier-or-equal positions of its own row that are valid and not DPT queries;
* a query token additionally sees itself (never another query);
* a padding token sees itself (or position 0 in the cache) only, to keep softmax finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kv_cache import SlotIndex, SlotWindow

try:  # optional CUDA kernels (extra "gpu"); SDPA is used everywhere else
    from flash_attn import flash_attn_func
except ImportError:
    flash_attn_func = None


def full_attention_mask(valid: Tensor, query: Tensor, dense: bool) -> Tensor | None:
    """valid, query (B, T) bool -> mask (B, 1, T, T); None when the caller declares the batch ``dense``
    (every token valid, no queries), where a plain causal mask suffices. Never reads tensor values on
    the host, so it adds no device sync."""
    if dense:
        return None
    t = valid.shape[1]
    pos = torch.arange(t, device=valid.device)
    causal = pos[None, :] <= pos[:, None]  # (T, T): key j <= query i
    keyable = (valid & ~query)[:, None, :]  # (B, 1, T) keys kept in context
    diag = (pos[None, :] == pos[:, None])[None]  # (1, T, T)
    return ((causal[None] & keyable) | diag).unsqueeze(1)


def cached_attention_mask(
    lengths: Tensor, n_commit: Tensor, n_tokens: Tensor, k: int, kv_len: int, dtype: torch.dtype
) -> Tensor:
    """Additive mask for k new tokens written after ``lengths`` cached ones.

    lengths, n_commit, n_tokens (R,) long -> mask (R, 1, k, kv_len) of ``dtype``: 0 where a token may
    attend, -inf elsewhere (SDPA would convert a boolean mask to this in every layer). New token j
    sits at position lengths + j; the first n_commit new tokens join the context, the next up to
    n_tokens are queries, the rest padding. A row with n_tokens 0 is all padding (a window row
    outside the batch). Every token sees the positions below a limit plus its own position: a
    context token up to itself, a query the context and itself, padding position 0 only; the mask
    is one full-size comparison, then a scatter of each token's own position.
    """
    steps = torch.arange(k, device=lengths.device)  # (k,)
    pos = lengths[:, None] + steps  # (R, k) each new token's position
    valid = steps < n_tokens[:, None]  # (R, k)
    context_end = (lengths + n_commit)[:, None]  # (R, 1)
    limit = torch.where(steps < n_commit[:, None], pos + 1, context_end) * valid  # (R, k): sees [0, limit)
    own = (pos * valid).unsqueeze(-1)  # (R, k, 1): and its own position (padding: position 0)
    key_pos = torch.arange(kv_len, device=lengths.device)  # (kv,)
    blocked = torch.full((), float("-inf"), dtype=dtype, device=lengths.device)
    seen = torch.zeros((), dtype=dtype, device=lengths.device)
    mask = torch.where(key_pos >= limit.unsqueeze(-1), blocked, seen)  # (R, k, kv)
    return mask.scatter_(-1, own, seen.expand(own.shape)).unsqueeze(1)


FEW_QUERIES = 8
"""Most new tokens per row that a cached step attends to with plain matrix products (a decode step:
3 for AD, 1 for DPT); longer steps (a context rebuilt at once) go through SDPA, which never holds
the (k, kv) scores. One layer on a CPU (1 thread, 32 rows of 1,200 cached tokens, one run): the
products took 1.2 / 3.2 / 4.2 / 6.1 / 17 ms for 1 / 3 / 8 / 12 / 16 new tokens per row, SDPA with
the step's additive mask 4.7 / 5.9 / 6.2 / 7.4 / 7.5 ms."""


@dataclass(frozen=True)
class CachedStep:
    """Where one decode step writes and reads every layer's cache; built once per step."""

    slots: SlotIndex
    lengths: Tensor  # (B,) long: each row's cached tokens before the step
    write_pos: Tensor | int  # (B, k) long: cache position of each new token, padding to the scratch one;
    # or, for one unpadded row, the int position of its first new token (a contiguous run)
    window: SlotWindow  # the slot rows attention reads, in place where the batch is packed
    kv_len: int  # positions read: the longest row's length after the step
    mask: Tensor  # (R, 1, k, kv_len) additive (0 / -inf) over the window's rows
    scores: Tensor | None = None  # (R, H, k, kv_len): a decode step's attention scores, every layer
    # in turn (one buffer per step, not three per layer); None: a longer step, attended through SDPA
    gathered: tuple[Tensor, Tensor] | None = None  # where a gathering window copies one layer's keys
    # (R, H, Dh, kv_len) and values (R, H, kv_len, Dh) (`KVCache.gather_workspace`); None: new tensors


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Dropout applies to the output projection only, not to the attention probabilities: attention
    dropout forces SDPA onto its unfused math path (it materialises the (T, T) probabilities and a
    Bernoulli mask), which made training several times slower for no measured benefit."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d) -> q, k, v each (B, T, H, Dh)."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim)
        return qkv.unbind(2)

    def _merge(self, y: Tensor) -> Tensor:
        """y (B, H, T, Dh) -> (B, T, d) after the output projection."""
        b, _, t, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, -1)))

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d), mask (B, 1, T, T) or None (causal) -> (y (B, T, d), k, v (B, T, H, Dh))."""
        q, k, v = self._split(x)
        flash = flash_attn_func is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
        if mask is None and flash:
            y = flash_attn_func(q, k, v, causal=True).transpose(1, 2)  # (B, H, T, Dh)
        else:
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=mask,
                is_causal=mask is None,
            )  # (B, H, T, Dh)
        return self._merge(y), k, v

    def forward_cached(self, x: Tensor, cache_k: Tensor, cache_v: Tensor, step: CachedStep) -> Tensor:
        """Attend k new tokens to their slots' cached keys/values, writing the new ones into the cache.

        x (B, k, d); cache_k (S, H, Dh, Tcap + 1), cache_v (S, H, Tcap + 1, Dh) for this layer (last
        position is scratch) -> y (B, k, d). The keys and values are read where they lie (a view of
        the step's slot range) unless the step's window gathers them. A decode step (at most
        `FEW_QUERIES` new tokens per row) attends with two matrix products over the cache's layout;
        a longer one (a context rebuilt at once) through SDPA, which never holds its (k, kv) scores.
        """
        q, k, v = self._split(x)  # (B, k, H, Dh) each
        if isinstance(step.write_pos, int):  # one row, no padding: a contiguous run of positions
            span = slice(step.write_pos, step.write_pos + x.shape[1])
            cache_k[step.slots.host[0], ..., span] = k[0].permute(1, 2, 0)  # (H, Dh, k); copy_ casts
            cache_v[step.slots.host[0], :, span] = v[0].transpose(0, 1)  # (H, k, Dh)
        else:
            index = step.slots.tensor[:, None]  # (B, 1)
            # advanced indices apart: their dims come first, (B, k, H, Dh) for keys and values alike
            cache_k[index, :, :, step.write_pos] = k.to(cache_k.dtype)
            cache_v[index, :, step.write_pos] = v.to(cache_v.dtype)
        out_k, out_v = step.gathered or (None, None)
        keys = step.window.read(cache_k[..., : step.kv_len], out_k)  # (R, H, Dh, kv)
        values = step.window.read(cache_v[:, :, : step.kv_len], out_v)  # (R, H, kv, Dh)
        if keys.dtype != q.dtype:
            keys, values = keys.to(q.dtype), values.to(q.dtype)
        queries = step.window.place_rows(q.transpose(1, 2))  # (R, H, k, Dh)
        if step.scores is not None:  # a decode step: two products, the scores in the step's buffer
            scores = torch.matmul(queries * self.head_dim**-0.5, keys, out=step.scores).add_(step.mask)
            if scores.dtype == torch.float32:
                probs = torch.softmax(scores, dim=-1, out=scores)  # (R, H, k, kv)
            else:  # half precision: normalise in fp32, as SDPA's fused kernels do
                probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
            y = torch.matmul(probs, values)  # (R, H, k, Dh)
        else:
            keys = keys.transpose(-1, -2).contiguous()  # (R, H, kv, Dh): SDPA took 4x longer on the view
            y = F.scaled_dot_product_attention(queries, keys, values, attn_mask=step.mask)
        return self._merge(step.window.take_rows(y))  # (B, k, d)
