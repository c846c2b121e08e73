"""Fixtures for the benchmark tooling tests.

- ``darkroom_checkpoint``: a random tiny checkpoint with DarkRoom spaces and 100-step episodes
  (name ``darkroom-tiny``);
- ``short_checkpoint``: the same spaces with 5-step episodes and 3 context episodes (name
  ``short-tiny``), so a few dozen acts close enough episodes to exercise retention;
- ``bench_servers``: one ``t2mir serve`` subprocess serving both (in-process store) and the naive
  baseline serving ``short-tiny``, shared by the whole test session and stopped at its end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.bench import processes


def write_checkpoint(directory: Path, name: str, seed: int = 0, **overrides: Any) -> Path:
    """A random T2MIR-AD checkpoint with DarkRoom spaces (d=32, 2 layers) unless overridden."""
    import torch

    from t2mir_model import ActionSpec, ObservationSpec, T2MIRConfig, T2MIRPolicy

    fields: dict[str, Any] = {
        "observation": ObservationSpec(2),
        "action": ActionSpec("discrete", n=5),
        "env_id": "t2mir/DarkRoom-v0",
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "max_episode_steps": 100,
        "context_episodes": 3,
    }
    fields.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        policy = T2MIRPolicy(T2MIRConfig(**fields))
    policy.save_pretrained(directory, card={"name": name, "version": "1"})
    return directory


@pytest.fixture(scope="session")
def darkroom_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny DarkRoom-shaped checkpoint (100-step episodes)."""
    return write_checkpoint(tmp_path_factory.mktemp("bench-ckpt") / "darkroom-tiny", "darkroom-tiny")


@pytest.fixture(scope="session")
def short_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny checkpoint with 5-step episodes and 3 context episodes."""
    path = tmp_path_factory.mktemp("bench-ckpt") / "short-tiny"
    return write_checkpoint(path, "short-tiny", seed=1, max_episode_steps=5, context_episodes=3)


@dataclass
class BenchServers:
    """URLs and processes of the shared servers."""

    url: str
    baseline_url: str
    server: processes.ManagedProcess
    baseline: processes.ManagedProcess


@pytest.fixture(scope="session")
def bench_servers(darkroom_checkpoint: Path, short_checkpoint: Path) -> Iterator[BenchServers]:
    """t2mir serve (both checkpoints, in-process store) + the baseline on ``short-tiny``."""
    port, baseline_port = processes.free_port(), processes.free_port()
    server = processes.t2mir_server(
        str(darkroom_checkpoint), port, None, 1, ["--checkpoint", str(short_checkpoint), "--compile", "off"]
    )
    baseline = processes.baseline_server(str(short_checkpoint), baseline_port, 1)
    try:
        server.launch()
        baseline.launch()
        server.wait_ready(120)
        baseline.wait_ready(120)
        yield BenchServers(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{baseline_port}", server, baseline)
    finally:
        server.close()
        baseline.close()
