"""`TrainConfig`: TOML files with the model's own config embedded, dotted overrides, documentation."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import tomllib

import pytest

from t2mir_model import (
    ActionSpec,
    ConfigError,
    MoEConfig,
    ObservationSpec,
    T2MIRConfig,
    T2MIRPolicy,
    read_card,
)
from t2mir_model.cli import main
from training.datasets.synthetic import write_synthetic_dataset
from training.train import TrainConfig, load_train_config
from training.train.config import CONFIG_DIR, MODEL_FROM_DATASET, parse_overrides, settable_fields
from training.train.loop import _card

BASE = {"dataset": "data/x", "out": "runs/x"}


T2MIR_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.toml") if not p.stem.startswith("m3dt-"))


@pytest.mark.parametrize("path", T2MIR_CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_config_loads(path):
    """Every T2MIR config file loads (the M3DT ones are loaded by tests/training/test_m3dt_*)."""
    config = load_train_config(path)
    assert 0 <= config.warmup_steps <= config.steps
    assert path.stem.split("-t2mir-")[1].startswith(config.model.backbone)
    with open(path, "rb") as f:
        model = tomllib.load(f)["model"]
    assert config.model.d_model == model["d_model"] and config.model.moe.w_con == model["moe"]["w_con"]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("m3dt-*.toml")), ids=lambda path: path.stem)
def test_every_shipped_m3dt_config_loads(path):
    """Every M3DT config file names its family and loads into the M3DT trainer's config."""
    from training.m3dt.config import is_m3dt_config, load_m3dt_config

    assert is_m3dt_config(path)
    config = load_m3dt_config(path)
    with open(path, "rb") as f:
        model = tomllib.load(f)["model"]
    assert config.model.d_model == model["d_model"]


def test_config_files_and_overrides():
    config = load_train_config("darkroom-t2mir-ad-cpu", ["steps=500", "moe.token_moe=false", "lr=1e-3"])
    assert (config.steps, config.model.moe.token_moe, config.lr) == (500, False, 1e-3)
    assert config.model.moe.task_experts == 12 and config.model.d_model == 64  # the file's values stay
    assert load_train_config("pointrobot-t2mir-dpt-cpu", ["prompt_history=0.2"]).prompt_history == 0.2
    with pytest.raises(ValueError, match="prompt_history"):
        load_train_config("pointrobot-t2mir-dpt-cpu", ["prompt_history=1.5"])
    assert load_train_config("pointrobot-t2mir-ad-cpu", ["ad_episodes=prefix"]).ad_episodes == "prefix"
    with pytest.raises(ValueError, match="ad_episodes"):
        load_train_config("pointrobot-t2mir-ad-cpu", ["ad_episodes=latest"])


@pytest.mark.parametrize(
    ("override", "read", "value"),
    [
        ("model.moe.task_experts=2", lambda c: c.model.moe.task_experts, 2),
        ("moe.task_experts=2", lambda c: c.model.moe.task_experts, 2),
        ("task_experts=2", lambda c: c.model.moe.task_experts, 2),
        ("model.d_model=64", lambda c: c.model.d_model, 64),
        ("d_model=64", lambda c: c.model.d_model, 64),
        ("backbone=dpt", lambda c: c.model.backbone, "dpt"),
        ("moe.noisy_gating=false", lambda c: c.model.moe.noisy_gating, False),
        ("moe.task_routing=sequence", lambda c: c.model.moe.task_routing, "sequence"),
        ("moe.positions=0,1", lambda c: c.model.moe.positions, "0,1"),
        ("model.reward_scale=0.5", lambda c: c.model.reward_scale, 0.5),
        ("moe.w_imp=0", lambda c: c.model.moe.w_imp, 0.0),
        ("steps=1000", lambda c: c.steps, 1000),
        ("eval_sample=no", lambda c: c.eval_sample, False),
    ],
)
def test_dotted_and_short_overrides(override, read, value):
    config = TrainConfig.from_dict(BASE, [override])
    assert read(config) == value and type(read(config)) is type(value)


