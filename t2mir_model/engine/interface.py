"""What the server and the evaluator need from a decoding engine, whatever the model family.

The server's batcher and the evaluator drive an engine with plain data: a batch of `ActRequest`s
in, an `EngineOutput` out; they evict sessions, read slot counts for sizing and metrics, and read a
few facts of the model's config (`ServedConfig`) to describe the model and validate requests. A
family implements `PolicyEngine` (the T2MIR family: `DecodeEngine`; M3DT: `M3DTEngine`, whose
requests are the `ActRequest` subtype `M3DTActRequest`, adding the task prompt and target return)
and registers a loader in `t2mir_model.engine.loading`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from ..history import SessionHistory
from ..layers.kv_cache import ReadCounts
from ..layers.routing_summary import LayerStatistics
from ..t2mir.configuration import ActionSpec, ObservationSpec


@dataclass(frozen=True)
class ActRequest:
    """One session's turn: its history up to the current state s_t, and how to pick the action."""

    key: Hashable
    history: SessionHistory
    seed: int | None = None
    """None: greedy (argmax / tanh mean). An int: sample a discrete action with Gumbel noise drawn
    from this seed, so a retried or replayed step gives the same action anywhere."""


@dataclass(frozen=True)
class ActResult:
    """The action for one request."""

    action: Tensor  # () long or (act_dim,) float, on the CPU
    cache_hit: bool


@dataclass
class EngineOutput:
    """Actions in request order plus the routing statistics of every forward that produced them."""

    results: list[ActResult]
    routing: list[Sequence[LayerStatistics]]
    """One entry per forward: its per-MoE-layer statistics (sum them with `summarize_routing`)."""
    new_tokens: int


class ServedConfig(Protocol):
    """The facts of a model's config that serving and evaluation read (any family's config)."""

    @property
    def observation(self) -> ObservationSpec:
        """The observation vector the policy reads."""
        ...

    @property
    def action(self) -> ActionSpec:
        """The action space the policy answers in."""
        ...

    @property
    def backbone(self) -> str:
        """The context rule: 'ad' (best past episodes + the open one) or 'dpt' (last episode + query)."""
        ...

    @property
    def env_id(self) -> str:
        """Environment the policy was trained for (informative)."""
        ...

    @property
    def max_episode_steps(self) -> int:
        """Longest episode the policy can act in."""
        ...

    @property
    def context_episodes(self) -> int:
        """Episodes one context spans (closed ones kept for context + the open one)."""
        ...


class PolicyEngine(Protocol):
    """Batched action selection for many sessions over a pool of cache slots."""

    @property
    def config(self) -> ServedConfig:
        """The loaded model's config."""
        ...

    @property
    def variant(self) -> str:
        """Human-readable model variant, e.g. 'T2MIR-AD'."""
        ...

    @property
    def num_slots(self) -> int:
        """Size of the slot pool (the most requests one `act` call takes)."""
        ...

    @property
    def slots_used(self) -> int:
        """Slots currently holding a session."""
        ...

    @property
    def compiled_step(self) -> bool:
        """True when one-session steps run through an ahead-of-time compiled program."""
        ...

    @property
    def reads(self) -> ReadCounts:
        """How its cached decode steps read their slots (all zero for an engine without a cache)."""
        ...

    def act(self, requests: Sequence[ActRequest]) -> EngineOutput:
        """Actions for a batch of sessions (each key at most once), in request order."""
        ...

    def evict(self, key: Hashable) -> None:
        """Forget a session's slot (its history changed outside the engine, or it ended)."""
        ...
