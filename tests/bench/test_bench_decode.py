"""pytest-benchmark: one cached decoding step against one full forward over the same context.

No time is asserted (machines differ, and this one may be busy): the test asserts a ratio measured
in the same process with the rounds of both workloads interleaved, so contention from other
processes slows both alike. pytest-benchmark times the cached step and ``extra_info`` keeps the
ratio (``full_over_cached``) for ``pytest --benchmark-json``. Rounds are few: these run with every
``pytest``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from t2mir_model import ActionSpec, ObservationSpec, StepRow, T2MIRConfig, T2MIRPolicy, TokenBatch
from t2mir_model.t2mir.tokens import interleave_steps, slice_tokens

CONTEXT_STEPS = 60
ROUNDS = 7
MIN_RATIO = {1: 1.5, 8: 3.0}
"""Least full-forward / cached-step cost ratio per batch size: a cached 3-token step attends to
180 cached keys, the full forward recomputes all 180 tokens (measured: about 2.5x at batch 1 and
9x at batch 8 on a 2-core CPU)."""


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, like the server's engine (two threads on a busy 2-core machine are
    an order of magnitude slower and would time contention, not the model)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def policy() -> T2MIRPolicy:
    """A random DarkRoom-shaped policy (d=64, 3 layers) with room for the context."""
    config = T2MIRConfig(
        observation=ObservationSpec(2),
        action=ActionSpec("discrete", n=5),
        d_model=64,
        n_layers=3,
        n_heads=4,
        max_episode_steps=20,
        context_episodes=4,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return T2MIRPolicy(config).eval()


def steps(policy: T2MIRPolicy, batch: int, n: int) -> TokenBatch:
    g = torch.Generator().manual_seed(1)
    t = (torch.arange(n) % policy.config.max_episode_steps).expand(batch, n)
    return interleave_steps(
        torch.rand(batch, n, 2, generator=g) * 8,
        torch.randint(0, 5, (batch, n), generator=g),
        (torch.rand(batch, n, generator=g) < 0.2).float(),
        t,
        torch.ones(batch, n, dtype=torch.bool),
    )


def workload(policy: T2MIRPolicy, kind: str, batch: int) -> Callable[[], Any]:
    """The function to time: a full forward over the context, or one cached 3-token step."""
    tokens = steps(policy, batch, CONTEXT_STEPS + 1)
    context = slice_tokens(tokens, 0, 3 * CONTEXT_STEPS)
    if kind == "full":
        return lambda: policy(context, dense=True)
    step = slice_tokens(tokens, 3 * CONTEXT_STEPS, 3 * CONTEXT_STEPS + 3)
    cache = policy.new_cache(batch, max_tokens=3 * CONTEXT_STEPS + 3)
    policy.decode(cache, [StepRow(b, 3 * CONTEXT_STEPS) for b in range(batch)], context)
    rows = [StepRow(b, 3) for b in range(batch)]

    def cached() -> None:
        policy.decode(cache, rows, step)
        for b in range(batch):  # roll back so every round decodes the same step
            cache.lengths[b] -= 3

    return cached


def fastest_interleaved(fns: list[Callable[[], Any]], rounds: int) -> list[float]:
    """Fastest of ``rounds`` runs of each function, their runs alternating (seconds)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@pytest.mark.parametrize("batch", [1, 8])
def test_cached_step_costs_a_fraction_of_the_full_forward(benchmark, policy, batch):
    full, cached = workload(policy, "full", batch), workload(policy, "cached", batch)
    with torch.inference_mode():
        full(), cached()  # warm-up
        full_s, cached_s = fastest_interleaved([full, cached], ROUNDS)
        benchmark.pedantic(cached, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    ratio = full_s / cached_s
    benchmark.extra_info.update(
        batch=batch, context_tokens=3 * CONTEXT_STEPS, full_ms=full_s * 1e3, full_over_cached=ratio
    )
    assert ratio > MIN_RATIO[batch], f"full {full_s * 1e3:.2f} ms vs cached {cached_s * 1e3:.2f} ms"
