"""Ablation switches and MoE positions give the documented architecture."""

from __future__ import annotations

import pytest
import torch
from model_factory import random_steps, tiny_config

from t2mir_model import ConfigError, MoEConfig, T2MIRConfig, T2MIRPolicy, variant_name


def build(token: bool, task: bool, positions: str = "top", n_layers: int = 4) -> T2MIRPolicy:
    base = tiny_config()
    moe = MoEConfig(token_moe=token, task_moe=task, positions=positions)
    return T2MIRPolicy(base.replace(moe=moe, n_layers=n_layers))


@pytest.mark.parametrize(
    ("token", "task", "variant", "token_width", "task_width"),
    [
        (True, True, "T2MIR-AD", 16, 16),
        (True, False, "T2MIR-AD w/o task MoE", 32, None),
        (False, True, "T2MIR-AD w/o token MoE", None, 32),
        (False, False, "AD", None, None),
    ],
)
def test_ablation_switches(token, task, variant, token_width, task_width):
    policy = build(token, task)
    assert variant_name(policy.config) == variant
    top = policy.blocks[-1]
    if not (token or task):
        assert all(b.moe is None and b.ffn is not None for b in policy.blocks)
    else:
        assert top.ffn is None
        assert (top.moe.token is not None) == token and (top.moe.task is not None) == task
        if token:
            assert top.moe.token.experts.w2.shape == (6, 4 * token_width, token_width)
            assert (
                top.moe.token.router.inner.weight.shape == (6, 32) and top.moe.token.router.inner.bias is None
            )
        if task:
            assert top.moe.task.experts.w2.shape == (8, 4 * task_width, task_width)
    assert all(b.moe is None for b in policy.blocks[:-1])
    with torch.no_grad():
        out = policy.eval()(random_steps(policy.config, 3, seed=0))
    assert out.head.shape == (1, 9, 5)
    assert len(out.routing) == (1 if token or task else 0)


@pytest.mark.parametrize(
    ("positions", "layers"),
    [("top", [3]), ("bottom", [0]), ("middle", [2]), ("all", [0, 1, 2, 3]), ("0,2", [0, 2])],
)
def test_moe_positions(positions, layers):
    policy = build(True, True, positions)
    assert [i for i, b in enumerate(policy.blocks) if b.moe is not None] == layers


def test_dpt_backbone_and_continuous_head():
    policy = T2MIRPolicy(tiny_config(backbone="dpt", discrete=False)).eval()
    assert variant_name(policy.config) == "T2MIR-DPT"
    with torch.no_grad():
        head = policy(random_steps(policy.config, 2, seed=0)).head
    assert head.shape == (1, 6, 3) and head.abs().max() <= 1
    actions = policy.select_action(head[:, -1])
    assert actions.shape == (1, 3) and (actions.abs() <= 2).all()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"d_model": 33}, "d_model"),
        ({"n_heads": 5}, "n_heads"),
        ({"backbone": "gpt"}, "backbone"),
        ({"dropout": 1.5}, "dropout"),
        ({"moe": {"token_top_k": 7}}, "moe.token_top_k"),
        ({"moe": {"positions": "9"}}, "moe.positions"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"unrewarded_context": "sometimes"}, "unrewarded_context"),
        ({"backbone": "dpt", "unrewarded_context": "drop"}, "unrewarded_context"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        if "moe" in change:
            tiny_config().replace(moe=MoEConfig(**change["moe"]))
        else:
            tiny_config().replace(**change)
    assert info.value.field == field


def test_config_json_round_trip():
    config = tiny_config(discrete=False)
    assert T2MIRConfig.from_dict(config.to_dict()) == config
    dropping = config.replace(unrewarded_context="drop")
    assert T2MIRConfig.from_dict(dropping.to_dict()) == dropping
    older = config.to_dict()
    del older["unrewarded_context"]  # a config saved before the field existed plays as before
    assert T2MIRConfig.from_dict(older).unrewarded_context == "keep"
    data = config.to_dict()
    data["surprise"] = 1
    with pytest.raises(ConfigError, match="surprise"):
        T2MIRConfig.from_dict(data)
