"""deploy/docker-compose*.yml: `docker-compose config` accepts every combination, and the resolved
configuration has what the deployment guide promises (Redis AOF + noeviction, a CPU server by
default, the GPU override and its reservation, scale-out replicas instead of the single server,
provisioned Grafana, healthchecks, restart policies, named volumes). The commands the documents
show are checked as written in test_documented_commands.py.

No Docker engine runs here: the Debian `docker-compose` package validates and resolves the files.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from redis_server import free_port
from server_process import REPO_ROOT

from server.settings import ServerSettings

DEPLOY = REPO_ROOT / "deploy"
BASE = ["-f", "docker-compose.yml"]
GPU = [*BASE, "-f", "docker-compose.gpu.yml"]
SCALE = [*BASE, "-f", "docker-compose.scale.yml"]
SCALE_GPU = [*SCALE, "-f", "docker-compose.scale-gpu.yml"]
VARIANTS = {"base": BASE, "gpu": GPU, "scale": SCALE, "scale-gpu": SCALE_GPU}
REPLICAS = ("server-1", "server-2", "server-3")


@pytest.fixture(scope="module")
def compose_runs(tools) -> dict[str, subprocess.CompletedProcess[str]]:
    """`docker-compose <files> config` of every variant (run concurrently: each is ~1 s of Python)."""
    binary = tools.path("docker-compose")
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {name: pool.submit(tools.run, [binary, *files, "config"]) for name, files in VARIANTS.items()}
        return {name: future.result() for name, future in runs.items()}


@pytest.fixture(scope="module")
def configs(compose_runs) -> dict[str, dict]:
    """Every variant's resolved configuration, parsed."""
    return {name: yaml.safe_load(run.stdout) for name, run in compose_runs.items() if run.returncode == 0}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compose_config_accepts(compose_runs, variant):
    run = compose_runs[variant]
    assert run.returncode == 0, f"docker-compose {' '.join(VARIANTS[variant])} config:\n{run.stderr}"
    assert "WARNING" not in run.stderr, run.stderr


