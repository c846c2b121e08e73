"""Cost growth: the time of one act as the context grows, cached step versus full recompute.

Measured in this process on one policy with the checkpoint's architecture (d_model, layers,
heads, MoE) and random weights, its ``context_episodes`` raised so that the longest context
fits. A context of E episodes holds E full episodes (E x max_episode_steps steps, 3 tokens each):

- ``cached``: one step appended to a KV cache holding that context (what the t2mir engine does
  on every act inside an episode);
- ``full``: one forward over the whole context at batch 1 (what the naive baseline does on every
  act, and what the engine does once per episode when it rebuilds a session's slot).

Timings come from `t2mir_model.t2mir.bench` (median of ``repeats`` after a warm-up call).

Batch scaling (`measure_batches`), on the same policy: one cached step of B sessions over a context
of `BATCH_CONTEXT_STEPS` steps, against one session's, for B in `BATCHES` (what ``t2mir bench-model``
prints, with the full forward timed at batch 1 only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from t2mir_model import ActionSpec, ObservationSpec, T2MIRConfig, T2MIRPolicy, bench, read_config

BATCH_CONTEXT_STEPS = 400
"""Context of the batch-scaling rows: 400 steps, 1,200 tokens."""
BATCHES = (1, 8, 32)
"""Sessions per cached step in the batch-scaling rows; the first is the reference."""


@dataclass(frozen=True)
class GrowthRow:
    """Median per-act times for one context size."""

    episodes: int
    context_steps: int
    context_tokens: int
    cached_ms: float
    full_ms: float

    @property
    def speedup(self) -> float:
        """Full recompute over cached step."""
        return self.full_ms / self.cached_ms if self.cached_ms > 0 else float("inf")


def darkroom_config() -> T2MIRConfig:
    """The DarkRoom checkpoint's shape (used when no checkpoint is given)."""
    return T2MIRConfig(
        observation=ObservationSpec(2),
        action=ActionSpec("discrete", n=5),
        env_id="t2mir/DarkRoom-v0",
        d_model=64,
        n_layers=3,
        n_heads=4,
        max_episode_steps=100,
        context_episodes=3,
    )


def growth_config(checkpoint: str | None, max_episodes: int) -> T2MIRConfig:
    """The checkpoint's architecture (AD backbone) with room for ``max_episodes`` episodes."""
    config = read_config(checkpoint) if checkpoint else darkroom_config()
    return config.replace(backbone="ad", context_episodes=max(max_episodes + 1, config.context_episodes))


def measure_growth(
    config: T2MIRConfig,
    episodes: Sequence[int],
    repeats: int = 20,
    threads: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> list[GrowthRow]:
    """One row per context size, on a random policy of ``config`` on ``device``."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        policy = _policy(config, seed, device)
        rows = []
        for n in episodes:
            steps = n * config.max_episode_steps
            row = bench(policy, 1, steps, repeats)
            rows.append(GrowthRow(n, steps, 3 * steps, row.cached_ms, row.full_ms))
        return rows
    finally:
        torch.set_num_threads(previous_threads)


def measure_batches(
    config: T2MIRConfig, repeats: int = 20, threads: int = 1, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """JSON section of the batch-scaling rows (module docstring) on a random policy of ``config``:
    per batch size the cached step's median, its ratio to batch 1, and at batch 1 the full forward
    and full / cached."""
    steps = min(BATCH_CONTEXT_STEPS, config.context_episodes * config.max_episode_steps - 1)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        policy = _policy(config, seed, device)
        rows = [bench(policy, b, steps, repeats, time_full=b == BATCHES[0]) for b in BATCHES]
    finally:
        torch.set_num_threads(previous_threads)
    first = rows[0]
    return {
        "context_steps": steps,
        "context_tokens": 3 * steps,
        "threads": threads,
        "repeats": repeats,
        "full_ms": first.full_ms,
        "full_over_cached": first.speedup,
        "rows": [
            {
                "batch": r.batch,
                "cached_ms": r.cached_ms,
                "over_first": r.cached_ms / first.cached_ms,
                "read": r.read,
            }
            for r in rows
        ],
    }


def _policy(config: T2MIRConfig, seed: int, device: str) -> T2MIRPolicy:
    """A seeded random policy of ``config`` in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return T2MIRPolicy(config).to(device).eval()


def growth_report(rows: Sequence[GrowthRow], config: T2MIRConfig, repeats: int) -> dict[str, Any]:
    """JSON section: rows, growth relative to the smallest context, and the policy measured."""
    first = rows[0] if rows else None
    out_rows = []
    for r in rows:
        scale = r.episodes / first.episodes if first else 1.0
        out_rows.append(
            {
                **asdict(r),
                "speedup": r.speedup,
                "cached_growth": r.cached_ms / first.cached_ms if first else None,
                "full_growth": r.full_ms / first.full_ms if first else None,
                "context_growth": scale,
            }
        )
    return {
        "policy": {
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "n_heads": config.n_heads,
            "max_episode_steps": config.max_episode_steps,
            "context_episodes": config.context_episodes,
            "weights": "random",
        },
        "repeats": repeats,
        "batch": 1,
        "rows": out_rows,
        "cached_at_most_linear": all(
            r["cached_growth"] is not None and r["cached_growth"] <= r["context_growth"] * 1.10
            for r in out_rows
        ),
    }
