"""Checkpoints: save/load round trip, clear refusals of corrupt or mismatching directories."""

from __future__ import annotations

import json

import pytest
import torch
from model_factory import random_steps, tiny_config, tiny_policy
from safetensors.torch import save_file

from t2mir_model import CheckpointError, T2MIRPolicy, read_card


def test_round_trip_gives_identical_outputs(tmp_path):
    policy = tiny_policy(discrete=False)
    policy.save_pretrained(
        tmp_path / "ckpt",
        card={"name": "tiny", "training": {"command": "t2mir train x"}, "metrics": {"return": 1.5}},
    )
    loaded = T2MIRPolicy.from_pretrained(tmp_path / "ckpt")
    tokens = random_steps(policy.config, 4, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).head, policy(tokens).head, atol=0, rtol=0)
    assert loaded.config == policy.config and not loaded.training
    card = read_card(tmp_path / "ckpt")
    assert card["name"] == "tiny" and card["metrics"] == {"return": 1.5} and card["variant"] == "T2MIR-AD"
    assert card["normalisation"]["obs_std"] == [1.0, 2.0, 0.5, 1.0]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "README.md",
        "card.json",
        "config.json",
        "model.safetensors",
    ]


def test_mismatching_config_is_refused_with_the_tensors_at_fault(tmp_path):
    tiny_policy().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["moe"]["token_experts"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*token\.router"):
        T2MIRPolicy.from_pretrained(tmp_path)


def test_corrupt_weights_are_refused(tmp_path):
    tiny_policy().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        T2MIRPolicy.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "missing"),
        (lambda d: (d / "model.safetensors").unlink(), "missing"),
        (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
        (
            lambda d: (d / "config.json").write_text(
                json.dumps({**tiny_config().to_dict(), "schema_version": 99})
            ),
            "schema",
        ),
        (
            lambda d: (d / "config.json").write_text(json.dumps({**tiny_config().to_dict(), "d_model": 31})),
            "d_model",
        ),
    ],
)
def test_broken_directories_are_refused(tmp_path, mutate, message):
    tiny_policy().save_pretrained(tmp_path)
    mutate(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        T2MIRPolicy.from_pretrained(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        T2MIRPolicy.from_pretrained(tmp_path / "nope")


def test_format_version_1_weights_are_upgraded_on_load(tmp_path):
    policy = tiny_policy()
    policy.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in policy.state_dict().items()}
    banks = [k for k in state if k.endswith("experts.w1")]
    assert banks
    for k in banks:  # version 1 stored expert first layers as (E, d, hidden)
        state[k] = state[k].permute(1, 0, 2).contiguous()
    save_file(
        state, tmp_path / "model.safetensors", metadata={"format": "t2mir-checkpoint", "format_version": "1"}
    )
    loaded = T2MIRPolicy.from_pretrained(tmp_path)
    tokens = random_steps(policy.config, 4, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).head, policy(tokens).head, atol=0, rtol=0)


def test_a_newer_format_version_is_refused(tmp_path):
    policy = tiny_policy()
    policy.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in policy.state_dict().items()}
    save_file(
        state, tmp_path / "model.safetensors", metadata={"format": "t2mir-checkpoint", "format_version": "99"}
    )
    with pytest.raises(CheckpointError, match="newer than this build"):
        T2MIRPolicy.from_pretrained(tmp_path)
