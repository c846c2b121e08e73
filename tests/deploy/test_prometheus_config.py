"""deploy/prometheus/*.yml: `promtool check config` accepts them; they scrape what compose runs."""

from __future__ import annotations

import re

import pytest
import yaml
from server_process import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
CONFIGS = ("prometheus.yml", "prometheus.scale.yml")


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(tools, name):
    result = tools.run([tools.path("promtool"), "check", "config", str(DEPLOY / "prometheus" / name)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def server_job(name: str) -> dict:
    config = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
    assert config["global"]["scrape_interval"] == "5s"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "t2mir-server"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    return job


def test_single_server_job_scrapes_the_server_service():
    job = server_job("prometheus.yml")
    assert [t for c in job["static_configs"] for t in c["targets"]] == ["server:8000"]


def test_scale_job_scrapes_every_replica_nginx_balances():
    """Prometheus targets == nginx upstream servers == replica services of the scale compose file."""
    job = server_job("prometheus.scale.yml")
    targets = sorted(t for c in job["static_configs"] for t in c["targets"])
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    upstream = re.search(r"upstream t2mir_servers \{(.*?)\}", nginx, re.S)
    assert upstream is not None
    upstreams = sorted(re.findall(r"^\s*server\s+(\S+?)\s", upstream.group(1), re.M))
    scale = yaml.safe_load((DEPLOY / "docker-compose.scale.yml").read_text())
    replicas = sorted(f"{name}:8000" for name in scale["services"] if name.startswith("server-"))
    assert targets == upstreams == replicas
    assert len(replicas) >= 2
