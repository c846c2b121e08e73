"""load_engine: one entry point from a checkpoint directory to an engine of the family it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_factory import tiny_config, tiny_policy

from t2mir_model import (
    ActRequest,
    CheckpointError,
    DecodeEngine,
    EngineOptions,
    KVCache,
    M3DTActRequest,
    M3DTEngine,
    PolicyEngine,
    SessionHistory,
    T2MIRPolicy,
    load_engine,
    load_prompts,
    read_card,
    read_family,
    variant_name,
)

ALL_SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[2] / "checkpoints").glob("*") if p.is_dir())
SHIPPED = [p for p in ALL_SHIPPED if read_family(p) == "t2mir"]
SHIPPED_M3DT = [p for p in ALL_SHIPPED if read_family(p) == "m3dt"]


def protocol_members(protocol: type) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")}


def test_the_t2mir_engine_has_every_member_of_the_interface():
    engine = DecodeEngine(tiny_policy(), num_slots=2)
    for name in protocol_members(PolicyEngine):
        assert hasattr(engine, name), name
    assert engine.variant == variant_name(engine.config) == "T2MIR-AD"


@pytest.mark.parametrize("directory", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoints_load_as_t2mir_engines(directory):
    assert read_family(directory) == "t2mir"
    engine = load_engine(directory, EngineOptions(cache_slots=2))
    assert isinstance(engine, DecodeEngine) and engine.num_slots == 2
    reference = T2MIRPolicy.from_pretrained(directory)
    assert engine.config == reference.config
    for (name, got), want in zip(
        engine.policy.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name
    history = SessionHistory()
    history.observe(torch.zeros(engine.config.observation.dim))
    (result,) = engine.act([ActRequest("s", history)]).results
    assert not result.cache_hit


@pytest.mark.parametrize("directory", SHIPPED_M3DT, ids=lambda p: p.name)
def test_shipped_m3dt_checkpoints_load_as_m3dt_engines(directory):
    engine = load_engine(directory, EngineOptions(cache_slots=2))
    assert isinstance(engine, M3DTEngine) and engine.num_slots == 2
    prompts = load_prompts(directory)
    assert set(prompts) == set(read_card(directory)["tasks"])
    name = sorted(prompts)[0]
    history = SessionHistory()
    history.observe(torch.zeros(prompts[name].obs_width))
    request = M3DTActRequest(key="s", history=history, prompt=prompts[name], target_return=1.0)
    (result,) = engine.act([request]).results
    assert result.action.shape == (prompts[name].action_width,)


def save(tmp_path: Path, **moe: object) -> Path:
    return tiny_policy(**moe).save_pretrained(tmp_path / "ckpt", {"name": "tiny"})


def test_the_cache_pool_fills_the_memory_budget(tmp_path):
    directory = save(tmp_path)
    config = tiny_config()
    per_slot = KVCache.bytes_per_slot(config, config.max_context_tokens)
    assert load_engine(directory, EngineOptions(cache_bytes=5 * per_slot + 1)).num_slots == 5
    assert load_engine(directory, EngineOptions(cache_bytes=1)).num_slots == 1


@pytest.mark.parametrize("directory", SHIPPED, ids=lambda p: p.name)
def test_the_cache_pool_stays_within_its_memory_budget(directory):
    budget = 8 * 1024 * 1024
    engine = load_engine(directory, EngineOptions(cache_bytes=budget))
    assert isinstance(engine, DecodeEngine)
    per_slot = KVCache.bytes_per_slot(engine.config, engine.cache.max_tokens)
    assert engine.cache.nbytes <= engine.num_slots * per_slot <= budget < (engine.num_slots + 1) * per_slot


def test_a_config_may_name_the_t2mir_family(tmp_path):
    directory = save(tmp_path)
    data = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({"family": "t2mir", **data}))
    assert read_family(directory) == "t2mir"
    assert load_engine(directory).config == tiny_config()


def test_an_unknown_family_is_refused_by_name(tmp_path):
    directory = save(tmp_path)
    data = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**data, "family": "dqn"}))
    with pytest.raises(CheckpointError, match="'dqn' is not part of this build"):
        load_engine(directory)
    with pytest.raises(CheckpointError, match="'dqn' model, not a T2MIR one"):
        T2MIRPolicy.from_pretrained(directory)


def test_non_causal_task_routing_cannot_be_served(tmp_path):
    with pytest.raises(ValueError, match="cannot be served"):
        load_engine(save(tmp_path, task_routing="sequence"))


def test_a_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_engine(tmp_path / "nowhere")
