"""CPU time of one cached decode step under one glibc malloc setting (server/allocator.py's table).

Run from the repository root, one process per setting (malloc settings are per process)::

    python scripts/malloc_step_cost.py --mmap-threshold 131072 --trim-threshold 131072
    python scripts/malloc_step_cost.py  # glibc's own rising threshold

It sets ``M_ARENA_MAX`` = 2 (and the given thresholds) as ``t2mir serve`` does, loads the
checkpoint, fills a KV cache with a random context of ``--context-steps`` steps per row and times
cached one-step decodes at each batch size. CPU time (user + system, page faults included) is
reported because other jobs on the cores inflate wall time but not it; wall medians are printed too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from server.allocator import MALLOC_OPTIONS, tune_malloc


def main() -> None:
    """Parse the flags, apply the malloc setting, print one line per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mmap-threshold", type=int, help="bytes (default: glibc's rising threshold)")
    parser.add_argument("--trim-threshold", type=int, help="bytes (default: glibc's)")
    parser.add_argument("--checkpoint", default="checkpoints/darkroom-t2mir-ad")
    parser.add_argument("--context-steps", type=int, default=200)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    given = {"MALLOC_MMAP_THRESHOLD_": args.mmap_threshold, "MALLOC_TRIM_THRESHOLD_": args.trim_threshold}
    flags = {"MALLOC_ARENA_MAX": 2, **{k: v for k, v in given.items() if v is not None}}
    unset = {o.env: "glibc" for o in MALLOC_OPTIONS if o.env not in flags}  # leave the others to glibc
    tune_malloc(unset, flags)

    import torch

    from t2mir_model import T2MIRPolicy
    from t2mir_model.layers.kv_cache import StepRow
    from t2mir_model.t2mir.bench import random_context
    from t2mir_model.t2mir.tokens import slice_tokens

    torch.set_num_threads(1)
    policy = T2MIRPolicy.from_pretrained(args.checkpoint).eval()
    steps = args.context_steps
    print(f"mmap threshold {args.mmap_threshold or 'glibc'}, trim threshold {args.trim_threshold or 'glibc'}")
    with torch.no_grad():
        for batch in args.batch:
            tokens = random_context(policy, batch, steps + 1)  # (B, 3 (steps + 1)) tokens
            cache = policy.new_cache(batch, max_tokens=3 * steps + 3)
            policy.decode(
                cache, [StepRow(b, 3 * steps) for b in range(batch)], slice_tokens(tokens, 0, 3 * steps)
            )
            step, rows = slice_tokens(tokens, 3 * steps, 3 * steps + 3), [StepRow(b, 3) for b in range(batch)]
            walls = []
            for k in range(args.repeats + 3):  # 3 unmeasured
                if k == 3:
                    cpu0 = time.process_time()
                start = time.perf_counter()
                policy.decode(cache, rows, step)
                for b in range(batch):  # roll back: every repeat decodes the same step
                    cache.lengths[b] -= 3
                if k >= 3:
                    walls.append((time.perf_counter() - start) * 1000.0)
            cpu = (time.process_time() - cpu0) * 1000.0 / args.repeats
            print(
                f"batch {batch}: {cpu:.2f} ms CPU per step, wall median {sorted(walls)[len(walls) // 2]:.2f} ms"
            )
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    print(f"RSS {rss // 1024} MB")


if __name__ == "__main__":
    main()
