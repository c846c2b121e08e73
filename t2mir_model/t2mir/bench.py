"""``t2mir bench-model``: full-forward versus cached one-step decoding time, same process, same policy.

For a context of N steps (3N tokens) it times (a) recomputing the whole context, as a stateless
server would on every act, and (b) one cached step appending the next three tokens, at batch sizes
1 and 32, and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..layers.kv_cache import StepRow
from .configuration import ActionSpec, ObservationSpec, T2MIRConfig
from .modeling import T2MIRPolicy
from .tokens import TokenBatch, interleave_steps, slice_tokens


@dataclass(frozen=True)
class BenchRow:
    """Median times in milliseconds for one batch size."""

    batch: int
    context_steps: int
    full_ms: float
    cached_ms: float

    @property
    def speedup(self) -> float:
        """Full-forward time over cached-step time."""
        return self.full_ms / self.cached_ms


def _median_ms(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def _random_context(policy: T2MIRPolicy, batch: int, steps: int) -> TokenBatch:
    config = policy.config
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(batch, steps, config.observation.dim, generator=g)
    if config.action.is_discrete:
        act = torch.randint(0, config.action.width, (batch, steps), generator=g)
    else:
        act = torch.rand(batch, steps, config.action.width, generator=g) * 2 - 1
    t = (torch.arange(steps) % config.max_episode_steps).expand(batch, steps)
    tokens = interleave_steps(
        obs, act, torch.randn(batch, steps, generator=g), t, torch.ones(batch, steps, dtype=torch.bool)
    )
    return tokens.to(next(policy.parameters()).device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bench(policy: T2MIRPolicy, batch: int, context_steps: int, repeats: int) -> BenchRow:
    """Time one full forward over ``context_steps`` steps against one cached 3-token step."""
    policy.eval()
    device = next(policy.parameters()).device
    tokens = _random_context(policy, batch, context_steps + 1)
    context = slice_tokens(tokens, 0, 3 * context_steps)
    step = slice_tokens(tokens, 3 * context_steps, 3 * context_steps + 3)
    cache = policy.new_cache(batch, max_tokens=3 * context_steps + 3)
    rows = [StepRow(b, 3 * context_steps) for b in range(batch)]
    policy.decode(cache, rows, context)
    step_rows = [StepRow(b, 3) for b in range(batch)]

    def full() -> None:
        policy(context, dense=True)
        _sync(device)

    def cached() -> None:
        policy.decode(cache, step_rows, step)
        for b in range(batch):  # roll the slot back so every repeat decodes the same step
            cache.lengths[b] -= 3
        _sync(device)

    return BenchRow(batch, context_steps, _median_ms(full, repeats), _median_ms(cached, repeats))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir bench-model``."""
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random DarkRoom-sized policy)")
    parser.add_argument("--context-steps", type=int, default=400, help="steps in the context (3 tokens each)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Print a table of full-forward versus cached-step times."""
    if args.checkpoint:
        policy = T2MIRPolicy.from_pretrained(args.checkpoint, map_location=args.device)
    else:
        config = T2MIRConfig(
            observation=ObservationSpec(2),
            action=ActionSpec("discrete", n=5),
            env_id="t2mir/DarkRoom-v0",
            max_episode_steps=max(100, args.context_steps),
            context_episodes=4,
        )
        policy = T2MIRPolicy(config).to(args.device)
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {device_name}; context {args.context_steps} steps = {3 * args.context_steps} tokens; "
        f"{policy.num_parameters():,} parameters"
    )
    print(f"{'batch':>5}  {'full forward ms':>15}  {'cached step ms':>14}  {'ratio':>6}")
    rows = []
    for batch in args.batch:
        row = bench(policy, batch, args.context_steps, args.repeats)
        rows.append(row)
        print(f"{row.batch:>5}  {row.full_ms:>15.2f}  {row.cached_ms:>14.2f}  {row.speedup:>6.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**vars(r), "speedup": r.speedup, "device": device_name} for r in rows], f, indent=2)
    return 0
