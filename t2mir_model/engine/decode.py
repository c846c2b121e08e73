"""The T2MIR family's decoding engine, shared by evaluation and serving (DESIGN.md decision 10).

Given the histories of many sessions, it answers one action per session with as few forward passes
as possible: sessions whose context is already in a cache slot append only their new tokens (AD:
a_{t-1}, r_{t-1}, s_t; DPT: the query s_t), the others are (re)built from their history in one
prefill row. A new session takes the lowest free slot, so live sessions stay packed at the low
slot numbers and a step's rows form a narrow slot range that attention reads in place
(`SlotWindow`); when every slot is taken, the least recently used one is recycled. The engine is synchronous and knows nothing
about HTTP, stores or threads; the server's batcher and the evaluator drive it with plain data
(it implements `PolicyEngine`).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..checkpoint import variant_name
from ..exploration import sample_discrete
from ..history import SessionHistory
from ..layers.kv_cache import ReadCounts, SlotWindow, StepRow
from ..layers.routing_summary import LayerStatistics
from ..t2mir.context import ad_context_tokens, dpt_context_tokens, query_tokens, step_tokens
from ..t2mir.fused_step import CompiledDecoder
from ..t2mir.modeling import T2MIRPolicy
from ..t2mir.tokens import TokenBatch, pad_rows
from .interface import ActRequest, ActResult, EngineOutput


@dataclass
class _Slot:
    index: int
    episode: int
    t: int


class DecodeEngine:
    """Batched, KV-cached action selection for many sessions over a pool of cache slots."""

    def __init__(
        self,
        policy: T2MIRPolicy,
        num_slots: int,
        max_tokens: int | None = None,
        use_cache: bool = True,
        compile_step: bool = False,
    ) -> None:
        """``compile_step``: run one-session incremental steps through an ahead-of-time compiled
        program (`CompiledDecoder`; compiling takes tens of seconds on a CPU, here)."""
        self.policy = policy.eval()
        self.config = policy.config
        self.cache = policy.new_cache(num_slots, max_tokens)
        self.use_cache = use_cache
        self.compiled = CompiledDecoder(self.policy, self.cache) if compile_step and use_cache else None
        self._slots: OrderedDict[Hashable, _Slot] = OrderedDict()
        self._free = list(range(num_slots))  # a heap: the lowest free slot is taken first
        action = self.config.action
        self._action_example = (
            torch.zeros((), dtype=torch.long) if action.is_discrete else torch.zeros(action.width)
        )

    @property
    def variant(self) -> str:
        """'T2MIR-AD', 'AD', 'T2MIR-DPT w/o task MoE', ..."""
        return variant_name(self.config)

    @property
    def num_slots(self) -> int:
        """Size of the slot pool."""
        return self.cache.num_slots

    @property
    def slots_used(self) -> int:
        """Slots currently holding a session."""
        return len(self._slots)

    @property
    def compiled_step(self) -> bool:
        """True when one-session incremental steps run through the compiled program."""
        return self.compiled is not None

    @property
    def reads(self) -> ReadCounts:
        """How the cache's decode steps read their slots (in place, gathered, padding rows)."""
        return self.cache.reads

    def is_cached(self, key: Hashable, history: SessionHistory) -> bool:
        """True when ``key``'s next act can decode incrementally (no history needed)."""
        slot = self._slots.get(key)
        if slot is None or not self.use_cache or slot.episode != history.episode:
            return False
        return self.config.backbone == "dpt" or slot.t == history.t - 1

    def evict(self, key: Hashable) -> None:
        """Forget a session's slot (after its history changed outside the engine, or it ended)."""
        slot = self._slots.pop(key, None)
        if slot is not None:
            heapq.heappush(self._free, slot.index)

    def _claim(self, key: Hashable, episode: int, t: int) -> int:
        slot = self._slots.pop(key, None)
        if slot is None:
            if self._free:
                index = heapq.heappop(self._free)
            else:
                _, victim = self._slots.popitem(last=False)
                index = victim.index
        else:
            index = slot.index
        self.cache.reset([index])
        self._slots[key] = _Slot(index, episode, t)
        return index

    def _check(self, requests: Sequence[ActRequest]) -> None:
        if len(requests) > self.num_slots:
            raise ValueError(f"{len(requests)} requests exceed the {self.num_slots} cache slots")
        if len({r.key for r in requests}) != len(requests):
            raise ValueError("a session appears twice in one engine call")
        for r in requests:
            if r.history.t < 0:
                raise ValueError(f"session {r.key!r} has no current observation")
            if r.history.t >= self.config.max_episode_steps:
                raise ValueError(
                    f"session {r.key!r}: step {r.history.t} of an episode exceeds the model's "
                    f"max_episode_steps={self.config.max_episode_steps}"
                )

    def _plan(self, request: ActRequest) -> tuple[TokenBatch | None, int, int, bool]:
        """(tokens, n_commit, n_query, cache_hit) for one request. An AD cache hit's tokens are
        None: the three tokens of every such row are built together (`step_tokens`)."""
        history = request.history
        hit = self.is_cached(request.key, history)
        if self.config.backbone == "ad":
            if hit:
                return None, 3, 0, True
            tokens = ad_context_tokens(self.config, history, self._action_example)
            return tokens, tokens.shape[1], 0, False
        if hit:
            return query_tokens(history, self._action_example), 0, 1, True
        tokens, prompt_len = dpt_context_tokens(history, self._action_example)
        return tokens, prompt_len, 1, False

    @torch.inference_mode()
    def act(self, requests: Sequence[ActRequest]) -> EngineOutput:
        """Actions for a batch of sessions (each at most once). Rebuilt and incremental rows run as
        two forwards so short rows are not padded to the length of a rebuilt context."""
        self._check(requests)
        for r in requests:  # mark every session of this batch as recently used before any eviction
            if r.key in self._slots:
                self._slots.move_to_end(r.key)
        plans = [self._plan(r) for r in requests]
        groups: dict[bool, list[int]] = {True: [], False: []}
        for i, plan in enumerate(plans):
            groups[plan[3]].append(i)
        heads: dict[int, Tensor] = {}
        routing: list[Sequence[LayerStatistics]] = []
        new_tokens = 0
        device = self.cache.device
        for members in (groups[False], groups[True]):
            if not members:
                continue
            rows = []
            for i in members:
                request = requests[i]
                slot = (
                    self._slots[request.key].index
                    if plans[i][3]
                    else self._claim(request.key, request.history.episode, request.history.t)
                )
                rows.append(StepRow(slot, plans[i][1], plans[i][2]))
            if members is groups[True]:
                rows = self._pack([requests[i].key for i in members], rows)
            order = sorted(range(len(rows)), key=lambda j: rows[j].slot)  # rows in slot order
            members, rows = [members[j] for j in order], [rows[j] for j in order]
            built = [plans[i][0] for i in members]
            if built[0] is None:  # AD cache hits: their three tokens are built together
                tokens = step_tokens([requests[i].history for i in members])
            else:
                tokens = pad_rows([t for t in built if t is not None])
            tokens = tokens.to(device)
            if self.compiled is not None and self.compiled.accepts(rows, tokens):
                out = self.compiled.decode(self.cache, rows, tokens)
            else:
                out = self.policy.decode(self.cache, rows, tokens)
            routing.append(out.routing)
            new_tokens += sum(r.n_tokens for r in rows)
            for i, head in zip(members, self._to_host(out.last), strict=True):
                heads[i] = head
        results = []
        for i, request in enumerate(requests):
            self._slots[request.key].t = request.history.t
            results.append(ActResult(self._select(heads[i], request.seed), plans[i][3]))
            if not self.use_cache:
                self.evict(request.key)
        return EngineOutput(results, routing, new_tokens)

    def _pack(self, keys: list[Hashable], rows: list[StepRow]) -> list[StepRow]:
        """An incremental step's rows, moved into one run of free slots when theirs are too spread
        to be read in place (`SlotWindow.in_place`) and the pool has such a run: their keys and
        values are copied once (`KVCache.move`) where a gather would copy them at every step, and
        sessions that keep acting together then stay together. ``keys[i]`` owns ``rows[i]``."""
        slots = [r.slot for r in rows]
        if len(rows) < 2 or SlotWindow.in_place(slots):
            return rows
        start = self._free_run(len(rows))
        if start is None:
            return rows
        targets = list(range(start, start + len(rows)))
        self.cache.move(slots, targets)
        for key, target in zip(keys, targets, strict=True):
            self._slots[key].index = target
        taken = set(targets)
        self._free = [s for s in self._free if s not in taken] + slots
        heapq.heapify(self._free)
        return [replace(r, slot=t) for r, t in zip(rows, targets, strict=True)]

    def _free_run(self, n: int) -> int | None:
        """The first slot of the lowest run of ``n`` consecutive free slots, or None."""
        start, run, previous = 0, 0, -2
        for slot in sorted(self._free):
            start, run = (start, run + 1) if slot == previous + 1 else (slot, 1)
            if run == n:
                return start
            previous = slot
        return None

    def _to_host(self, last: Tensor) -> Tensor:
        """Head outputs at each row's last token (B, width) -> on the CPU, in one copy per forward
        (a copy per session would synchronise with an accelerator once per session): the logits
        (B, n) for discrete actions, the actions in raw units (B, act_dim) for continuous ones."""
        if self.config.action.is_discrete:
            return last.float().cpu()
        return self.policy.select_action(last).cpu()

    def _select(self, host: Tensor, seed: int | None) -> Tensor:
        """One row of `_to_host` -> the action: continuous as it is; discrete the argmax, or with a
        seed a Gumbel-max sample from the logits. The action owns its memory: a view of the batch's
        row would keep the whole batch's tensor alive in the session's history."""
        if not self.config.action.is_discrete:
            return host.clone()
        return sample_discrete(host, seed)
