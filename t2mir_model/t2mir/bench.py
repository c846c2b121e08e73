"""``t2mir bench-model``: full-forward versus cached one-step decoding time, same process, same policy.

For a context of N steps (3N tokens) it times, per batch size, (a) recomputing the whole context,
as a stateless server would on every act, and (b) one cached step appending the next three tokens
to every row, both in inference mode like the engine, and prints the two medians, their ratio
(full / cached) and each cached step's cost relative to the batch-1 cached step (how much a batch
of B sessions costs against one session). The batch's slots are packed (0..B-1), so its step reads
the cache in place; ``--spread S`` places row b at slot b * S, and a range much wider than the
batch is gathered instead (the ``read`` column says which way each step read the cache).
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
    """Median times in milliseconds for one batch size, and how its cached step read the cache."""

    batch: int
    context_steps: int
    full_ms: float
    cached_ms: float
    read: str = "in place"  # "in place" (a view of the slot range) or "gathered" (rows copied)

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


def random_context(policy: T2MIRPolicy, batch: int, steps: int) -> TokenBatch:
    """A seeded random context of ``steps`` steps per row for timing the policy -> tokens (B, 3 steps)."""
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


@torch.inference_mode()
def bench(
    policy: T2MIRPolicy, batch: int, context_steps: int, repeats: int, spread: int = 1, time_full: bool = True
) -> BenchRow:
    """Time one full forward over ``context_steps`` steps against one cached 3-token step of the
    same rows, row b decoding slot ``b * spread``; ``time_full=False`` times the cached step only
    (``full_ms`` is then NaN)."""
    policy.eval()
    device = next(policy.parameters()).device
    tokens = random_context(policy, batch, context_steps + 1)
    context = slice_tokens(tokens, 0, 3 * context_steps)
    step = slice_tokens(tokens, 3 * context_steps, 3 * context_steps + 3)
    slots = [b * spread for b in range(batch)]
    cache = policy.new_cache(slots[-1] + 1, max_tokens=3 * context_steps + 3)
    policy.decode(cache, [StepRow(s, 3 * context_steps) for s in slots], context)
    step_rows = [StepRow(s, 3) for s in slots]

    def full() -> None:
        policy(context, dense=True)
        _sync(device)

    def cached() -> None:
        policy.decode(cache, step_rows, step)
        for s in slots:  # roll the slot back so every repeat decodes the same step
            cache.lengths[s] -= 3
        _sync(device)

    full_ms = _median_ms(full, repeats) if time_full else float("nan")
    gathered = cache.reads.gathered
    cached_ms = _median_ms(cached, repeats)
    read = "gathered" if cache.reads.gathered > gathered else "in place"
    return BenchRow(batch, context_steps, full_ms, cached_ms, read)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir bench-model``."""
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random DarkRoom-sized policy)")
    parser.add_argument("--context-steps", type=int, default=400, help="steps in the context (3 tokens each)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[1, 32],
        help="batch sizes (sessions per forward); the first is the reference of the batch ratio",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median)")
    parser.add_argument(
        "--spread",
        type=int,
        default=1,
        help="row b decodes slot b * SPREAD (1: packed slots, read in place; a range over 1.4x the batch is gathered)",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.epilog = (
        "Columns: full forward ms (the whole context recomputed, median), cached step ms (three "
        "tokens appended to every row's cached slot, median), full/cached (their ratio), vs batch N "
        "(this cached step over the cached step of the first batch size N), read (whether the step "
        "attended over its slots in place or gathered them)."
    )


def run(args: argparse.Namespace) -> int:
    """Print a table of full-forward versus cached-step times."""
    if args.threads:
        torch.set_num_threads(args.threads)
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
    first = args.batch[0]
    print(
        f"{'batch':>5}  {'full forward ms':>15}  {'cached step ms':>14}  {'full/cached':>11}  "
        f"{f'vs batch {first}':>11}  read"
    )
    rows, report = [], []
    for batch in args.batch:
        row = bench(policy, batch, args.context_steps, args.repeats, args.spread)
        rows.append(row)
        over_first = row.cached_ms / rows[0].cached_ms
        print(
            f"{row.batch:>5}  {row.full_ms:>15.2f}  {row.cached_ms:>14.2f}  {row.speedup:>10.1f}x  "
            f"{over_first:>10.2f}x  {row.read}"
        )
        report.append(
            {
                **vars(row),
                "speedup": row.speedup,
                "cached_over_first_batch": over_first,
                "first_batch": first,
                "spread": args.spread,
                "threads": torch.get_num_threads(),
                "device": device_name,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
