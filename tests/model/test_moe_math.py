"""MoE maths against hand-computed examples (paper Eq. 1-3, 7-8, 12-18)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_factory import random_steps, tiny_policy

from t2mir_model import PolicyBatch, StepRow
from t2mir_model.layers.experts import ExpertBank
from t2mir_model.layers.routing import cv_squared, normalised_entropy, smooth_load, top_k_gates
from t2mir_model.t2mir.task_moe import info_nce, prefix_mean
from t2mir_model.t2mir.token_moe import TokenMoE


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_top_k_weights_sum_to_one_and_vanish_off_the_top_k():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, -1.0, 0.5, 4.0]])
    gates = top_k_gates(logits, 2)
    e = math.exp(1.0)
    torch.testing.assert_close(gates[0], torch.tensor([0.0, 1 / (1 + e), e / (1 + e), 0.0]))
    assert gates[1, 1] == 0 and gates[1, 3] > 0.9
    torch.testing.assert_close(gates.sum(-1), torch.ones(2))
    assert ((gates > 0).sum(-1) == 2).all()


def test_balance_loss_zero_when_balanced_positive_when_collapsed():
    assert cv_squared(torch.tensor([5.0, 5.0, 5.0])) == 0
    torch.testing.assert_close(cv_squared(torch.tensor([15.0, 0.0, 0.0])), torch.tensor(2.0))
    moe = TokenMoE(8, 8, 16, n_experts=4, top_k=1, noisy=False, w_imp=1.0, w_load=1.0, dropout=0.0).train()
    with torch.no_grad():
        moe.router.inner.weight.fill_(1.0)
        moe.router.outer.weight.copy_(torch.outer(torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.ones(4)))
    h = torch.rand(1, 16, 8) + 0.1  # positive inputs: tanh(inner h) > 0, so expert 2 wins every token
    _, stats = moe(h, torch.ones(1, 16), torch.zeros(1, 16, dtype=torch.long))
    assert stats.load[2] == 16 and stats.balance_loss > 1.0
    assert normalised_entropy(stats.load) < 1e-6


def test_smooth_load_matches_the_hand_computed_probabilities():
    clean = torch.tensor([[1.0, 0.0, 0.0]])
    noisy = torch.tensor([[1.5, 0.2, -0.3]])
    load = smooth_load(clean, noisy, torch.ones(1, 3), k=1, weight=torch.ones(1))
    # expert 0 is in the top-1: threshold = 2nd largest noisy value 0.2; others: threshold 1.5
    expected = torch.tensor([phi(0.8), phi(-1.5), phi(-1.5)])
    torch.testing.assert_close(load, expected)


def test_gradient_reaches_w_noise_through_the_load_term():
    torch.manual_seed(0)
    moe = TokenMoE(8, 8, 16, n_experts=4, top_k=2, noisy=True, w_imp=0.0, w_load=1.0, dropout=0.0).train()
    _, stats = moe(torch.randn(2, 10, 8), torch.ones(2, 10), torch.zeros(2, 10, dtype=torch.long))
    stats.balance_loss.backward()
    assert moe.w_noise.weight.grad is not None and moe.w_noise.weight.grad.abs().sum() > 0


def test_modality_counts_split_the_top_k_selections():
    policy = tiny_policy()
    tokens = random_steps(policy.config, 5, seed=0)
    with torch.no_grad():
        routing = policy(tokens).routing
    for layer in routing:
        counts = layer.token.counts
        assert counts.shape == (3, policy.config.moe.token_experts)
        torch.testing.assert_close(counts.sum(1), torch.full((3,), 5.0 * policy.config.moe.token_top_k))
        torch.testing.assert_close(layer.task.weights.sum(), torch.tensor(15.0))


def test_contrastive_loss_on_a_tiny_batch():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = info_nce(q, k, torch.eye(2), torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.exp(-1))))
    # two positives for the first query: -log((e^1 + e^0.5) / (e^1 + e^0.5 + e^0))
    k2 = torch.tensor([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
    loss2 = info_nce(q[:1], k2, torch.eye(2), torch.tensor([0]), torch.tensor([0, 0, 1]))
    e = math.exp
    torch.testing.assert_close(loss2, torch.tensor(-math.log((e(1) + e(0.5)) / (e(1) + e(0.5) + e(0)))))


def test_momentum_step_moves_the_key_router_by_one_minus_beta_of_the_gap():
    policy = tiny_policy().train()
    task = policy.blocks[-1].moe.task
    with torch.no_grad():
        for p in task.router.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in task.key_router.parameters()]
    query = [p.clone() for p in task.router.parameters()]
    policy.momentum_update()
    beta = policy.config.moe.momentum
    for old, new, q in zip(before, task.key_router.parameters(), query, strict=True):
        torch.testing.assert_close(new - old, (1 - beta) * (q - old), atol=1e-7, rtol=1e-5)


def test_key_router_receives_no_gradient_and_query_router_does():
    policy = tiny_policy().train()
    config = policy.config
    q_tok = random_steps(config, 6, seed=1, batch=4)
    k_tok = random_steps(config, 6, seed=2, batch=4)
    targets = q_tok.action
    mask = q_tok.kind == 0
    ids = torch.tensor([0, 1, 2, 3])
    loss = policy.compute_loss(
        PolicyBatch(q_tok, targets, mask, ids, True), PolicyBatch(k_tok, targets, mask, ids, True)
    )
    assert loss.contrastive > 0
    loss.total.backward()
    task = policy.blocks[-1].moe.task
    assert all(not p.requires_grad and p.grad is None for p in task.key_router.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.router.parameters())
    assert task.bilinear.grad is not None


def test_prefix_mean_is_the_mean_of_kept_tokens_so_far():
    h = torch.arange(12.0).view(1, 4, 3)
    keep = torch.tensor([[1, 1, 0, 1]])
    query = torch.tensor([[0, 0, 1, 0]])
    h_bar, total = prefix_mean(h, keep, query, torch.zeros(1, 3), torch.zeros(1))
    torch.testing.assert_close(h_bar[0, 1], (h[0, 0] + h[0, 1]) / 2)
    torch.testing.assert_close(h_bar[0, 2], (h[0, 0] + h[0, 1] + h[0, 2]) / 3)  # query sees itself
    torch.testing.assert_close(h_bar[0, 3], (h[0, 0] + h[0, 1] + h[0, 3]) / 3)  # later tokens do not
    torch.testing.assert_close(total[0], h[0, 0] + h[0, 1] + h[0, 3])


def test_decode_refuses_training_mode_and_overflow():
    policy = tiny_policy()
    tokens = random_steps(policy.config, 2, seed=0)
    cache = policy.new_cache(1, max_tokens=4)
    with pytest.raises(ValueError, match="capacity"):
        policy.decode(cache, [StepRow(0, 6)], tokens)
    assert cache.lengths == [0]
    policy.train()
    with pytest.raises(RuntimeError, match="eval"):
        policy.decode(cache, [StepRow(0, 3)], tokens)


def test_balance_loss_is_a_training_quantity():
    moe = TokenMoE(8, 8, 16, n_experts=4, top_k=2, noisy=True, w_imp=1.0, w_load=1.0, dropout=0.0).eval()
    _, stats = moe(torch.randn(1, 6, 8), torch.ones(1, 6), torch.zeros(1, 6, dtype=torch.long))
    assert stats.balance_loss == 0 and stats.load.sum() == 12


def test_expert_bank_is_the_gate_weighted_sum_of_separate_ffns():
    torch.manual_seed(0)
    bank = ExpertBank(n_experts=3, d_model=8, hidden=16, out=4, dropout=0.0)
    with torch.no_grad():
        bank.b1.normal_()
        bank.b2.normal_()
    x = torch.randn(5, 8)
    gates = top_k_gates(torch.randn(5, 3), 2)
    expected = sum(
        gates[:, e : e + 1] * (F.gelu(x @ bank.w1[:, e] + bank.b1[e]) @ bank.w2[e] + bank.b2[e])
        for e in range(3)
    )
    torch.testing.assert_close(bank(x, gates), expected)