def test_every_model_option_is_settable():
    settable = settable_fields()
    model = {
        f"model.{f.name}"
        for f in dataclasses.fields(T2MIRConfig)
        if f.name not in {"moe", *MODEL_FROM_DATASET}
    }
    moe = {f"model.moe.{f.name}" for f in dataclasses.fields(MoEConfig)}
    train = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    assert set(settable) == model | moe | train
    assert "model.moe.noisy_gating" in settable and "model.moe.task_routing" in settable


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("stepz=5", "stepz", "unknown config key"),
        ("moe_positions=top", "moe_positions", "unknown config key"),
        ("model.task_experts=2", "model.task_experts", "did you mean model.moe.task_experts"),
        ("model.env_id=x", "model.env_id", "comes from the dataset"),
        ("max_episode_steps=5", "model.max_episode_steps", "comes from the dataset"),
        ("observation.dim=3", "model.observation.dim", "comes from the dataset"),
        ("steps", "steps", "key=value"),
        ("moe=3", "moe", "is a table"),
    ],
)
def test_unknown_or_dataset_keys_are_refused(override, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_overrides([override])
    assert caught.value.field == key


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("moe.token_moe=maybe", "model.moe.token_moe", "true/false"),
        ("model.d_model=big", "model.d_model", "an integer"),
        ("steps=1.5", "steps", "an integer"),
        ("lr=fast", "lr", "a number"),
        ("backbone=transformer", "model.backbone", "must be one of"),
        ("moe.task_routing=mean", "model.moe.task_routing", "must be one of"),
        # the model's own validation runs on the result
        ("moe.task_top_k=9", "moe.task_top_k", r"must be in \[1, 8\]"),
        ("model.n_heads=3", "n_heads", "must divide"),
        ("moe.positions=7", "moe.positions", "indices must lie"),
        ("steps=0", "steps", "must be >= 1"),
    ],
)
def test_bad_values_are_refused(override, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainConfig.from_dict(BASE, [override])
    assert caught.value.field == key


def test_config_file_values_are_checked(tmp_path):
    path = tmp_path / "run.toml"
    cases = [
        ("token_experts = 6\n", "token_experts", "did you mean model.moe.token_experts"),
        ('[model]\nd_model = "64"\n', "model.d_model", "expected int, got str"),
        ("[model]\nmoe = 3\n", "model.moe", "is a table"),
        ("[model.moe]\ntoken_moe = 1\n", "model.moe.token_moe", "expected bool"),
        ("[model.action]\nn = 4\n", "model.action.n", "comes from the dataset"),
    ]
    for body, key, message in cases:
        path.write_text('dataset = "d"\nout = "o"\n' + body)
        with pytest.raises(ConfigError, match=message) as caught:
            load_train_config(path)
        assert caught.value.field == key
    path.write_text('out = "o"\n')
    with pytest.raises(ConfigError, match="missing"):
        load_train_config(path)
    assert load_train_config(path, ["dataset=d"]).dataset == "d"
    path.write_text('dataset = "d"\nout = "o"\n[model]\ndropout = 0\n')  # an integer is a float
    assert load_train_config(path).model.dropout == 0.0


def test_the_commands_name_the_refused_key(tmp_path):
    for command in ("train", "bench-train"):
        with pytest.raises(
            SystemExit, match=r"darkroom-t2mir-ad-cpu: model\.moe\.task_expert: unknown config key"
        ):
            main([command, "--config", "darkroom-t2mir-ad-cpu", "model.moe.task_expert=2"])


def test_override_replaces_fields_in_a_copy():
    config = TrainConfig.from_dict(BASE)
    changed = config.override({"moe.task_experts": 2, "moe.task_top_k": 1, "steps": 2000, "seed": 3})
    assert (changed.model.moe.task_experts, changed.model.moe.task_top_k, changed.steps) == (2, 1, 2000)
    assert config.model.moe.task_experts == 8 and changed.model.d_model == config.model.d_model
    with pytest.raises(ConfigError, match="task_top_k"):
        config.override({"moe.task_experts": 1})


def test_model_config_fills_in_the_dataset_fields():
    config = TrainConfig.from_dict(BASE, ["d_model=64", "moe.noisy_gating=false"])
    observation, action = ObservationSpec(3), ActionSpec("continuous", dim=2)
    model = config.model_config(observation, action, "t2mir/PointRobot-v0", 57)
    expected = T2MIRConfig(
        observation=observation,
        action=action,
        env_id="t2mir/PointRobot-v0",
        max_episode_steps=57,
        d_model=64,
        moe=MoEConfig(noisy_gating=False),
    )
    assert model == expected


def test_card_round_trip():
    config = TrainConfig.from_dict(BASE, ["moe.task_routing=sequence", "model.n_layers=2", "lr=1e-3"])
    card = json.loads(json.dumps(_card(config, 5, 1.0, None)))
    saved = card["training"]["config"]
    assert saved == config.to_dict() and saved["model"]["moe"]["task_routing"] == "sequence"
    assert not set(MODEL_FROM_DATASET) & set(saved["model"])
    assert TrainConfig.from_dict(saved) == config


def test_noisy_gating_and_task_routing_from_the_command_line(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "ds", "t2mir/PointRobot-v0", n_tasks=4, n_episodes=4)
    path = tmp_path / "run.toml"
    path.write_text(
        f'dataset = "{dataset}"\nout = "{tmp_path / "run"}"\nbatch_size = 2\nsteps = 2\nwarmup_steps = 1\n'
        "threads = 1\nfinal_eval = false\n[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\ncontext_episodes = 2\n"
    )
    argv = [
        "train",
        "--config",
        str(path),
        "--no-progress",
        "moe.noisy_gating=false",
        "moe.task_routing=sequence",
    ]
    assert main(argv) == 0
    policy = T2MIRPolicy.from_pretrained(tmp_path / "run" / "final")
    assert (policy.config.moe.noisy_gating, policy.config.moe.task_routing) == (False, "sequence")
    moe = read_card(tmp_path / "run" / "final")["training"]["config"]["model"]["moe"]
    assert (moe["noisy_gating"], moe["task_routing"]) == (False, "sequence")


@pytest.mark.parametrize("cls", [TrainConfig, T2MIRConfig, MoEConfig, ObservationSpec, ActionSpec])
def test_every_config_field_has_a_docstring(cls):
    (node,) = ast.parse(inspect.getsource(cls)).body
    body = node.body
    documented = {
        stmt.target.id
        for stmt, after in itertools.pairwise(body)
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }
    assert documented == {f.name for f in dataclasses.fields(cls)}
