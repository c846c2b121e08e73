"""pytest-benchmark: one cached decoding step against one full forward, small context, same policy.

Nothing here asserts a time (machines differ, and this one may be busy). Each cached-step
benchmark stores the ratio to the full forward measured just before it in ``extra_info``
(``full_over_cached``), so ``pytest --benchmark-json`` keeps the comparison. Rounds are few:
these run with every ``pytest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from t2mir_model import ActionSpec, ObservationSpec, StepRow, T2MIRConfig, T2MIRPolicy, TokenBatch
from t2mir_model.t2mir.tokens import interleave_steps, slice_tokens

CONTEXT_STEPS = 60
ROUNDS = 5


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


@pytest.fixture(scope="module")
def medians() -> dict[tuple[str, int], float]:
    """Median seconds of each benchmark of this module, by (kind, batch)."""
    return {}


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


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("kind", ["full", "cached"])
def test_decode_cost(benchmark, policy, medians, kind, batch):
    fn = workload(policy, kind, batch)
    with torch.inference_mode():
        benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(kind=kind, batch=batch, context_tokens=3 * CONTEXT_STEPS)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: the function ran once, nothing was timed
        return
    medians[(kind, batch)] = stats.stats.median
    full = medians.get(("full", batch))
    if kind == "cached" and full:
        benchmark.extra_info["full_over_cached"] = full / stats.stats.median
