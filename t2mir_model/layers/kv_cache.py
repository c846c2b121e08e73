"""Key/value cache for a pool of decoding slots (DESIGN.md decisions 2, 3, 10).

One slot holds one session's context: per layer its keys and values, its length (kept on the host,
so scheduling never reads device memory), and for every layer that asks for one a running sum of
hidden states (T2MIR's task routers read their causal prefix mean from it). Slots are reset or rebuilt one at a time
without touching the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class CacheLayout(Protocol):
    """What the cache reads of a model's config (any family's config with these fields)."""

    @property
    def n_layers(self) -> int: ...

    @property
    def n_heads(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def max_context_tokens(self) -> int: ...


class CacheCapacityError(ValueError):
    """A step would write past a slot's capacity."""


@dataclass(frozen=True)
class StepRow:
    """What one batch row does to its slot: append ``n_commit`` context tokens, then read
    ``n_query`` DPT query tokens that attend to the context but are not kept."""

    slot: int
    n_commit: int
    n_query: int = 0

    @property
    def n_tokens(self) -> int:
        """Valid tokens in this row."""
        return self.n_commit + self.n_query


@dataclass(frozen=True)
class SlotIndex:
    """The slots one decode step touches, as a tensor and on the host.

    A single slot is addressed with a slice (reads are views, writes plain copies); several slots
    with one gather or scatter. Per-slot tensors have the slot as their first dimension."""

    tensor: Tensor  # (B,) long
    host: tuple[int, ...]

    def read(self, x: Tensor) -> Tensor:
        """x (S, ...) -> the step's slots (B, ...)."""
        if len(self.host) == 1:
            return x[self.host[0] : self.host[0] + 1]
        return x.index_select(0, self.tensor)

    def write(self, x: Tensor, value: Tensor) -> None:
        """Store value (B, ...) into the step's slots of x (S, ...)."""
        if len(self.host) == 1:
            x[self.host[0] : self.host[0] + 1] = value
        else:
            x[self.tensor] = value


class KVCache:
    """Keys/values (L, S, H, max_tokens + 1, Dh); the last position is scratch for padding writes.

    Heads come before positions so that a slot's keys for one head are contiguous: the attention of a
    decode step reads them in place (one slot) or with one contiguous copy per slot (a batch)."""

    def __init__(
        self,
        config: CacheLayout,
        num_slots: int,
        max_tokens: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        route_layers: Sequence[int] = (),
    ) -> None:
        """``route_layers``: layers that keep a running sum of hidden states (d_model,) per slot."""
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_slots = num_slots
        self.max_tokens = int(max_tokens or config.max_context_tokens)
        head_dim = config.d_model // config.n_heads
        shape = (config.n_layers, num_slots, config.n_heads, self.max_tokens + 1, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.route_sums = {
            layer: torch.zeros(num_slots, config.d_model, device=device, dtype=torch.float32)
            for layer in route_layers
        }
        self.lengths = [0] * num_slots

    @property
    def device(self) -> torch.device:
        """Device holding the cache tensors."""
        return self.keys.device

    @property
    def nbytes(self) -> int:
        """Memory held by the cache tensors."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, *self.route_sums.values()))

    @staticmethod
    def bytes_per_slot(config: CacheLayout, max_tokens: int, dtype: torch.dtype = torch.float32) -> int:
        """Memory one slot costs, for sizing a pool under a memory bound."""
        per_token = 2 * config.n_layers * config.d_model * torch.empty((), dtype=dtype).element_size()
        return per_token * (max_tokens + 1) + 4 * config.d_model * config.n_layers

    def reset(self, slots: Iterable[int]) -> None:
        """Empty the given slots (their keys/values become unreachable; running sums are zeroed)."""
        index = list(slots)
        for slot in index:
            self.lengths[slot] = 0
        if index:
            rows = torch.tensor(index, device=self.device)
            for sums in self.route_sums.values():
                sums[rows] = 0.0

    def check(self, rows: list[StepRow], width: int) -> None:
        """Refuse a step that repeats a slot, has an empty or too wide row, or overflows a slot."""
        seen = set()
        for row in rows:
            if not 0 <= row.slot < self.num_slots:
                raise ValueError(f"slot {row.slot} outside [0, {self.num_slots})")
            if row.slot in seen:
                raise ValueError(f"slot {row.slot} appears twice in one step")
            seen.add(row.slot)
            if row.n_commit < 0 or row.n_query < 0 or not 1 <= row.n_tokens <= width:
                raise ValueError(f"row for slot {row.slot} needs 1..{width} tokens, got {row.n_tokens}")
            if self.lengths[row.slot] + row.n_tokens > self.max_tokens:
                raise CacheCapacityError(
                    f"slot {row.slot} holds {self.lengths[row.slot]} tokens; {row.n_tokens} more exceed "
                    f"its capacity of {self.max_tokens}"
                )

    def advance(self, rows: list[StepRow]) -> None:
        """Record the committed tokens of a finished step."""
        for row in rows:
            self.lengths[row.slot] += row.n_commit
