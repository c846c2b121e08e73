"""`t2mir_model.config_io`: config dataclasses built from dotted paths, checked by type."""

from __future__ import annotations

import pytest

from t2mir_model import ConfigError, MoEConfig, T2MIRConfig
from t2mir_model.config_io import build, flatten, parse_text, replace_paths, resolve, value_fields


def test_paths_reach_through_nested_configs():
    paths = value_fields(T2MIRConfig)
    assert paths["moe.task_experts"] is int and paths["observation.dim"] is int
    assert {f"moe.{name}" for name in ("noisy_gating", "task_routing", "positions")} <= set(paths)


def test_a_key_is_a_path_or_one_paths_tail():
    paths = ["model.moe.task_experts", "model.d_model", "optim.lr", "sched.lr"]
    assert resolve("moe.task_experts", paths) == resolve("task_experts", paths) == "model.moe.task_experts"
    with pytest.raises(ConfigError, match="ambiguous") as caught:
        resolve("lr", paths)
    assert caught.value.field == "lr"
    assert resolve("optim.lr", paths) == "optim.lr"
    with pytest.raises(ConfigError, match=r"did you mean model\.moe\.task_experts"):
        resolve("model.task_experts", paths)


def test_build_and_replace_validate_with_the_dataclasses_own_rules():
    moe = build(MoEConfig, {"task_experts": 2, "task_top_k": 2, "w_con": 0})
    assert moe == MoEConfig(task_experts=2, task_top_k=2, w_con=0.0) and isinstance(moe.w_con, float)
    assert replace_paths(moe, {"noisy_gating": False}).noisy_gating is False
    with pytest.raises(ConfigError, match=r"moe\.task_top_k"):
        replace_paths(moe, {"task_top_k": 3})
    with pytest.raises(ConfigError, match="expected int"):
        build(MoEConfig, {"task_experts": 2.0})
    with pytest.raises(ConfigError, match="expected bool"):
        build(MoEConfig, {"token_moe": 1})


def test_text_is_parsed_by_the_fields_type():
    assert parse_text("x", bool, "off") is False and parse_text("x", int, "3") == 3
    assert parse_text("x", float, "1e-3") == 1e-3 and parse_text("x", str, "top") == "top"
    with pytest.raises(ConfigError, match="must be one of"):
        parse_text("moe.task_routing", value_fields(MoEConfig)["task_routing"], "mean")


def test_flatten_gives_dotted_paths():
    assert flatten({"a": 1, "model": {"d": 2, "moe": {"k": 3}}}) == {"a": 1, "model.d": 2, "model.moe.k": 3}
