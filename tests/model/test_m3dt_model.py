"""M3DT model: shapes, masks, batched == batch-1, save/load, engine, routing statistics."""

from __future__ import annotations

import json

import pytest
import torch

from t2mir_model import (
    ActRequest,
    CheckpointError,
    ConfigError,
    EngineOptions,
    M3DTActRequest,
    M3DTConfig,
    M3DTEngine,
    M3DTPolicy,
    PromptError,
    SessionHistory,
    TaskPrompt,
    load_engine,
    load_prompts,
    read_family,
    stack_rows,
    summarize_routing,
    window_row,
)


def tiny(**changes) -> M3DTConfig:
    base = dict(
        obs_dim=6,
        act_dim=3,
        context_steps=4,
        prompt_steps=2,
        d_model=16,
        n_layers=2,
        n_heads=2,
        ffn_mult=2,
        n_experts=3,
        router_hidden=8,
        max_timestep=30,
        dropout=0.0,
    )
    return M3DTConfig(**{**base, **changes})


def prompt(obs_w: int = 4, act_w: int = 2, steps: int = 2, seed: int = 0) -> TaskPrompt:
    g = torch.Generator().manual_seed(seed)
    return TaskPrompt(
        obs=torch.randn(steps, obs_w, generator=g),
        actions=torch.rand(steps, act_w, generator=g) * 2 - 1,
        returns_to_go=torch.tensor([5.0, 4.0][:steps]),
        timesteps=torch.arange(steps),
    )


def history(t: int, obs_w: int = 4, act_w: int = 2, seed: int = 1) -> SessionHistory:
    g = torch.Generator().manual_seed(seed)
    h = SessionHistory()
    h.observe(torch.randn(obs_w, generator=g))
    for _ in range(t):
        h.observe(
            torch.randn(obs_w, generator=g),
            reward=float(torch.rand((), generator=g)),
            action=torch.rand(act_w, generator=g) * 2 - 1,
        )
    return h


def policy(**changes) -> M3DTPolicy:
    torch.manual_seed(0)
    return M3DTPolicy(tiny(**changes)).eval()


def test_config_is_validated_and_round_trips():
    c = tiny()
    assert M3DTConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.window_tokens == 3 * (2 + 4)
    assert c.action.dim == 3 and c.observation.dim == 6
    with pytest.raises(ConfigError, match="n_heads"):
        tiny(n_heads=3)
    with pytest.raises(ConfigError, match="top_k"):
        tiny(top_k=4)
    with pytest.raises(ConfigError, match="unknown"):
        M3DTConfig.from_dict({**c.to_dict(), "bogus": 1})


@pytest.mark.parametrize("changes", [{}, {"moe": False}, {"top_k": 2}])
def test_forward_shapes_and_routing(changes):
    p = policy(**changes)
    c = p.config
    batch = stack_rows([window_row(c, history(t), prompt(), 3.0) for t in (0, 2, 7)])
    assert batch.obs.shape == (3, 4, 6) and batch.prompt_actions.shape == (3, 2, 3)
    assert batch.mask.sum(1).tolist() == [1, 3, 4]  # right-aligned, front padding masked
    out = p(batch)
    assert out.actions.shape == (3, 4, 3)
    assert out.actions.abs().max() <= 1
    if c.moe:
        assert [r.layer for r in out.routing] == [0, 1]
        valid_tokens = 3 * int(batch.mask.sum() + batch.prompt_mask.sum())
        for r in out.routing:
            assert int(r.tokens) == valid_tokens
            assert r.weights.sum().item() == pytest.approx(valid_tokens, rel=1e-5)
            assert int(r.top.sum()) == valid_tokens
        summary = summarize_routing([out.routing, out.routing])
        assert summary[0].expert_weights.shape == (3,)
        assert 0 <= summary[0].mean_entropy <= torch.log(torch.tensor(3.0)).item() + 1e-6
        assert set(summary[0].usage()) == {"soft"}
    else:
        assert out.routing == ()


def test_window_row_returns_to_go_and_padding():
    c = tiny()
    h = history(6)
    row = window_row(c, h, prompt(), 10.0)
    rewards = torch.tensor(h.rewards)
    expected = 10.0 - torch.cat([torch.zeros(1), rewards.cumsum(0)])[3:7]  # steps 3..6
    assert torch.allclose(row["rtg"], expected)
    assert row["timesteps"].tolist() == [3, 4, 5, 6]
    assert row["obs"][:, 4:].abs().sum() == 0  # padded observation features
    assert row["actions"][-1].abs().sum() == 0  # the action slot of s_t is empty
    assert row["action_mask"].tolist() == [True, True, False]


def test_padding_does_not_change_the_prediction():
    """A row's prediction is the same whatever the padding beside it (masked steps and widths)."""
    p = policy()
    c = p.config
    row = window_row(c, history(1), prompt(steps=1), 2.0)
    alone = p(stack_rows([row])).actions[0, -1]
    noisy = {k: v.clone() for k, v in row.items()}
    noisy["obs"][0] = 100.0  # a masked step's content
    noisy["prompt_obs"][0] = -50.0  # the masked prompt step
    assert torch.allclose(p(stack_rows([noisy])).actions[0, -1], alone, atol=1e-5)


def test_batched_equals_batch_of_one():
    p = policy()
    c = p.config
    rows = [window_row(c, history(t, seed=t), prompt(seed=t), 1.0 + t) for t in (0, 3, 9)]
    batched = p(stack_rows(rows)).actions[:, -1]
    for i, row in enumerate(rows):
        assert torch.allclose(p(stack_rows([row])).actions[0, -1], batched[i], atol=1e-5)


