"""M3DT suite: collection on a few tasks, the trainer's three stages (freezing, grouping, resume),
and evaluation of a tiny checkpoint through the serving engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from t2mir_model import ConfigError, M3DTEngine, M3DTPolicy, load_engine, load_prompts, read_card
from t2mir_model.cli import main
from training.m3dt.collect import SuiteCollectConfig, collect_suite
from training.m3dt.config import load_m3dt_config
from training.m3dt.dataset import load_suite, sample_batch
from training.m3dt.eval_command import DEFAULT_PROTOCOL, card_episodes
from training.m3dt.suite import TaskRunner, suite_tasks
from training.m3dt.trainer import TRAINER_TENSORS, lr_at, part_of, train_m3dt, zero_expert_outputs

TINY = [
    "model.d_model=16",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.n_experts=3",
    "model.router_hidden=8",
    "model.context_steps=4",
    "model.prompt_steps=2",
    "batch_size=4",
    "log_every=2",
    "checkpoint_every=2",
    "grouping_batches=1",
    "grouping_restarts=2",
    "backbone_steps=4",
    "expert_steps=4",
    "router_steps=4",
]


@pytest.fixture(scope="module")
def point_suite(tmp_path_factory) -> Path:
    """Four Point-Robot goals, 3 episodes each (no simulator needed)."""
    out = tmp_path_factory.mktemp("suite") / "data"
    collect_suite(
        SuiteCollectConfig(out=str(out), n_metaworld=0, n_point=4, point_episodes=3, progress=False)
    )
    return out


def test_collect_cli_on_a_few_tasks_with_metaworld(tmp_path, capsys):
    out = tmp_path / "m3dt"
    args = ["collect", "--suite", "m3dt", "--out", str(out), "--episodes", "1", "--point-episodes", "2"]
    args += ["--n-metaworld", "1", "--n-point", "2", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["tasks"]) == 3
    assert manifest["noise"] == {"metaworld_std": 0.1, "point_robot_std": 0.3}
    mw = manifest["tasks"][0]
    assert mw["family"] == "metaworld" and mw["success_rate"] in (0.0, 1.0)
    with np.load(out / mw["file"]) as f:
        assert f["obs"].shape == (1, 150, 39) and f["actions"].shape == (1, 150, 4)
        assert f["success"].dtype == bool and np.abs(f["actions"]).max() <= 1
    with np.load(out / "point-robot-00.npz") as f:
        assert f["obs"].shape == (2, 20, 2)
    before = (out / mw["file"]).stat().st_mtime_ns
    assert main(args) == 0  # resumes: nothing to do
    assert (out / mw["file"]).stat().st_mtime_ns == before
    assert "complete: 3/3" in capsys.readouterr().out


def test_windows_are_padded_and_masked(point_suite):
    cfg = load_m3dt_config("m3dt-8", [f"dataset={point_suite}", "out=x", *TINY])
    data = load_suite(point_suite, cfg.model)
    assert data.n_tasks == 4 and data.obs.shape[2] == 39
    batch = sample_batch(data, np.array([0, 1, 2, 3]), cfg.model, np.random.default_rng(0))
    assert batch.obs.shape == (4, 4, 39) and batch.prompt_obs.shape == (4, 2, 39)
    assert batch.action_mask[:, :2].all() and not batch.action_mask[:, 2:].any()
    assert (batch.obs[..., 2:] == 0).all()
    assert (batch.obs[~batch.mask] == 0).all() and (batch.timesteps[batch.mask] >= 0).all()
    with np.load(point_suite / "point-robot-00.npz") as f:
        rewards = f["rewards"][0]
    assert np.allclose(data.rtg[0, :20], np.cumsum(rewards[::-1])[::-1], atol=1e-4)  # return-to-go


def test_config_refuses_moe_stages_for_a_dense_model(point_suite):
    with pytest.raises(ConfigError, match="dense"):
        load_m3dt_config("m3dt-8", [f"dataset={point_suite}", "model.moe=false"])
    cfg = load_m3dt_config("m3dt-dense-active", [f"dataset={point_suite}"])
    assert not cfg.model.moe and cfg.total_steps == load_m3dt_config("m3dt-8").total_steps


def _parts(policy: M3DTPolicy) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {"backbone": {}, "experts": {}, "routers": {}}
    for name, p in policy.state_dict().items():
        out[part_of(name)][name] = p.clone()
    return out


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(point_suite, tmp_path_factory) -> tuple[Path, list[dict[str, dict[str, torch.Tensor]]]]:
    """A tiny run stopped after each stage: the weights of every part at each boundary."""
    out = tmp_path_factory.mktemp("run") / "m3dt"
    cfg = load_m3dt_config("m3dt-8", [f"dataset={point_suite}", f"out={out}", *TINY])
    torch.manual_seed(cfg.seed)  # the trainer's initialisation
    policy = M3DTPolicy(cfg.model)
    zero_expert_outputs(policy)
    snapshots = [_parts(policy)]
    for _ in range(3):
        result = train_m3dt(cfg, progress=False, stop_after=4)
        snapshots.append(_parts(M3DTPolicy.from_pretrained(out / "last")))
    assert result.steps == 12 and (out / "final").exists()
    return out, snapshots


def test_each_stage_trains_only_its_part(trained):
    _, (init, after1, after2, after3) = trained
    assert not _same(init["backbone"], after1["backbone"])
    assert _same(init["experts"], after1["experts"]) and _same(init["routers"], after1["routers"])
    assert _same(after1["backbone"], after2["backbone"])  # frozen in stage 2: bit-identical
    assert not _same(after1["experts"], after2["experts"])
    assert _same(after1["routers"], after2["routers"])
    assert _same(after2["backbone"], after3["backbone"]) and _same(after2["experts"], after3["experts"])
    assert not _same(after2["routers"], after3["routers"])


def test_routers_hold_their_own_peak_learning_rate(trained):
    out, _ = trained
    cfg = load_m3dt_config("m3dt-8")
    assert not cfg.router_lr_decay and cfg.router_steps == cfg.expert_steps and cfg.router_lr > cfg.lr
    n = cfg.router_steps
    assert lr_at(0, n, cfg, stage=2) == pytest.approx(cfg.router_lr / (n // 10))  # warmup
    assert lr_at(n - 1, n, cfg, stage=2) == cfg.router_lr  # held
    assert lr_at(n - 1, n, cfg, stage=1) < 0.11 * cfg.lr  # stages 1 and 2 decay to 10% of lr
    # the tiny run's last router step ran at the configured peak rate
    state = torch.load(out / "last" / TRAINER_TENSORS, weights_only=True)["optimizer"]
    assert [g["lr"] for g in state["param_groups"]] == [cfg.router_lr, cfg.router_lr]


def test_experts_start_from_a_zero_output(trained):
    _, (init, after1, *_) = trained
    outputs = [k for k in init["experts"] if k.endswith(("experts.w2", "experts.b2"))]
    assert outputs and all(not after1["experts"][k].any() for k in outputs)  # zero until stage 2
    assert all(after1["experts"][k].any() for k in after1["experts"] if k.endswith("experts.w1"))


def test_diagnostics_split_the_loss_by_stage(trained, point_suite, tmp_path):
    from training.m3dt.diagnose import main as diagnose

    out, _ = trained
    path = tmp_path / "d.json"
    assert (
        diagnose(["--dataset", str(point_suite), "--batches", "2", "--json", str(path), str(out / "final")])
        == 0
    )
    (result,) = json.loads(path.read_text())
    assert result["backbone"] > 0 and result["group_experts"] > 0 and result["soft"] > 0
    assert len(result["entropy"]) == 2 and all(0 <= e <= np.log(3) + 1e-6 for e in result["entropy"])


def test_final_checkpoint_ships_grouping_prompts_and_targets(trained):
    out, _ = trained
    card = read_card(out / "final")
    groups = card["grouping"]["groups"]
    assert card["grouping"]["rule"] == "gradient" and sorted(t for g in groups for t in g) == sorted(
        card["tasks"]
    )
    assert len(groups) == 3 and all(groups)
    assert set(card["targets"]) == set(card["tasks"]) == set(load_prompts(out / "final"))
    assert card["data"]["dataset_sha256"] and "tb" in {p.name for p in out.iterdir()}
    assert isinstance(load_engine(out / "final"), M3DTEngine)


def test_random_grouping_and_dense_baseline_train(point_suite, tmp_path):
    out = tmp_path / "r"
    assert (
        main(
            [
                "train",
                "--config",
                "m3dt-8",
                f"dataset={point_suite}",
                f"out={out}",
                "grouping=random",
                *TINY,
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_card(out / "final")["grouping"]["rule"] == "random"
    dense = tmp_path / "d"
    tiny_dense = [o for o in TINY if not o.startswith(("expert_steps", "router_steps", "backbone_steps"))]
    args = ["train", "--config", "m3dt-dense-active", f"dataset={point_suite}", f"out={dense}", *tiny_dense]
    assert main([*args, "backbone_steps=4", "--no-progress"]) == 0
    assert read_card(dense / "final")["variant"] == "Prompt-DT"


def test_eval_runs_the_checkpoint_through_the_engine(trained, tmp_path, capsys):
    out, _ = trained
    path = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(out / "final"), "--compare", str(out / "final")]
    assert main([*args, "--point-episodes", "2", "--json", str(path), "--no-progress", "--update-card"]) == 0
    results = json.loads(path.read_text())
    assert len(results) == 2 and results[0]["per_task"] == results[1]["per_task"]  # same episodes
    assert set(results[0]["per_task"]) == set(read_card(out / "final")["tasks"])
    assert results[0]["family_scores"].keys() == {"point-robot"}
    assert read_card(out / "final")["metrics"]["mean_score"] == results[0]["mean_score"]
    assert "mean score" in capsys.readouterr().out


def test_collect_without_env_or_suite_is_refused(tmp_path, capsys):
    assert main(["collect", "--out", str(tmp_path / "x")]) == 2
    assert "--env, --quality, --budget required (or --suite)" in capsys.readouterr().err


def test_eval_replays_the_episodes_and_seed_the_card_records(tmp_path):
    (tmp_path / "card.json").write_text(
        json.dumps({"metrics": {"episodes": {"metaworld": 2, "point-robot": 5, "seed": 77}}})
    )
    assert card_episodes(tmp_path) == {"metaworld": 2, "point-robot": 5, "seed": 77}
    (tmp_path / "card.json").write_text(json.dumps({"metrics": {"episodes": {"metaworld": 4}}}))
    assert card_episodes(tmp_path) == {**DEFAULT_PROTOCOL, "metaworld": 4}


def test_a_run_starts_from_another_runs_stage_one(point_suite, tmp_path):
    """An expert-count sweep shares stage 1: a run with ``backbone_from`` continues exactly as the
    source run would have, and a run with another number of experts keeps the source's backbone."""
    overrides = [f"dataset={point_suite}", *TINY]
    source = load_m3dt_config("m3dt-8", [*overrides, f"out={tmp_path / 'a'}"])
    train_m3dt(source, progress=False, stop_after=4)
    stage1 = tmp_path / "stage1"
    shutil.copytree(tmp_path / "a" / "last", stage1)
    train_m3dt(source, progress=False)  # the uninterrupted run
    same = load_m3dt_config("m3dt-8", [*overrides, f"out={tmp_path / 'b'}", f"backbone_from={stage1}"])
    result = train_m3dt(same, progress=False)
    assert result.steps == 12
    a, b = M3DTPolicy.from_pretrained(tmp_path / "a" / "final"), M3DTPolicy.from_pretrained(result.final_dir)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert read_card(result.final_dir)["training"]["config"]["backbone_from"] == str(stage1)

    wider = [*overrides, f"out={tmp_path / 'c'}", f"backbone_from={stage1}", "model.n_experts=5"]
    c = M3DTPolicy.from_pretrained(train_m3dt(load_m3dt_config("m3dt-8", wider), progress=False).final_dir)
    assert c.config.n_experts == 5
    assert _same(_parts(M3DTPolicy.from_pretrained(stage1))["backbone"], _parts(c)["backbone"])

    for bad, match in [
        ("backbone_steps=3", "end of stage 1"),
        ("seed=1", "settings: seed"),
        ("lr=0.01", "settings: lr"),
        ("model.d_model=32", "settings: model.d_model"),
    ]:
        cfg = load_m3dt_config(
            "m3dt-8", [*overrides, f"out={tmp_path / 'd'}", f"backbone_from={stage1}", bad]
        )
        with pytest.raises(ValueError, match=match):
            train_m3dt(cfg, progress=False)
    cfg = load_m3dt_config("m3dt-8", [*overrides, f"out={tmp_path / 'e'}", f"backbone_from={tmp_path}"])
    with pytest.raises(ValueError, match="no resumable run state"):
        train_m3dt(cfg, progress=False)
    inside = load_m3dt_config("m3dt-8", [*overrides, f"out={tmp_path}", f"backbone_from={stage1}"])
    with pytest.raises(ValueError, match="inside this run's directory"):
        train_m3dt(inside, progress=False)
    with pytest.raises(ConfigError, match="dense"):
        load_m3dt_config(
            "m3dt-dense-active", [*overrides, "expert_steps=0", "router_steps=0", f"backbone_from={stage1}"]
        )
    # a run directory holding a stage 1 of its own is not silently continued from it
    own = [*overrides, f"out={tmp_path / 'f'}"]
    train_m3dt(load_m3dt_config("m3dt-8", own), progress=False, stop_after=2)
    with pytest.raises(ValueError, match="stage 1 of this run's own"):
        train_m3dt(load_m3dt_config("m3dt-8", [*own, f"backbone_from={stage1}"]), progress=False)


