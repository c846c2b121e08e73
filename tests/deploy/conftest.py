"""Fixtures for the deployment tests (deploy/, Dockerfile).

The tools these tests run (docker-compose, promtool, prometheus, nginx, redis-server) come from
Debian packages that ``make system-deps`` installs; a missing one FAILS the test (it is never
skipped), with the command that installs it.

- ``darkroom_checkpoint``: a small random DarkRoom-shaped checkpoint (name ``darkroom-test``).
- ``m3dt_checkpoint``: a tiny random M3DT checkpoint (name ``m3dt-test``) shipping two task prompts.
- ``monitored``: one real ``t2mir serve`` (in-process store) serving both (``darkroom-test`` the
  default model) for the whole session, already driven through a few episodes of each so every
  exported series exists, and a real Prometheus (Debian package)
  scraping it every second with the shipped job config; both are launched together, so the
  Prometheus start-up (its first scrape comes ~5 s after launch) overlaps the server's. The server
  runs as in the Docker image, without the training stack: a ``sitecustomize`` makes ``training``
  and the ``train`` extra's packages unimportable and records every attempt (`NO_TRAINING`).
- ``dashboard``: the parsed Grafana dashboard JSON.
- ``tools``: finds (or fails on) and runs the system binaries; ``traffic``: `drive_traffic`, which
  plays short episodes against a server URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from model_factory import write_m3dt_checkpoint
from redis_server import _die_with_parent, free_port
from server_process import REPO_ROOT, ServerClient, ServerProcess

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "expert-routing.json"
SHIPPED_PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
INSTALL_HINT = "run `make system-deps` (installs redis-server, docker-compose, prometheus, nginx from apt)"


def require_binary(name: str) -> str:
    """Path of a system binary; fails the test (never skips) when it is not installed."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"`{name}` is not installed: {INSTALL_HINT}", pytrace=False)
    return path


