"""Cached step-by-step decoding equals the full forward (DESIGN.md decision 10, fp32, atol 1e-5)."""

from __future__ import annotations

import pytest
import torch
from model_factory import random_steps, tiny_policy

from t2mir_model import StepRow, append_queries
from t2mir_model.t2mir.tokens import concat_tokens, pad_rows, slice_tokens

ATOL = 1e-5


def reference(policy, tokens):
    """Head output of the full forward over one row: (K, width)."""
    with torch.no_grad():
        return policy(tokens).head[0]


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize("discrete", [True, False])
def test_batched_rows_of_different_lengths_match_full_forward(backbone, discrete):
    policy = tiny_policy(backbone=backbone, discrete=discrete)
    config = policy.config
    seqs = [random_steps(config, n, seed=n) for n in (9, 5, 12)]  # three sessions, 27 / 15 / 36 tokens
    refs = [reference(policy, s) for s in seqs]
    chunks = {0: [1, 3, 2, 3, 3, 3, 6, 6], 1: [3, 1, 2, 9], 2: [12, 3, 3, 3, 1, 2, 3, 9]}
    cursor = {i: 0 for i in chunks}
    cache = policy.new_cache(num_slots=5, max_tokens=64)
    slot_of = {0: 4, 1: 0, 2: 2}
    with torch.no_grad():
        while any(chunks.values()):
            active = [i for i in chunks if chunks[i]]
            sizes = [chunks[i].pop(0) for i in active]
            parts = [
                slice_tokens(seqs[i], cursor[i], cursor[i] + n) for i, n in zip(active, sizes, strict=True)
            ]
            rows = [StepRow(slot_of[i], n) for i, n in zip(active, sizes, strict=True)]
            out = policy.decode(cache, rows, pad_rows(parts))
            for b, (i, n) in enumerate(zip(active, sizes, strict=True)):
                torch.testing.assert_close(
                    out.head[b, :n], refs[i][cursor[i] : cursor[i] + n], atol=ATOL, rtol=0
                )
                torch.testing.assert_close(out.last[b], refs[i][cursor[i] + n - 1], atol=ATOL, rtol=0)
                cursor[i] += n
    assert [cache.lengths[slot_of[i]] for i in range(3)] == [27, 15, 36]


def test_reset_and_rebuilt_rows_leave_other_slots_untouched():
    policy = tiny_policy()
    config = policy.config
    a, b, c = (random_steps(config, 8, seed=s) for s in (1, 2, 3))
    ref_a, ref_b, ref_c = (reference(policy, s) for s in (a, b, c))
    cache = policy.new_cache(num_slots=2, max_tokens=64)
    with torch.no_grad():
        policy.decode(
            cache, [StepRow(0, 6), StepRow(1, 6)], pad_rows([slice_tokens(a, 0, 6), slice_tokens(b, 0, 6)])
        )
        # slot 0 is evicted and reused for session c; slot 1 keeps decoding session b
        cache.reset([0])
        out = policy.decode(
            cache, [StepRow(0, 3), StepRow(1, 3)], pad_rows([slice_tokens(c, 0, 3), slice_tokens(b, 6, 9)])
        )
        torch.testing.assert_close(out.head[0, :3], ref_c[:3], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.head[1, :3], ref_b[6:9], atol=ATOL, rtol=0)
        # slot 1 is rebuilt from its stored history (one long prefill) and continues step by step
        cache.reset([1])
        out = policy.decode(cache, [StepRow(1, 18)], slice_tokens(a, 0, 18))
        torch.testing.assert_close(out.head[0], ref_a[:18], atol=ATOL, rtol=0)
        out = policy.decode(
            cache, [StepRow(1, 3), StepRow(0, 3)], pad_rows([slice_tokens(a, 18, 21), slice_tokens(c, 3, 6)])
        )
        torch.testing.assert_close(out.head[0, :3], ref_a[18:21], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.head[1, :3], ref_c[3:6], atol=ATOL, rtol=0)


