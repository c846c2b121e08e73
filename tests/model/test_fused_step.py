"""The fused one-session step equals the eager cached step, and its compiled form runs in the engine.

`FusedStep` is checked uncompiled against `T2MIRPolicy.decode` (head, new keys/values, task-router
sums, gates) on a slot that already holds a context; the AOTInductor-compiled program is checked
through `DecodeEngine(compile_step=True)` against an eager engine, act for act, across episode
boundaries (where rebuilt rows take the eager path and the compiled step continues from them).
"""

from __future__ import annotations

import pytest
import torch
from model_factory import next_step_tokens, play_session, random_steps, tiny_policy

from t2mir_model import DecodeEngine, StepRow
from t2mir_model.t2mir.fused_step import FusedStep, StepCompileError
from t2mir_model.t2mir.tokens import slice_tokens

ATOL = 1e-5


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize("discrete", [True, False])
def test_fused_step_equals_the_eager_cached_step(backbone, discrete):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    context = random_steps(policy.config, 5, seed=3)  # 15 tokens already cached in slot 0
    eager = policy.new_cache(num_slots=3, max_tokens=40)
    with torch.inference_mode():
        policy.decode(eager, [StepRow(0, 15)], context)
    fused_cache = policy.new_cache(num_slots=3, max_tokens=40)
    fused_cache.keys.copy_(eager.keys)
    fused_cache.values.copy_(eager.values)
    for layer, sums in eager.route_sums.items():
        fused_cache.route_sums[layer].copy_(sums)
    tokens, row = next_step_tokens(policy, context)
    step = FusedStep(policy, row.n_commit, row.n_query)
    sums = torch.stack([fused_cache.route_sums[layer][0:1] for layer in policy.task_layers])
    with torch.inference_mode():
        head, new_k, new_v, new_sums, *stats = step(
            fused_cache.keys[:, 0:1],
            fused_cache.values[:, 0:1],
            sums,
            torch.tensor([15]),
            tokens.kind,
            tokens.obs,
            tokens.action,
            tokens.reward,
            tokens.timestep,
        )
        out = policy.decode(eager, [row], tokens)
    torch.testing.assert_close(head, out.last, atol=ATOL, rtol=0)
    if row.n_commit:
        span = slice(15, 15 + row.n_commit)
        keys = eager.keys[:, 0, ..., span].transpose(-1, -2)  # the cache keeps keys positions last
        torch.testing.assert_close(new_k[:, 0], keys, atol=ATOL, rtol=0)
        torch.testing.assert_close(new_v[:, 0], eager.values[:, 0, :, span], atol=ATOL, rtol=0)
    for n, layer in enumerate(policy.task_layers):
        torch.testing.assert_close(new_sums[n], eager.route_sums[layer][0:1], atol=ATOL, rtol=0)
    expected = []
    for layer in out.routing:
        if layer.token is not None:
            expected.append(layer.token.gates)
        if layer.task is not None:
            expected.extend((layer.task.logits, layer.task.gates))
    assert len(stats) == len(expected) == 6  # 2 MoE layers x (token gates, task logits, task gates)
    for got, want in zip(stats, expected, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "discrete"), [("ad", True), ("dpt", False)])
def test_compiled_engine_acts_like_the_eager_engine(backbone, discrete, tmp_path):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    compiled = DecodeEngine(policy, num_slots=2, compile_step=True)
    assert compiled.compiled is not None
    eager = DecodeEngine(policy, num_slots=2)
    step_tokens = random_steps(policy.config, 2, seed=0)
    assert not compiled.compiled.accepts([StepRow(0, 2)], slice_tokens(step_tokens, 0, 2))  # a rebuild
    assert not compiled.compiled.accepts([StepRow(0, 3), StepRow(1, 3)], step_tokens)  # two sessions
    calls = []
    runner = compiled.compiled.runner
    compiled.compiled.runner = lambda *inputs: calls.append(1) or runner(*inputs)
    episodes = 4
    steps = episodes * policy.config.max_episode_steps
    fast, slow = play_session(compiled, steps, seed=5), play_session(eager, steps, seed=5)
    for (a_fast, stats_fast), (a_slow, stats_slow) in zip(fast, slow, strict=True):
        torch.testing.assert_close(a_fast, a_slow, atol=ATOL, rtol=0)
        assert stats_fast.keys() == stats_slow.keys()
        for key, value in stats_fast.items():
            torch.testing.assert_close(value, stats_slow[key], atol=ATOL, rtol=0)
    # every act but each episode's first (a rebuild) ran compiled; DPT's very first act has no prompt,
    # so its "rebuild" is the query alone, which is the compiled step on an empty slot
    assert len(calls) == steps - episodes + (backbone == "dpt")


def test_a_missing_compiler_is_a_clear_error(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    monkeypatch.setattr(inductor_config, "force_disable_caches", True)
    with pytest.raises(StepCompileError, match="C\\+\\+ compiler"):
        DecodeEngine(tiny_policy(), num_slots=2, compile_step=True)


def test_the_compiled_step_refuses_a_cache_off_the_cpu():
    with pytest.raises(StepCompileError, match="CPU serving only"):
        DecodeEngine(tiny_policy().to("meta"), num_slots=2, compile_step=True)
