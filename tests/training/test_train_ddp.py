"""Data-parallel training under torchrun: two CPU processes on gloo."""

from __future__ import annotations

import os
import subprocess
import sys

from t2mir_model import T2MIRPolicy
from training.datasets.synthetic import write_synthetic_dataset


def test_two_process_gloo_run_produces_a_checkpoint(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "ds", "t2mir/PointRobot-v0", n_tasks=4, n_episodes=6)
    config = tmp_path / "ddp.toml"
    config.write_text(
        f'dataset = "{dataset}"\nout = "{tmp_path / "run"}"\nd_model = 32\nn_layers = 1\nn_heads = 2\n'
        "context_episodes = 2\nbatch_size = 2\nsteps = 4\nwarmup_steps = 1\nlog_every = 1\neval_episodes = 1\nthreads = 1\n"
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
    policy = T2MIRPolicy.from_pretrained(tmp_path / "run" / "final")
    assert policy.config.env_id == "t2mir/PointRobot-v0"
