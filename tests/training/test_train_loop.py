"""Training smoke runs for every backbone and ablation, resume equivalence, and eval determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_factory import random_steps

from t2mir_model import T2MIRPolicy, variant_name
from t2mir_model.cli import main
from training.datasets.synthetic import write_synthetic_dataset
from training.envs import task_split
from training.evaluation import evaluate
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def point_dataset(tmp_path_factory):
    """Random Point-Robot histories with variable episode lengths (exercises padding)."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("ds") / "point",
        "t2mir/PointRobot-v0",
        n_tasks=4,
        n_episodes=8,
        variable_lengths=True,
    )


@pytest.fixture(scope="module")
def darkroom_dataset(tmp_path_factory):
    """Real noise-distilled DarkRoom histories (tiny budget): learnable actions and expert labels."""
    out = tmp_path_factory.mktemp("ds") / "darkroom"
    assert (
        main(
            [
                "collect",
                "--env",
                "t2mir/DarkRoom-v0",
                "--quality",
                "mixed",
                "--budget",
                "tiny",
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def tiny(dataset, out, **changes) -> TrainConfig:
    """A seconds-long run; ``changes`` are keyed as overrides are (``backbone``, ``token_moe``)."""
    base = TrainConfig.from_dict(
        {
            "dataset": str(dataset),
            "out": str(out),
            "n_queries": 4,
            "batch_size": 4,
            "steps": 12,
            "warmup_steps": 2,
            "lr": 3e-3,
            "log_every": 1,
            "checkpoint_every": 100,
            "eval_episodes": 2,
            "threads": 1,
            "model": {
                "d_model": 32,
                "n_layers": 2,
                "n_heads": 2,
                "ffn_mult": 2,
                "dropout": 0.1,
                "context_episodes": 2,
            },
        }
    )
    return base.override(changes)


@pytest.mark.parametrize("backbone", ["ad", "dpt"])
@pytest.mark.parametrize(("token", "task"), [(True, True), (True, False), (False, True), (False, False)])
def test_every_variant_trains_and_its_checkpoint_loads(darkroom_dataset, tmp_path, backbone, token, task):
    config = tiny(darkroom_dataset, tmp_path / "run", backbone=backbone, token_moe=token, task_moe=task)
    result = train(config, progress=False)
    first = np.mean([loss for _, loss in result.losses[:3]])
    last = np.mean([loss for _, loss in result.losses[-3:]])
    assert last < first
    policy = T2MIRPolicy.from_pretrained(result.final_dir)
    assert policy.config.backbone == backbone
    assert (policy.config.moe.token_moe, policy.config.moe.task_moe) == (token, task)
    assert variant_name(policy.config).endswith(backbone.upper()) or "w/o" in variant_name(policy.config)
    assert result.eval is not None and result.eval.returns.shape == (20, 2)
    assert (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "tb").is_dir()


def test_resumed_run_equals_uninterrupted_run(point_dataset, tmp_path):
    straight = train(tiny(point_dataset, tmp_path / "a", final_eval=False), progress=False)
    interrupted = tiny(point_dataset, tmp_path / "b", final_eval=False)
    partial = train(interrupted, progress=False, stop_after=5)
    assert partial.steps == 5 and (tmp_path / "b" / "last" / "trainer.json").exists()
    resumed = train(interrupted, progress=False)
    a = T2MIRPolicy.from_pretrained(straight.final_dir).state_dict()
    b = T2MIRPolicy.from_pretrained(resumed.final_dir).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)


def test_evaluation_is_deterministic_for_a_seed(point_dataset, tmp_path):
    result = train(tiny(point_dataset, tmp_path / "run", steps=2, final_eval=False), progress=False)
    policy = T2MIRPolicy.from_pretrained(result.final_dir)
    tasks = task_split("t2mir/PointRobot-v0")[1]
    first = evaluate(policy, tasks, 2, seed=3)
    again = evaluate(policy, tasks, 2, seed=3)
    other = evaluate(policy, tasks, 2, seed=4)
    np.testing.assert_array_equal(first.returns, again.returns)
    assert not np.array_equal(first.returns, other.returns)
    summary = first.summary()
    assert summary["last_ci95"][0] <= summary["last_mean"] <= summary["last_ci95"][1]


def test_prefix_segments_train(point_dataset, tmp_path):
    result = train(
        tiny(point_dataset, tmp_path / "run", ad_episodes="prefix", final_eval=False), progress=False
    )
    assert np.mean([loss for _, loss in result.losses[-3:]]) < np.mean(
        [loss for _, loss in result.losses[:3]]
    )
    assert T2MIRPolicy.from_pretrained(result.final_dir).config.backbone == "ad"


def test_dpt_prompts_are_truncated_to_random_prefixes_keys_stay_whole(darkroom_dataset):
    from training.datasets import load_dataset
    from training.train.batches import to_policy_batches

    ds = load_dataset(darkroom_dataset, split="train")
    rng = np.random.default_rng(0)
    batch, keys = to_policy_batches(ds.sample_dpt(rng, 64, 2), True, rng)
    prompt_valid = batch.tokens.valid[:, :-2].sum(1) // 3  # prompt steps kept per row
    assert prompt_valid.min() == 0 and prompt_valid.max() > 90 and len(set(prompt_valid.tolist())) > 20
    assert (keys.tokens.valid[:, :-2].sum(1) == 300).all()
    assert batch.target_mask[:, -2:].all() and not batch.target_mask[:, :-2].any()


def test_sparse_expert_dispatch_trains_like_dense(point_dataset, tmp_path):
    dense = train(tiny(point_dataset, tmp_path / "dense", final_eval=False), progress=False)
    sparse_config = tiny(point_dataset, tmp_path / "sparse", final_eval=False, expert_dispatch="sparse")
    sparse = train(sparse_config, progress=False)
    for (_, a), (_, b) in zip(dense.losses, sparse.losses, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    # Parameters are compared through what the policies compute: Adam turns the rounding noise of
    # gradients that are zero in exact arithmetic (the attention key bias) into full-size steps of
    # parameters that cannot change any output.
    policies = [T2MIRPolicy.from_pretrained(r.final_dir) for r in (dense, sparse)]
    tokens = random_steps(policies[0].config, 12, seed=5, batch=3)
    torch.testing.assert_close(policies[1](tokens).head, policies[0](tokens).head, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expert_dispatch"):
        sparse_config.override({"expert_dispatch": "fast"})


def test_bench_train_times_both_dispatches(darkroom_dataset, tmp_path, capsys):
    config = tmp_path / "bench.toml"
    config.write_text(
        f'dataset = "{darkroom_dataset}"\nout = "{tmp_path / "unused"}"\nbatch_size = 2\nthreads = 1\n'
        "[model]\nd_model = 32\nn_layers = 2\nn_heads = 2\ncontext_episodes = 2\n"
    )
    out = tmp_path / "bench.json"
    assert main(["bench-train", "--config", str(config), "--steps", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dense_ms"] > 0 and result["sparse_ms"] > 0
    assert result["speedup"] == result["dense_ms"] / result["sparse_ms"]
    assert result["first_loss_sparse"] == pytest.approx(result["first_loss_dense"], rel=1e-5)
    assert "sparse" in capsys.readouterr().out
    assert not (tmp_path / "unused").exists()
