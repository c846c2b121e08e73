"""Data-parallel training under torchrun: two CPU processes on gloo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from t2mir_model import T2MIRPolicy
from training.datasets.synthetic import write_synthetic_dataset


@pytest.mark.parametrize("dispatch", ["dense", "sparse"])
def test_two_process_gloo_run_stays_in_sync_and_produces_a_checkpoint(tmp_path, dispatch):
    dataset = write_synthetic_dataset(tmp_path / "ds", "t2mir/PointRobot-v0", n_tasks=4, n_episodes=6)
    config = tmp_path / "ddp.toml"
    config.write_text(
        f'dataset = "{dataset}"\nout = "{tmp_path / "run"}"\n'
        "batch_size = 2\nsteps = 4\nwarmup_steps = 1\nlog_every = 1\neval_episodes = 1\nthreads = 1\n"
        f'expert_dispatch = "{dispatch}"\n'
        "[model]\nd_model = 32\nn_layers = 1\nn_heads = 2\ncontext_episodes = 2\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=0",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0",
        "-m",
        "t2mir_model.cli",
        "train",
        "--config",
        str(config),
        "--no-progress",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final checkpoint" in result.stdout
    assert "ranks in sync: 2 ranks hold identical parameters after step 4" in result.stdout
    policy = T2MIRPolicy.from_pretrained(tmp_path / "run" / "final")
    assert policy.config.env_id == "t2mir/PointRobot-v0"


def _spread_worker(rank: int, port: int, results) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from training.train.loop import rank_spread

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    same = rank_spread(model)
    if rank == 1:
        with torch.no_grad():
            model.bias[1] += 0.5
    results[rank] = (same, rank_spread(model))
    dist.destroy_process_group()


def test_rank_spread_sees_a_rank_that_diverged():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_spread_worker, args=(port, results), nprocs=2, join=True)
    assert results[0] == results[1] == (0.0, 0.5)