def test_loss_is_masked_to_real_steps_and_action_dims():
    p = policy()
    batch = stack_rows([window_row(p.config, history(2), prompt(), 1.0)])  # 3 real steps of K = 4
    loss, out = p.loss(batch)
    expected = ((out.actions[0, 1:, :2] - batch.actions[0, 1:, :2]) ** 2).mean()
    assert torch.allclose(loss, expected)
    changed = stack_rows([window_row(p.config, history(2), prompt(), 1.0)])
    changed.actions[:, 0] = 0.7  # the masked step's action
    assert torch.allclose(p.loss(changed)[0], loss)


def test_forced_experts_use_only_their_expert():
    p = policy()
    batch = stack_rows([window_row(p.config, history(3), prompt(), 1.0)] * 2)
    p.train()
    loss, _ = p.loss(batch, expert_ids=torch.tensor([1, 1]))
    loss.backward()
    for block in p.blocks:
        w2 = block.moe.experts.w2.grad
        assert w2[1].abs().sum() > 0
        assert w2[0].abs().sum() == 0 and w2[2].abs().sum() == 0
        assert block.moe.router[0].weight.grad is None or block.moe.router[0].weight.grad.abs().sum() == 0


def test_active_and_total_parameters():
    p = policy()
    experts = sum(
        b.moe.experts.w1.numel()
        + b.moe.experts.b1.numel()
        + b.moe.experts.w2.numel()
        + b.moe.experts.b2.numel()
        for b in p.blocks
    )
    assert p.num_parameters() - p.active_parameters() == experts - experts // 3
    assert policy(moe=False).active_parameters() == policy(moe=False).num_parameters()


def test_save_load_round_trip_with_prompts(tmp_path):
    p = policy()
    prompts = {"reach-v3": prompt(), "point-robot/goal-00": prompt(obs_w=2, act_w=2, steps=1)}
    d = p.save_pretrained(tmp_path / "ckpt", {"name": "tiny"}, prompts)
    assert read_family(d) == "m3dt"
    card = json.loads((d / "card.json").read_text())
    assert card["variant"] == "M3DT-3" and card["tasks"] == sorted(prompts)
    q = M3DTPolicy.from_pretrained(d)
    assert q.config == p.config
    for k, v in p.state_dict().items():
        assert torch.equal(v, q.state_dict()[k])
    loaded = load_prompts(d)
    assert set(loaded) == set(prompts)
    for name, pr in prompts.items():
        assert torch.equal(loaded[name].obs, pr.obs) and torch.equal(loaded[name].timesteps, pr.timesteps)


def test_a_t2mir_loader_is_refused_and_bad_weights_are_named(tmp_path):
    d = policy().save_pretrained(tmp_path / "ckpt")
    data = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**data, "d_model": 32}))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        M3DTPolicy.from_pretrained(d)


def test_engine_is_loaded_by_family_and_batches(tmp_path):
    p = policy()
    d = p.save_pretrained(tmp_path / "ckpt", prompts={"t": prompt()})
    engine = load_engine(d, EngineOptions(cache_slots=4))
    assert isinstance(engine, M3DTEngine) and engine.num_slots == 4 and engine.variant == "M3DT-3"
    assert engine.config.backbone == "prompt-dt"
    requests = [
        M3DTActRequest(key=i, history=history(t, seed=i), prompt=prompt(seed=i), target_return=3.0)
        for i, t in enumerate((0, 5, 12))
    ]
    out = engine.act(requests)
    assert [r.action.shape for r in out.results] == [(2,)] * 3  # cut to the prompt's action width
    assert len(out.routing) == 1 and len(out.routing[0]) == 2
    for request, result in zip(requests, out.results, strict=True):
        alone = engine.act([request]).results[0].action
        assert torch.allclose(alone, result.action, atol=1e-5)
    assert engine.slots_used == 0 and not out.results[0].cache_hit


def test_engine_refuses_bad_requests():
    engine = M3DTEngine(policy(), max_batch=2)
    h = history(1)
    with pytest.raises(TypeError, match="M3DTActRequest"):
        engine.act([ActRequest(key=0, history=h)])
    with pytest.raises(PromptError, match=r"prompt\.obs"):
        engine.act([M3DTActRequest(key=0, history=h, prompt=prompt(obs_w=7), target_return=1.0)])
    with pytest.raises(PromptError, match="target_return"):
        engine.act([M3DTActRequest(key=0, history=h, prompt=prompt(), target_return=float("nan"))])
    with pytest.raises(ValueError, match="twice"):
        engine.act([M3DTActRequest(key=0, history=h, prompt=prompt(), target_return=1.0)] * 2)
    with pytest.raises(ValueError, match="width"):
        engine.act([M3DTActRequest(key=0, history=history(1, obs_w=3), prompt=prompt(), target_return=1.0)])


def test_forced_expert_path_equals_one_hot_mixture():
    p = policy()
    batch = stack_rows([window_row(p.config, history(t), prompt(), 1.0) for t in (1, 4)])
    ids = torch.tensor([2, 0])
    fast = p(batch, expert_ids=ids).actions
    moe = p.blocks[0].moe
    h = torch.randn(2, 5, 16)
    gates = torch.nn.functional.one_hot(ids, 3).float()[:, None].expand(2, 5, 3)
    dense = moe.experts(h.reshape(10, 16), gates.reshape(10, 3)).view(2, 5, 16)
    assert torch.allclose(moe._one_expert_per_row(h, ids), dense, atol=1e-5)
    assert fast.shape == (2, 4, 3)