def test_dpt_queries_attend_to_the_prompt_and_are_not_kept():
    policy = tiny_policy(backbone="dpt")
    config = policy.config
    prompt = random_steps(config, 6, seed=7)
    q_obs = torch.randn(1, 3, config.observation.dim)
    q_t = torch.tensor([[0, 1, 2]])
    full = reference(policy, append_queries(prompt, q_obs, q_t, torch.ones(1, 3, dtype=torch.bool)))
    cache = policy.new_cache(num_slots=1, max_tokens=21)
    with torch.no_grad():
        policy.decode(cache, [StepRow(0, 18)], prompt)
        for j in range(3):
            query = slice_tokens(
                append_queries(
                    slice_tokens(prompt, 0, 0),
                    q_obs[:, j : j + 1],
                    q_t[:, j : j + 1],
                    torch.ones(1, 1, dtype=torch.bool),
                ),
                0,
                1,
            )
            out = policy.decode(cache, [StepRow(0, 0, 1)], query)
            torch.testing.assert_close(out.last[0], full[18 + j], atol=ATOL, rtol=0)
        assert cache.lengths[0] == 18
        # several queries in one row give the same answers
        queries = append_queries(slice_tokens(prompt, 0, 0), q_obs, q_t, torch.ones(1, 3, dtype=torch.bool))
        out = policy.decode(cache, [StepRow(0, 0, 3)], queries)
        torch.testing.assert_close(out.head[0], full[18:], atol=ATOL, rtol=0)


def test_dpt_query_with_empty_prompt():
    policy = tiny_policy(backbone="dpt")
    config = policy.config
    empty = slice_tokens(random_steps(config, 1, seed=0), 0, 0)
    q = append_queries(
        empty,
        torch.randn(1, 1, config.observation.dim),
        torch.zeros(1, 1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.bool),
    )
    cache = policy.new_cache(num_slots=1)
    with torch.no_grad():
        out = policy.decode(cache, [StepRow(0, 0, 1)], q)
    torch.testing.assert_close(out.last[0], reference(policy, q)[0], atol=ATOL, rtol=0)