def test_train_command_says_where_a_stopped_run_left_its_state(point_suite, tmp_path, capsys):
    args = ["train", "--no-progress", "--config", "m3dt-8", "--stop-after", "4"]
    args += [f"dataset={point_suite}", f"out={tmp_path / 'run'}", *TINY]
    assert main(args) == 0
    assert "stopped at step 4 (" in capsys.readouterr().out
    assert main(args[:4] + args[6:]) == 0  # resumed to the end
    assert f"final checkpoint: {tmp_path / 'run' / 'final'} (12 steps" in capsys.readouterr().out


def test_fresh_metaworld_goals_and_starts_follow_the_runners_seed():
    """Meta-World 3's reset ignores its seed argument: a test-split runner seeds the simulator
    itself, so the same seed gives the same goals and episodes in any process (here: two runners
    in one process, whose simulators would otherwise draw from unrelated streams)."""
    task = suite_tasks(n_metaworld=1, n_point=0)[0]
    firsts, trajectories = [], []
    for seed in (7, 7, 8):
        runner = TaskRunner(task, "test", seed)
        runner.reseed(seed)
        firsts.append(runner.reset(0))
        trajectories.append(
            [runner.step(np.full(task.act_width, 0.3, dtype=np.float32))[0] for _ in range(5)]
        )
        runner.close()
    assert np.array_equal(firsts[0], firsts[1]) and np.array_equal(trajectories[0][-1], trajectories[1][-1])
    assert not np.array_equal(firsts[0][-3:], firsts[2][-3:])  # another seed: another goal
