"""One entry point from a checkpoint directory to a ready engine, whatever the model family.

`load_engine` reads the family named by the checkpoint's config (T2MIR when it names none, as every
existing checkpoint does) and hands the directory to that family's loader, which builds the policy,
sizes the cache pool and returns a `PolicyEngine` (T2MIR: `DecodeEngine`; M3DT: `M3DTEngine`). A
new family adds its loader to `_loader`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import M3DT_FAMILY, T2MIR_FAMILY, CheckpointError, read_family
from ..layers.kv_cache import KVCache
from ..m3dt.engine import DEFAULT_MAX_BATCH, M3DTEngine
from ..m3dt.modeling import M3DTPolicy
from ..t2mir.modeling import T2MIRPolicy
from .decode import DecodeEngine
from .interface import PolicyEngine

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""Memory the slot pool may take when neither a slot count nor a budget is given."""


@dataclass(frozen=True)
class EngineOptions:
    """How to load and run an engine (independent of the family)."""

    device: str = "cpu"
    """Device of the weights and the cache."""
    cache_slots: int | None = None
    """Sessions the cache pool holds; None: as many as ``cache_bytes`` allows (at least one)."""
    cache_bytes: int = DEFAULT_CACHE_BYTES
    """Memory budget of the cache pool when ``cache_slots`` is None."""
    use_cache: bool = True
    """False: rebuild every session's context on every act (a reference mode)."""
    compile_step: bool = False
    """Run one-session incremental steps through an ahead-of-time compiled program (CPU only)."""


def _load_t2mir(directory: Path, options: EngineOptions) -> PolicyEngine:
    policy = T2MIRPolicy.from_pretrained(directory, map_location=options.device)
    config = policy.config
    if config.moe.task_routing != "prefix":
        raise ValueError(f"{directory}: non-causal task routing ('sequence') cannot be served")
    slots = options.cache_slots
    if slots is None:
        slots = max(1, options.cache_bytes // KVCache.bytes_per_slot(config, config.max_context_tokens))
    return DecodeEngine(policy, slots, use_cache=options.use_cache, compile_step=options.compile_step)


def _load_m3dt(directory: Path, options: EngineOptions) -> PolicyEngine:
    """An M3DT engine: no cache (see `t2mir_model.m3dt.engine`); ``cache_slots`` caps the batch."""
    policy = M3DTPolicy.from_pretrained(directory, map_location=options.device)
    return M3DTEngine(policy, options.cache_slots or DEFAULT_MAX_BATCH)


def _loader(family: str) -> Callable[[Path, EngineOptions], PolicyEngine]:
    """The engine loader of a model family; raises CheckpointError for a family this build lacks."""
    loaders = {T2MIR_FAMILY: _load_t2mir, M3DT_FAMILY: _load_m3dt}
    if family in loaders:
        return loaders[family]
    raise CheckpointError(
        f"model family {family!r} is not part of this build (it has: {', '.join(map(repr, loaders))})"
    )


def load_engine(directory: str | Path, options: EngineOptions | None = None) -> PolicyEngine:
    """The engine of a checkpoint directory's model family, weights loaded, cache pool allocated.

    Raises CheckpointError for a missing, corrupt or unknown checkpoint and ValueError for a model
    that cannot be served step by step."""
    path = Path(directory)
    return _loader(read_family(path))(path, options or EngineOptions())
