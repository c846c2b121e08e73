"""Sparse expert dispatch (training only) computes the same mixture and gradients as the dense banks."""

from __future__ import annotations

import copy

import torch
from model_factory import random_steps, tiny_policy

from t2mir_model import PolicyBatch, set_sparse_dispatch
from t2mir_model.layers.experts import ExpertBank
from t2mir_model.layers.routing import top_k_gates


def _bank_outputs(sparse: bool, logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(0)
    bank = ExpertBank(n_experts=5, d_model=8, hidden=16, out=4, dropout=0.0).train()
    with torch.no_grad():
        bank.b1.normal_()
        bank.b2.normal_()
    bank.sparse = sparse
    logits = logits.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    y = bank(x, top_k_gates(logits, 2))
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = {name: p.grad for name, p in bank.named_parameters()}
    return y.detach(), grads | {"x": x.grad, "logits": logits.grad}


def test_sparse_bank_matches_dense_values_and_gradients():
    g = torch.Generator().manual_seed(3)
    x, logits = torch.randn(40, 8, generator=g), torch.randn(40, 5, generator=g)
    dense_y, dense_grads = _bank_outputs(False, logits, x)
    sparse_y, sparse_grads = _bank_outputs(True, logits, x)
    torch.testing.assert_close(sparse_y, dense_y)
    assert dense_grads.keys() == sparse_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, msg=name)
    assert dense_grads["logits"].abs().sum() > 0


def test_an_expert_nobody_chose_still_gets_a_zero_gradient():
    logits = torch.randn(12, 5)
    logits[:, 4] = -100.0  # expert 4 is never in the top-2
    _, grads = _bank_outputs(True, logits, torch.randn(12, 8))
    assert grads["w1"] is not None and grads["w2"] is not None
    assert grads["w1"][:, 4].abs().sum() == 0 and grads["w2"][4].abs().sum() == 0
    assert grads["w2"][:4].abs().sum() > 0


def test_sparse_dispatch_is_training_only_and_leaves_evaluation_exact():
    policy = tiny_policy()
    assert set_sparse_dispatch(policy, True) == 4  # 2 layers x (token bank, task bank)
    tokens = random_steps(policy.config, 6, seed=1, batch=3)
    sparse_eval = policy(tokens).head
    set_sparse_dispatch(policy, False)
    assert torch.equal(sparse_eval, policy(tokens).head)


def test_policy_loss_and_gradients_match_between_dispatches():
    dense = tiny_policy().train()
    sparse = copy.deepcopy(dense)
    set_sparse_dispatch(sparse, True)
    q_tok = random_steps(dense.config, 6, seed=1, batch=4)
    k_tok = random_steps(dense.config, 6, seed=2, batch=4)
    ids = torch.tensor([0, 1, 2, 3])
    mask = q_tok.kind == 0
    batch = PolicyBatch(q_tok, q_tok.action, mask, ids, True)
    keys = PolicyBatch(k_tok, q_tok.action, mask, ids, True)
    losses = []
    for policy in (dense, sparse):
        torch.manual_seed(7)  # same gating noise
        loss = policy.compute_loss(batch, keys)
        loss.total.backward()
        losses.append(loss.total.detach())
    torch.testing.assert_close(losses[1], losses[0])
    for (name, p_dense), p_sparse in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        if p_dense.grad is None:
            assert p_sparse.grad is None, name
        else:
            torch.testing.assert_close(p_sparse.grad, p_dense.grad, msg=name, atol=1e-6, rtol=1e-4)
