"""The CUDA path, checked on a GPU (skipped where none is present, as in CI).

The same weights compute on a GPU what they compute on the CPU (full forward, cached decoding and
the engine's acts); SDPA's fused kernels (flash for dense causal batches in bf16, memory-efficient
for masked ones) accept the model's attention calls and agree with a float64 reference; the fused
one-session decode step has no host syncs, so it is captured once as a CUDA graph and replayed on
new inputs; and the AOTInductor-compiled step, which crashed when loaded for CUDA, is refused there.
Run on a GPU machine with ``pytest tests/model/test_cuda_path.py``.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
from model_factory import next_step_tokens, play_session, random_steps, tiny_policy
from torch.nn.attention import SDPBackend, sdpa_kernel

from t2mir_model import DecodeEngine, StepRow
from t2mir_model.layers.attention import CausalSelfAttention, full_attention_mask
from t2mir_model.t2mir.fused_step import FusedStep, StepCompileError
from t2mir_model.t2mir.tokens import pad_rows, slice_tokens

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
ATOL = 1e-4  # CPU against GPU fp32: different kernels and summation orders, no TF32


def _on_gpu(policy):
    """A copy of ``policy`` on the GPU (the CPU original stays the reference)."""
    return copy.deepcopy(policy).to(CUDA).eval()


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize("discrete", [True, False])
def test_full_forward_on_the_gpu_matches_the_cpu(backbone, discrete):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    tokens = random_steps(policy.config, 12, seed=1, batch=3)
    with torch.no_grad():
        want = policy(tokens)
        got = _on_gpu(policy)(tokens.to(CUDA))
    torch.testing.assert_close(got.head.cpu(), want.head, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
def test_cached_decoding_on_the_gpu_matches_the_full_forward(backbone):
    policy = _on_gpu(tiny_policy(backbone=backbone))
    seqs = [random_steps(policy.config, n, seed=n).to(CUDA) for n in (9, 5)]  # 27 and 15 tokens
    with torch.no_grad():
        refs = [policy(s).head[0] for s in seqs]
        cache = policy.new_cache(num_slots=3, max_tokens=48)
        cursor = [0, 0]
        for sizes in ([6, 3], [3, 9], [9, 3], [9, 0]):
            active = [i for i, n in enumerate(sizes) if n]
            parts = [slice_tokens(seqs[i], cursor[i], cursor[i] + sizes[i]) for i in active]
            out = policy.decode(cache, [StepRow(2 * i, sizes[i]) for i in active], pad_rows(parts))
            for b, i in enumerate(active):
                n = sizes[i]
                torch.testing.assert_close(
                    out.head[b, :n], refs[i][cursor[i] : cursor[i] + n], atol=ATOL, rtol=0
                )
                cursor[i] += n
    assert cursor == [27, 15]


@pytest.mark.parametrize(
    ("backend", "dtype", "masked"),
    [
        (SDPBackend.FLASH_ATTENTION, torch.bfloat16, False),
        (SDPBackend.EFFICIENT_ATTENTION, torch.float32, True),
        (SDPBackend.EFFICIENT_ATTENTION, torch.bfloat16, True),
    ],
)
def test_fused_sdpa_kernels_accept_the_models_attention(backend, dtype, masked):
    """Forcing one SDPA backend raises when it cannot take the call, so each case proves the kernel
    serves the model's shapes: flash for dense causal training batches, memory-efficient for padded or
    DPT-query batches with a boolean mask; outputs agree with a float64 CPU reference."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(64, 4, dropout=0.0).eval()
    x = torch.randn(3, 300, 64)  # (B, T, d): three rows of 100 steps
    valid = torch.ones(3, 300, dtype=torch.bool)
    valid[2, 240:] = False  # a padded row
    query = torch.zeros(3, 300, dtype=torch.bool)
    query[1, 150::3] = True  # DPT-style query tokens
    mask = full_attention_mask(valid, query, dense=not masked)
    with torch.no_grad():
        ref = copy.deepcopy(attn).double()(x.double(), mask)[0]
        gpu = copy.deepcopy(attn).to(CUDA)
        autocast = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else nullcontext()
        with autocast, sdpa_kernel([backend]):
            got = gpu(x.to(CUDA), mask.to(CUDA) if mask is not None else None)[0]
    assert got.dtype == dtype
    error = ((got.double().cpu() - ref).norm() / ref.norm()).item()
    assert error < (1e-5 if dtype == torch.float32 else 2e-2), error


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
def test_fused_step_replays_as_a_cuda_graph(backbone):
    policy = _on_gpu(tiny_policy(backbone=backbone))
    context = random_steps(policy.config, 5, seed=3).to(CUDA)
    cache = policy.new_cache(num_slots=1, max_tokens=40)
    with torch.no_grad():
        policy.decode(cache, [StepRow(0, 15)], context)
    first, row = next_step_tokens(policy, context, seed=7)
    step = FusedStep(policy, row.n_commit, row.n_query).to(CUDA).eval()
    sums = torch.stack([cache.route_sums[layer][0:1] for layer in policy.task_layers])

    def inputs(tokens, length: int) -> list[torch.Tensor]:
        tokens = tokens.to(CUDA)
        lengths = torch.tensor([length], device=CUDA)
        fields = (tokens.kind, tokens.obs, tokens.action, tokens.reward, tokens.timestep)
        return [cache.keys[:, 0:1], cache.values[:, 0:1], sums, lengths, *fields]

    static = [t.clone() for t in inputs(first, 15)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the capture (kernel selection, allocator)
            step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        captured = step(*static)
    for seed, length in ((11, 15), (12, 9), (13, 0)):
        tokens, _ = next_step_tokens(policy, context, seed=seed)
        fresh = inputs(tokens, length)
        for buffer, value in zip(static, fresh, strict=True):
            buffer.copy_(value)
        graph.replay()
        with torch.no_grad():
            want = step(*fresh)
        for got, expected in zip(captured, want, strict=True):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("backbone", "discrete"), [("ad", True), ("dpt", False)])
def test_the_engine_acts_on_the_gpu_as_on_the_cpu(backbone, discrete):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    steps = 4 * policy.config.max_episode_steps
    on_cpu = play_session(DecodeEngine(policy, num_slots=2), steps, seed=5)
    on_gpu = play_session(DecodeEngine(_on_gpu(policy), num_slots=2), steps, seed=5)
    for (a_gpu, stats_gpu), (a_cpu, stats_cpu) in zip(on_gpu, on_cpu, strict=True):
        assert a_gpu.device.type == "cpu"
        torch.testing.assert_close(a_gpu, a_cpu, atol=ATOL, rtol=0)
        for key, value in stats_gpu.items():
            torch.testing.assert_close(value.cpu(), stats_cpu[key], atol=ATOL, rtol=0)


def test_the_compiled_step_is_refused_on_the_gpu():
    """AOTInductor's CUDA package of the fused step crashed the process when loaded (segmentation
    fault in ``aoti_load_package``, torch 2.11 on an H200), so the engine refuses it up front."""
    with pytest.raises(StepCompileError, match="CPU serving only"):
        DecodeEngine(_on_gpu(tiny_policy(backbone="ad")), num_slots=2, compile_step=True)