def test_cpu_server_by_default_and_gpu_by_override(configs):
    services = configs["base"]["services"]
    cpu, gpu = services["server"], configs["gpu"]["services"]["server"]
    for name in ("redis", "server", "prometheus", "grafana"):
        assert "profiles" not in services[name], f"{name} must start with a plain `up`"
    assert "deploy" not in cpu
    assert cpu["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert cpu["build"]["args"]["BASE"].startswith("python:3.11")
    assert cpu["build"]["args"]["DEVICE"] == "cpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["BASE"].startswith("nvidia/cuda:")
    assert gpu["build"]["args"]["TORCH_INDEX"] == "https://pypi.org/simple"  # CUDA wheels
    assert gpu["build"]["args"]["DEVICE"] == "cuda"
    assert gpu["image"] != cpu["image"], "the CUDA and CPU images carry different tags"
    for server, device in ((gpu, "cuda"), (cpu, "cpu")):
        assert Path(server["build"]["context"]) == REPO_ROOT
        env = server["environment"]
        assert env["T2MIR_REDIS_URL"] == "redis://redis:6379/0"
        assert env["T2MIR_DEVICE"] == device
        assert env["T2MIR_HOST"] == "0.0.0.0"
        assert "/opt/t2mir/checkpoints/darkroom-t2mir-ad" in env["T2MIR_CHECKPOINTS"]
        assert server["ports"] == ["127.0.0.1:8000:8000/tcp"]
        assert server["depends_on"]["redis"]["condition"] == "service_healthy"
        settings = {f"T2MIR_{name.upper()}" for name in ServerSettings.model_fields}
        assert {k for k in env if k.startswith("T2MIR_")} <= settings, "unknown T2MIR_ variable"
        assert env["T2MIR_COMPILE_STEP"] == "auto"  # compiled only where the image has a compiler


def test_every_service_has_healthcheck_restart_and_named_volumes(configs):
    for variant in ("base", "scale"):
        config = configs[variant]
        for name, service in config["services"].items():
            assert service.get("restart") == "unless-stopped", f"{variant}/{name}: restart policy"
            assert service.get("healthcheck", {}).get("test"), f"{variant}/{name}: healthcheck"
    assert set(configs["base"]["volumes"]) == {"redis-data", "prometheus-data", "grafana-data"}
    mounts = {name: s.get("volumes", []) for name, s in configs["base"]["services"].items()}
    assert "redis-data:/data:rw" in mounts["redis"]
    assert "prometheus-data:/prometheus:rw" in mounts["prometheus"]
    assert "grafana-data:/var/lib/grafana:rw" in mounts["grafana"]


def test_bind_mounted_files_exist(configs):
    for variant in ("base", "scale"):
        for name, service in configs[variant]["services"].items():
            for mount in service.get("volumes", []):
                source = mount.split(":")[0]
                if source.startswith("/"):
                    assert Path(source).exists(), f"{variant}/{name} mounts missing {source}"


def test_redis_service_persists_with_aof(configs):
    redis = configs["base"]["services"]["redis"]
    assert redis["image"].split(":")[1].startswith("7")
    assert redis["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert "--maxmemory" in redis["command"]
    assert f"{DEPLOY / 'redis' / 'redis.conf'}:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]


def test_redis_conf_is_accepted_by_redis_7(tools, tmp_path):
    """The shipped redis.conf starts a real redis-server with AOF everysec and noeviction."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            tools.path("redis-server"),
            str(DEPLOY / "redis" / "redis.conf"),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(tmp_path),
            "--maxmemory", "64mb",
            "--logfile", str(tmp_path / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, (tmp_path / "redis.log").read_text()
                time.sleep(0.05)
        conf = {k: v for key in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory", "save")
                for k, v in client.config_get(key).items()}  # fmt: skip
        assert conf == {
            "appendonly": "yes",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
            "maxmemory": str(64 * 1024 * 1024),
            "save": "",
        }
        client.set("k", "v")
        assert (tmp_path / "appendonlydir").is_dir()
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_prometheus_and_grafana_wiring(configs):
    services = configs["base"]["services"]
    assert (
        f"{DEPLOY / 'prometheus' / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]["volumes"]
    )
    grafana = services["grafana"]
    assert f"{DEPLOY / 'grafana' / 'provisioning'}:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert f"{DEPLOY / 'grafana' / 'dashboards'}:/var/lib/grafana/dashboards/t2mir:ro" in grafana["volumes"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/t2mir.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/t2mir"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_environment_overrides_reach_the_services(tools):
    env = {
        "T2MIR_API_KEYS": "k1,k2",
        "GRAFANA_ADMIN_PASSWORD": "s3cret",
        "REDIS_MAXMEMORY": "512mb",
        "T2MIR_TORCH_INDEX": "https://mirror.example/torch-cpu",
        "T2MIR_TORCH_VERSION": "2.13.0",
    }
    result = subprocess.run(
        [tools.path("docker-compose"), *BASE, "config"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["server"]["environment"]["T2MIR_API_KEYS"] == "k1,k2"
    args = services["server"]["build"]["args"]
    assert args["TORCH_INDEX"] == "https://mirror.example/torch-cpu" and args["TORCH_VERSION"] == "2.13.0"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert services["redis"]["command"][-2:] == ["--maxmemory", "512mb"]


def test_scale_out_replicas_behind_nginx(configs):
    services = configs["scale"]["services"]
    # The single server is off (a profile no command enables): nginx publishes port 8000 instead.
    assert services["server"]["profiles"] == ["single-server"]
    for name in REPLICAS:
        replica = services[name]
        assert "profiles" not in replica and "ports" not in replica, f"{name}: internal only"
        assert replica["environment"]["T2MIR_REDIS_URL"] == "redis://redis:6379/0"
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
    nginx = services["nginx"]
    assert f"{DEPLOY / 'nginx' / 'nginx.conf'}:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert {name: dep["condition"] for name, dep in nginx["depends_on"].items()} == dict.fromkeys(
        REPLICAS, "service_healthy"
    )
    assert nginx["ports"] == ["127.0.0.1:8000:8000/tcp"]
    prometheus = services["prometheus"]["volumes"]
    assert f"{DEPLOY / 'prometheus' / 'prometheus.scale.yml'}:/etc/prometheus/prometheus.yml:ro" in prometheus
    assert not any(v.endswith("prometheus.yml:ro") and "scale" not in v for v in prometheus)


def test_scale_gpu_override_reserves_a_gpu_per_replica(configs):
    services = configs["scale-gpu"]["services"]
    for name in REPLICAS:
        replica = services[name]
        (device,) = replica["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert replica["environment"]["T2MIR_DEVICE"] == "cuda"
        assert replica["build"]["args"]["DEVICE"] == "cuda"
        assert replica["build"]["args"]["BASE"].startswith("nvidia/cuda:")
