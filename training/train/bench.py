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

from t2mir_model import PolicyBatch, T2MIRPolicy, set_sparse_dispatch
from training.datasets import LearningHistoryDataset, load_dataset
from training.train.batches import to_policy_batches
from training.train.config import TrainConfig, load_train_config
from training.train.loop import build_optimizer, policy_config


def _batches(
    config: TrainConfig, dataset: LearningHistoryDataset, n: int
) -> list[tuple[PolicyBatch, PolicyBatch]]:
    """``n`` (batch, key batch) pairs drawn as the training loop draws them."""
    rng = np.random.default_rng(config.seed)
    discrete = dataset.action_kind == "discrete"
    out = []
    for _ in range(n):
        sample = (
            dataset.sample_ad(rng, config.batch_size, config.context_episodes)
            if config.backbone == "ad"
            else dataset.sample_dpt(rng, config.batch_size, config.n_queries, config.prompt_history)
        )
        batch, keys = (b.to(config.device) for b in to_policy_batches(sample, discrete, rng))
        out.append((batch, keys))
    return out


def _step(
    policy: T2MIRPolicy, optimizer: torch.optim.Optimizer, batch: PolicyBatch, keys: PolicyBatch
) -> float:
    """One optimiser step as in the training loop; returns the loss before it."""
    loss = policy.compute_loss(batch, keys)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    policy.momentum_update()
    if batch.tokens.valid.device.type == "cuda":
        torch.cuda.synchronize()
    return loss.total.item()


def bench_train(config: TrainConfig, steps: int) -> dict[str, float]:
    """Median milliseconds per training step for each dispatch, their ratio and the parity gap."""
    dataset = load_dataset(config.dataset, split="train")
    batches = _batches(config, dataset, steps + 1)
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
            start = time.perf_counter()
            loss = _step(policy, optimizers[name], batch, keys)
            elapsed = (time.perf_counter() - start) * 1000
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
    parser.add_argument("overrides", nargs="*", help="field=value overrides, as for t2mir train")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per dispatch (after one warm-up)")
    parser.add_argument("--json", help="also write the result to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Print dense and sparse step times and their ratio."""
    if args.steps < 1:
        raise SystemExit("t2mir bench-train: --steps must be >= 1")
    config = load_train_config(args.config, args.overrides)
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
