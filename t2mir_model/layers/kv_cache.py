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


WINDOW_WIDTH_LIMIT = 1.4
"""A decode step reads the slot range of its batch in place while that range holds at most this many
slots per batch row; wider, it gathers its rows instead. A row of the range outside the batch costs
a whole attention row over its context, gathering a batch row one copy of its keys and values:
measured on a CPU (1 thread, 1,200 cached tokens, batch 16), a padding row cost about 2.3 times a
gathered row, so in place is the cheaper read up to about 1.4 slots per batch row."""


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


@dataclass(frozen=True)
class SlotWindow:
    """The rows a decode step's attention runs over, and how its batch rows map onto them.

    Normally the contiguous slot range [start, stop) that holds the batch's slots: attention reads
    that range of the cache as a view, in place, and each batch row's queries sit at its slot's row
    (``place``); rows of the range outside the batch attend to padding and are dropped. When the range
    is wider than `WINDOW_WIDTH_LIMIT` times the batch, the window is the batch's rows gathered
    (``gather``: one copy of their keys and values per layer)."""

    start: int
    stop: int
    place: Tensor | None  # (B,) long: each batch row's row in the window; None when row b is row b
    gather: Tensor | None  # (B,) long slots to copy out of the cache, or None to read [start, stop)

    @staticmethod
    def in_place(slots: Sequence[int]) -> bool:
        """Whether a batch decoding ``slots`` reads its slot range in place (else it gathers)."""
        return max(slots) - min(slots) + 1 <= WINDOW_WIDTH_LIMIT * len(slots)

    @classmethod
    def plan(cls, slots: Sequence[int], device: torch.device) -> SlotWindow:
        """The window for a batch whose row b decodes slot ``slots[b]`` (no slot twice)."""
        start, stop = min(slots), max(slots) + 1
        if not cls.in_place(slots):
            return cls(0, len(slots), None, torch.tensor(slots, device=device))
        in_order = stop - start == len(slots) and all(s == start + b for b, s in enumerate(slots))
        place = None if in_order else torch.tensor([s - start for s in slots], device=device)
        return cls(start, stop, place, None)

    @property
    def rows(self) -> int:
        """Rows attention runs over (batch rows plus padding rows)."""
        return self.stop - self.start

    def host_rows(self, slots: Sequence[int]) -> list[int | None]:
        """For each window row, the batch row it holds, or None for a padding row."""
        if self.gather is not None:
            return list(range(len(slots)))
        held: list[int | None] = [None] * self.rows
        for b, slot in enumerate(slots):
            held[slot - self.start] = b
        return held

    def read(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Per-slot tensor (S, ...) -> the window's rows (R, ...): a view of the cache, or the gathered
        rows (into ``out``, a contiguous workspace of that shape, when given:
        `KVCache.gather_workspace`)."""
        if self.gather is not None:
            if out is not None:
                return torch.index_select(x, 0, self.gather, out=out)
            return x.index_select(0, self.gather)
        return x[self.start : self.stop]

    def place_rows(self, x: Tensor) -> Tensor:
        """Batch rows (B, ...) -> window rows (R, ...), zeros on padding rows."""
        if self.place is None:
            return x
        return x.new_zeros((self.rows, *x.shape[1:])).index_copy_(0, self.place, x)

    def take_rows(self, x: Tensor) -> Tensor:
        """Window rows (R, ...) -> the batch's rows (B, ...)."""
        if self.place is None:
            return x
        return x.index_select(0, self.place)


@dataclass
class ReadCounts:
    """How the cache's decode steps read their slots, for benchmarks and metrics."""

    in_place: int = 0  # steps that attended over a view of their slot range
    gathered: int = 0  # steps whose range was too sparse, so their rows were gathered
    padding_rows: int = 0  # window rows outside the batch, summed over in-place steps
    moved_rows: int = 0  # slots moved to other slots (`KVCache.move`) so that a batch sits together

    def add(self, other: ReadCounts) -> None:
        """Add another cache's counts to these (one model's versions summed)."""
        self.in_place += other.in_place
        self.gathered += other.gathered
        self.padding_rows += other.padding_rows
        self.moved_rows += other.moved_rows

    def count(self, window: SlotWindow, batch: int) -> None:
        """Record one step's window."""
        if window.gather is not None:
            self.gathered += 1
        else:
            self.in_place += 1
            self.padding_rows += window.rows - batch


class KVCache:
    """Keys (L, S, H, Dh, max_tokens + 1) and values (L, S, H, max_tokens + 1, Dh); the last position
    is scratch for padding writes.

    Heads come before positions so that a slot's keys for one head are contiguous, and slots are
    the outer dimension so that a range of slots is one strided view: a decode step attends over
    its slots where they lie (`SlotWindow`). Keys are stored transposed, positions last, so that a
    decode step's scores are a plain product q @ K (measured on a CPU, 32 rows of 1,200 cached
    tokens, 3 queries each: the product alone took 0.66 ms per layer against 1.66 ms through K's
    transpose). ``reads`` counts how its steps read them."""

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
        slots = (config.n_layers, num_slots, config.n_heads)
        self.keys = torch.zeros((*slots, head_dim, self.max_tokens + 1), device=device, dtype=dtype)
        self.values = torch.zeros((*slots, self.max_tokens + 1, head_dim), device=device, dtype=dtype)
        self.route_sums = {
            layer: torch.zeros(num_slots, config.d_model, device=device, dtype=torch.float32)
            for layer in route_layers
        }
        self.lengths = [0] * num_slots
        self.reads = ReadCounts()
        self._workspace: tuple[Tensor, Tensor] | None = None  # flat: rows x H x (max_tokens + 1) x Dh

    @property
    def device(self) -> torch.device:
        """Device holding the cache tensors."""
        return self.keys.device

    @property
    def nbytes(self) -> int:
        """Memory held by the cache tensors (and the gather workspace, once a step used it)."""
        held = (self.keys, self.values, *self.route_sums.values(), *(self._workspace or ()))
        return sum(t.numel() * t.element_size() for t in held)

    def gather_workspace(self, rows: int, length: int) -> tuple[Tensor, Tensor]:
        """Two contiguous views, keys (rows, H, Dh, length) and values (rows, H, length, Dh), for one
        layer's gathered keys and values.

        A step that gathers its rows (`SlotWindow.read`) copies them here instead of into new
        tensors: every layer of every such step reuses the same memory, where a fresh allocation of
        tens of MB per layer cost page faults at every step (the server maps blocks that large on
        their own and unmaps them when freed, `server.allocator`). The workspace grows to the
        largest gathered batch and stays: at most one layer's keys and values of ``num_slots``
        slots. A view is valid until the next call."""
        _, _, heads, positions, head_dim = self.values.shape
        need = rows * heads * positions * head_dim
        if self._workspace is None or self._workspace[0].numel() < need:
            self._workspace = (
                torch.empty(need, dtype=self.keys.dtype, device=self.device),
                torch.empty(need, dtype=self.values.dtype, device=self.device),
            )
        size = rows * heads * length * head_dim
        return (
            self._workspace[0][:size].view(rows, heads, head_dim, length),
            self._workspace[1][:size].view(rows, heads, length, head_dim),
        )

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

    def move(self, sources: Sequence[int], targets: Sequence[int]) -> None:
        """Move the cached keys, values, running sums and lengths of slot ``sources[i]`` to the empty
        slot ``targets[i]``; the sources become empty. The moved tokens are copied as they are, so a
        moved slot decodes exactly as it would have where it was."""
        if len(sources) != len(targets) or set(sources) & set(targets):
            raise ValueError("move needs as many targets as sources, all of them other slots")
        if not sources:
            return
        length = max(self.lengths[s] for s in sources)
        src = torch.tensor(list(sources), device=self.device)
        dst = torch.tensor(list(targets), device=self.device)
        self.keys[:, dst, ..., :length] = self.keys[:, src, ..., :length]  # (L, S, H, Dh, cap)
        self.values[:, dst, :, :length] = self.values[:, src, :, :length]  # (L, S, H, cap, Dh)
        for sums in self.route_sums.values():  # (S, d)
            sums[dst] = sums[src]
        for s, t in zip(sources, targets, strict=True):
            self.lengths[t], self.lengths[s] = self.lengths[s], 0
        self.reads.moved_rows += len(sources)

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
