"""``t2mir bench-train``: time of one training step with dense against sparse expert dispatch.

Both dispatches start from the same initial weights and run the same pre-sampled batches, with
repeats interleaved so that load on a shared machine hits both alike. Prints the median step time
of each, their ratio, and how far the first step's losses differ (the parity check).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from t2mir_model import ConfigError, PolicyBatch, T2MIRPolicy, set_sparse_dispatch
from training.datasets import load_dataset
from training.train.config import TrainConfig, load_train_config
from training.train.loop import build_optimizer, draw_batches, optimisation_step, policy_config


def _timed_step(
    policy: T2MIRPolicy,
    optimizer: torch.optim.Optimizer,
    batch: PolicyBatch,
    keys: PolicyBatch,
    grad_clip: float,
) -> tuple[float, float]:
    """One training-loop step -> (milliseconds, loss before the step)."""
    start = time.perf_counter()
    loss, _ = optimisation_step(policy.compute_loss, policy, optimizer, batch, keys, grad_clip)
    if batch.tokens.valid.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000, loss.total.item()


def bench_train(config: TrainConfig, steps: int) -> dict[str, float]:
    """Median milliseconds per training step for each dispatch, their ratio and the parity gap."""
    dataset = load_dataset(config.dataset, split="train")
    rng = np.random.default_rng(config.seed)
    batches = [draw_batches(dataset, config, rng) for _ in range(steps + 1)]
    torch.manual_seed(config.seed)
    dense = T2MIRPolicy(policy_config(config, dataset)).to(config.device)
    sparse = copy.deepcopy(dense)
    set_sparse_dispatch(sparse, True)
    runs = {"dense": dense, "sparse": sparse}
    optimizers = {name: build_optimizer(policy, config) for name, policy in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    first_loss: dict[str, float] = {}
    for i, (batch, keys) in enumerate(batches):
        for name, policy in runs.items():
            policy.train()
            torch.manual_seed(config.seed + i)  # same gating noise for both
            elapsed, loss = _timed_step(policy, optimizers[name], batch, keys, config.grad_clip)
            if i == 0:
                first_loss[name] = loss  # warm-up step, not timed
            else:
                times[name].append(elapsed)
    dense_ms, sparse_ms = (float(np.median(times[name])) for name in ("dense", "sparse"))
    return {
        "dense_ms": dense_ms,
        "sparse_ms": sparse_ms,
        "speedup": dense_ms / sparse_ms,
        "first_loss_dense": first_loss["dense"],
        "first_loss_sparse": first_loss["sparse"],
        "steps": steps,
        "threads": torch.get_num_threads(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir bench-train``."""
    parser.add_argument("--config", required=True, help="TOML file, or a name in training/configs/")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for t2mir train")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per dispatch (after one warm-up)")
    parser.add_argument("--json", help="also write the result to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Print dense and sparse step times and their ratio."""
    if args.steps < 1:
        raise SystemExit("t2mir bench-train: --steps must be >= 1")
    try:
        config = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        raise SystemExit(f"t2mir bench-train: {args.config}: {exc}") from None
    if config.threads:
        torch.set_num_threads(config.threads)
    result = bench_train(config, args.steps)
    print(
        f"{config.out}: {result['steps']} steps of batch {config.batch_size}, {config.device}, "
        f"{result['threads']} threads"
    )
    print(f"dense  {result['dense_ms']:8.1f} ms/step")
    print(f"sparse {result['sparse_ms']:8.1f} ms/step   {result['speedup']:.2f}x")
    print(
        f"first-step loss: dense {result['first_loss_dense']:.6f}, sparse {result['first_loss_sparse']:.6f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