def test_padded_full_forward_matches_unpadded_rows():
    policy = tiny_policy()
    seqs = [random_steps(policy.config, n, seed=n) for n in (4, 7)]
    with torch.no_grad():
        batched = policy(pad_rows(seqs)).head
    torch.testing.assert_close(batched[0, :12], reference(policy, seqs[0]), atol=ATOL, rtol=0)
    torch.testing.assert_close(batched[1, :21], reference(policy, seqs[1]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize(
    ("slots", "gathered"),
    [
        ((0, 1, 2), False),  # packed, in slot order: the window is the batch
        ((3, 1, 2), False),  # packed out of order: queries placed at their slots' rows
        ((0, 1, 3), False),  # a hole: the window row outside the batch attends to padding
        ((0, 5, 9), True),  # a range over twice the batch: the rows are gathered
    ],
)
def test_a_step_over_any_slot_set_matches_full_forward_and_batch_of_one(backbone, slots, gathered):
    policy = tiny_policy(backbone=backbone)
    config = policy.config
    seqs = [random_steps(config, n, seed=10 + n) for n in (4, 3, 5)]  # 12 / 9 / 15 tokens
    prefill = [9, 6, 12]  # context tokens cached before the step
    one = torch.ones(1, 1, dtype=torch.bool)
    g = torch.Generator().manual_seed(3)
    queries = [
        append_queries(
            slice_tokens(s, 0, 0), torch.randn(1, 1, config.observation.dim, generator=g), one.long(), one
        )
        for s in seqs
    ]
    if backbone == "ad":  # the step appends the next three context tokens of each row
        steps = [slice_tokens(s, n, n + 3) for s, n in zip(seqs, prefill, strict=True)]
        rows = [StepRow(slot, 3) for slot in slots]
        refs = [reference(policy, s)[n : n + 3] for s, n in zip(seqs, prefill, strict=True)]
    else:  # the step reads one query after each row's context
        steps = queries
        rows = [StepRow(slot, 0, 1) for slot in slots]
        refs = [
            reference(policy, concat_tokens([slice_tokens(s, 0, n), q]))[n:]
            for s, n, q in zip(seqs, prefill, queries, strict=True)
        ]
    cache = policy.new_cache(num_slots=10, max_tokens=32)
    with torch.no_grad():
        contexts = [slice_tokens(s, 0, n) for s, n in zip(seqs, prefill, strict=True)]
        policy.decode(
            cache, [StepRow(slot, n) for slot, n in zip(slots, prefill, strict=True)], pad_rows(contexts)
        )
        batched = policy.decode(cache, rows, pad_rows(steps))
        for i, row in enumerate(rows):
            k = row.n_tokens
            torch.testing.assert_close(batched.head[i, :k], refs[i], atol=ATOL, rtol=0)
            alone_cache = policy.new_cache(num_slots=1, max_tokens=32)
            policy.decode(alone_cache, [StepRow(0, prefill[i])], contexts[i])
            alone = policy.decode(alone_cache, [StepRow(0, row.n_commit, row.n_query)], steps[i])
            torch.testing.assert_close(batched.head[i, :k], alone.head[0], atol=ATOL, rtol=0)
    assert (cache.reads.gathered, cache.reads.in_place) == ((2, 0) if gathered else (0, 2))
    assert cache.reads.padding_rows == (2 if slots == (0, 1, 3) else 0)  # 1 hole, 2 steps


def test_a_moved_slot_holds_what_it_held_and_its_source_is_empty():
    policy = tiny_policy(backbone="ad")
    cache = policy.new_cache(4)
    cache.keys.normal_()
    cache.values.normal_()
    for sums in cache.route_sums.values():
        sums.normal_()
    cache.lengths[:] = [5, 0, 3, 0]
    keys, values = cache.keys.clone(), cache.values.clone()
    sums = {layer: s.clone() for layer, s in cache.route_sums.items()}
    cache.move([0, 2], [3, 1])
    assert cache.lengths == [0, 3, 0, 5]
    assert torch.equal(cache.keys[:, 3, ..., :5], keys[:, 0, ..., :5])  # keys: positions last
    assert torch.equal(cache.values[:, 1, :, :3], values[:, 2, :, :3])
    for layer, s in cache.route_sums.items():
        assert torch.equal(s[3], sums[layer][0]) and torch.equal(s[1], sums[layer][2])
    assert cache.reads.moved_rows == 2
    with pytest.raises(ValueError):
        cache.move([3], [3])


def test_gathering_steps_reuse_one_workspace_sized_by_the_largest_batch():
    policy = tiny_policy(backbone="ad")
    config = policy.config
    cache = policy.new_cache(num_slots=10, max_tokens=32)
    before = cache.nbytes
    keys, values = cache.gather_workspace(3, 12)
    head_dim = config.d_model // config.n_heads
    assert keys.shape == (3, config.n_heads, head_dim, 12)  # keys: positions last
    assert values.shape == (3, config.n_heads, 12, head_dim)
    assert keys.is_contiguous() and values.is_contiguous()
    grown = cache.nbytes - before
    assert grown == 2 * values[:, :, :1].numel() * 33 * keys.element_size()  # 3 rows of max_tokens + 1
    again, _ = cache.gather_workspace(2, 30)  # fewer rows: the same memory
    assert again.data_ptr() == keys.data_ptr() and cache.nbytes - before == grown
    seqs = [random_steps(config, 4, seed=s) for s in range(3)]
    with torch.no_grad():
        policy.decode(
            cache, [StepRow(s, 9) for s in (0, 5, 9)], pad_rows([slice_tokens(x, 0, 9) for x in seqs])
        )
        for n in (9, 10, 11):  # three gathered steps of one token each
            policy.decode(
                cache, [StepRow(s, 1) for s in (0, 5, 9)], pad_rows([slice_tokens(x, n, n + 1) for x in seqs])
            )
    assert cache.reads.gathered == 4
    assert cache.nbytes - before == grown  # every step used the workspace it already had