def run_tool(args: list[str], timeout: float = 60.0, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (never raises on a non-zero exit). ``T2MIR_*`` variables
    of the test process are left out, so that compose files resolve to their own defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2MIR_")}
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


TRAIN_ONLY_MODULES = (
    "training",
    "gymnasium",
    "mujoco",
    "metaworld",
    "stable_baselines3",
    "tensorboard",
    "matplotlib",
    "sklearn",
)
"""Top-level modules the server image does not have (the ``training/`` package, the train extra)."""

NO_TRAINING = """
import sys
from pathlib import Path

_record = Path(__file__).with_name("blocked.txt")
_record.write_text("")


class _NoTrainingStack:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            with _record.open("a") as f:
                f.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the server image)", name=name)
        return None


sys.meta_path.insert(0, _NoTrainingStack())
"""


def without_training_stack(directory: Path) -> tuple[dict[str, str], Path]:
    """Environment for a child Python that cannot import the training stack, and its record file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(NO_TRAINING.format(blocked=set(TRAIN_ONLY_MODULES)))
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}, directory / "blocked.txt"


def write_darkroom_checkpoint(directory: Path) -> Path:
    """The random DarkRoom-shaped test checkpoint (obs 2, 5 actions, 100-step episodes)."""
    from t2mir_model import ActionSpec, ObservationSpec, T2MIRConfig, T2MIRPolicy

    config = T2MIRConfig(
        observation=ObservationSpec(2),
        action=ActionSpec("discrete", n=5),
        env_id="t2mir/DarkRoom-v0",
        d_model=32,
        n_layers=2,
        n_heads=2,
        max_episode_steps=100,
        context_episodes=3,
    )
    T2MIRPolicy(config).save_pretrained(directory, card={"name": "darkroom-test", "version": "1"})
    return directory


def drive_episode(
    client: ServerClient, session_id: str, first_step: int, steps: int, rng: random.Random
) -> int:
    """One episode of ``steps`` acts plus the closing ``done`` act; returns the next step number."""
    step = first_step
    for i in range(steps):
        obs = [float(rng.randint(0, 8)), float(rng.randint(0, 8))]
        reward = None if i == 0 else float(rng.random() < 0.3)
        answer = client.act(session_id, step, obs, reward=reward)
        assert answer.status_code == 200, answer.text
        step += 1
    answer = client.act(session_id, step, [0.0, 0.0], reward=1.0, done=True)
    assert answer.status_code == 200, answer.text
    return step + 1


def drive_traffic(url: str, sessions: int = 2, episodes: int = 2, steps: int = 4, seed: int = 0) -> None:
    """Create sessions and play a few short episodes, so counters, histograms and gauges exist."""
    rng = random.Random(seed)
    with ServerClient(url) as client:
        for _ in range(sessions):
            created = client.create()
            assert created.status_code == 201, created.text
            session_id = created.json()["session_id"]
            step = 0
            for _ in range(episodes):
                step = drive_episode(client, session_id, step, steps, rng)


def drive_m3dt_traffic(url: str, steps: int = 4, seed: int = 0) -> None:
    """One episode of an M3DT session on its shipped ``point-robot-00`` prompt (2-d observations)."""
    rng = random.Random(seed)
    with ServerClient(url) as client:
        created = client.create(model="m3dt-test", task="point-robot-00")
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        for step in range(steps):
            reward = None if step == 0 else -rng.random()
            answer = client.act(session_id, step, [rng.random(), rng.random()], reward=reward)
            assert answer.status_code == 200, answer.text


class Prometheus:
    """One ``prometheus`` process on a free loopback port with its TSDB in a temp dir."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        config = yaml.safe_load(SHIPPED_PROMETHEUS.read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        jobs = [j for j in config["scrape_configs"] if j["job_name"] == "t2mir-server"]
        for job in jobs:
            for static in job["static_configs"]:
                static["targets"] = [target]
        config["scrape_configs"] = jobs
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if params else self.url + path
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read() or b"{}") if path.startswith("/api/") else {}

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.get("/-/ready")
                return
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()[-3000:]}")

    def query(self, expr: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


class Tools:
    """The system binaries, as a fixture (test modules cannot import this conftest)."""

    path = staticmethod(require_binary)
    run = staticmethod(run_tool)


@pytest.fixture(scope="session")
def tools() -> Tools:
    """`require_binary` / `run_tool`."""
    return Tools()


@pytest.fixture(scope="session")
def traffic():
    """`drive_traffic(url, sessions=2, episodes=2, steps=4, seed=0)`."""
    return drive_traffic


@pytest.fixture(scope="session")
def darkroom_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random DarkRoom test checkpoint, written once per test session."""
    return write_darkroom_checkpoint(tmp_path_factory.mktemp("deploy-ckpt") / "darkroom-test")


@dataclass
class Monitored:
    """A running server and the Prometheus scraping it."""

    server: ServerProcess
    prometheus: Prometheus
    blocked_imports: Path
    """Modules the server tried to import from the training stack (one per line; must stay empty)."""


@pytest.fixture(scope="session")
def m3dt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random M3DT test checkpoint, written once per test session."""
    return write_m3dt_checkpoint(tmp_path_factory.mktemp("deploy-m3dt") / "m3dt-test")


@pytest.fixture(scope="session")
def monitored(
    darkroom_checkpoint: Path, m3dt_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    """Server + Prometheus, launched together; traffic served; both stopped at the end."""
    prometheus_binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    env, blocked = without_training_stack(tmp_path_factory.mktemp("no-training"))
    server = ServerProcess(
        [darkroom_checkpoint, m3dt_checkpoint], env=env, args=["--default-model", "darkroom-test"]
    )
    server.launch()
    prometheus = None
    try:
        prometheus = Prometheus(prometheus_binary, workdir, f"127.0.0.1:{server.port}")
        server.wait_ready()
        drive_traffic(server.url)
        drive_m3dt_traffic(server.url)
        prometheus.wait_ready()
        yield Monitored(server, prometheus, blocked)
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def dashboard() -> dict:
    """deploy/grafana/dashboards/expert-routing.json, parsed."""
    return json.loads(DASHBOARD.read_text())
