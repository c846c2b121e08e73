"""deploy/nginx/nginx.conf: nginx accepts it, and in front of two real replicas sharing a real Redis
it keeps each session on one replica (HTTP and WebSocket) and fails over to the other replica,
which continues the session from Redis, when the first one dies.

The shipped file names the compose services (server-1:8000 ...), which do not resolve here, so the
tests use a copy with only these changes: the upstream ``server`` lines point at loopback ports
(extra replicas dropped), ``listen`` binds a free loopback port, and the temp paths go to a private
directory (so nginx touches nothing outside it, and runs as any user). Everything else (the
session-id map, consistent hash, WebSocket headers, failover settings) is tested as shipped.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, _die_with_parent, free_port
from server_process import REPO_ROOT, ServerClient, ServerProcess

SHIPPED = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"
UPSTREAM_LINE = re.compile(r"^(\s*)server\s+(server-\d+):8000\b(.*)$", re.M)


def loopback_config(workdir: Path, upstreams: dict[str, str], port: int) -> Path:
    """The shipped config with upstreams -> loopback addresses, a free port and private temp paths."""
    text = SHIPPED.read_text()
    names = UPSTREAM_LINE.findall(text)
    assert [n for _, n, _ in names] == [f"server-{i}" for i in range(1, len(names) + 1)]

    def replace(match: re.Match[str]) -> str:
        indent, name, rest = match.groups()
        return f"{indent}server {upstreams[name]}{rest}" if name in upstreams else ""

    text = UPSTREAM_LINE.sub(replace, text)
    text, listens = re.subn(r"^(\s*)listen 8000;", rf"\1listen 127.0.0.1:{port};", text, flags=re.M)
    assert listens == 1
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


def nginx_args(binary: str, conf: Path, workdir: Path) -> list[str]:
    return [binary, "-e", "stderr", "-p", str(workdir), "-c", str(conf)]


def test_nginx_accepts_the_config(tools, tmp_path):
    conf = loopback_config(
        tmp_path, {"server-1": "127.0.0.1:18001", "server-2": "127.0.0.1:18002"}, free_port()
    )
    result = tools.run(
        [*nginx_args(tools.path("nginx"), conf, tmp_path), "-t", "-g", f"pid {tmp_path}/nginx.pid;"]
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


class Nginx:
    """nginx in the foreground on a free loopback port."""

    def __init__(self, binary: str, workdir: Path, upstreams: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = loopback_config(workdir, upstreams, self.port)
        self.log = workdir / "nginx.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*nginx_args(binary, conf, workdir), "-g", f"daemon off; pid {workdir}/nginx.pid;"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until GET /healthz through nginx answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.url + "/healthz", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"nginx not answering:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture
def cluster(tools, darkroom_checkpoint, tmp_path) -> Iterator[tuple[Nginx, list[ServerProcess]]]:
    """redis-server + two replicas sharing it + nginx in front."""
    nginx_binary = tools.path("nginx")
    redis = RedisServer(tmp_path / "redis", "--appendonly", "no", "--save", "")
    servers: list[ServerProcess] = []
    nginx = None
    try:
        redis.start()
        servers = [ServerProcess([darkroom_checkpoint], redis_url=redis.url) for _ in range(2)]
        ServerProcess.start_all(servers)
        upstreams = {f"server-{i + 1}": f"127.0.0.1:{s.port}" for i, s in enumerate(servers)}
        nginx = Nginx(nginx_binary, tmp_path, upstreams)
        nginx.wait_ready()
        yield nginx, servers
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.close()
        redis.close()


def acts_served(server: ServerProcess) -> float:
    """The replica's own count of successful acts (read from its /metrics, not through nginx)."""
    if not server.running:
        return 0.0
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "t2mir_act_requests_total" and s.labels.get("status") == "200"
    )


def owner_of(servers: list[ServerProcess], before: list[float], acts: int) -> int:
    """Index of the one replica that served the last ``acts`` acts (the others served none)."""
    deltas = [acts_served(s) - b for s, b in zip(servers, before, strict=True)]
    assert sorted(deltas) == [0.0] * (len(servers) - 1) + [float(acts)], f"acts split over replicas: {deltas}"
    return deltas.index(float(acts))


def test_sessions_stick_to_one_replica_and_fail_over_through_redis(cluster):
    from websockets.sync.client import connect

    nginx, servers = cluster
    client = ServerClient(nginx.url)
    try:
        assert client.http.get("/metrics").status_code == 404  # replicas are scraped directly
        owners, steps = {}, {}
        for i in range(4):
            session_id = f"sticky-{i}"
            assert client.create(session_id=session_id).status_code == 201
            before = [acts_served(s) for s in servers]
            for step in range(3):
                answer = client.act(
                    session_id, step, [float(i), float(step)], reward=None if step == 0 else 0.0
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["step"] == step
            owners[session_id] = owner_of(servers, before, 3)
            steps[session_id] = 3

        # WebSocket acts go through the same hash (Upgrade/Connection headers pass through nginx).
        session_id = "sticky-0"
        before = [acts_served(s) for s in servers]
        with connect(f"ws://127.0.0.1:{nginx.port}/sessions/{session_id}/ws", open_timeout=10) as ws:
            for step in (3, 4):
                ws.send(json.dumps({"step": step, "observation": [0.0, 1.0], "reward": 0.0}))
                answer = json.loads(ws.recv(timeout=10))
                assert answer["step"] == step and answer["action"] in range(5), answer
        assert owner_of(servers, before, 2) == owners[session_id]
        steps[session_id] = 5

        # Crash the replica that owns the session: the other one continues it from Redis.
        dead = owners[session_id]
        servers[dead].proc.kill()
        servers[dead].proc.wait(10)
        survivor = servers[1 - dead]
        before = acts_served(survivor)
        step = steps[session_id]
        for _ in range(3):
            answer = client.act(session_id, step, [2.0, 2.0], reward=1.0)
            assert answer.status_code == 200, answer.text
            assert answer.json()["step"] == step
            step += 1
        closed = client.act(session_id, step, [2.0, 2.0], reward=1.0, done=True)
        assert closed.status_code == 200, closed.text
        assert closed.json()["episode_return"] == pytest.approx(4.0)  # rewards 0,0 (HTTP) 0,0 (WS) 1,1,1,1
        assert acts_served(survivor) - before == 4
        info = client.session(session_id).json()
        assert (info["step"], info["episode"], info["returns"]) == (step + 1, 1, [pytest.approx(4.0)])

        # Sessions the survivor already owned stay where they were.
        for other, owner in owners.items():
            if owner != dead:
                before = acts_served(survivor)
                assert client.act(other, steps[other], [1.0, 1.0], reward=0.0).status_code == 200
                assert acts_served(survivor) - before == 1
    finally:
        client.close()
