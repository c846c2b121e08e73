"""A real ``t2mir serve`` process for end-to-end tests: free port, readiness wait, captured logs.

    server = ServerProcess([ckpt_dir], redis_url=redis.url, args=["--no-cache"], env={...})
    server.start()          # waits until GET /readyz answers 200
    server.url              # http://127.0.0.1:<port>
    server.logs()           # everything the process wrote (stdout + stderr)
    server.stop()           # SIGTERM (graceful), SIGKILL after a timeout; returns the exit code

Overload shedding is off (``--act-deadline-ms 0``) unless the test passes its own
``--act-deadline-ms``: the end-to-end tests check what acts answer, on a shared CI machine whose
stalls would otherwise get some of them shed; `test_overload` sets the deadline it tests. The
decode step is not compiled (``--compile off``) unless the test passes ``--compile``: compiling
costs tens of seconds per model load, and the suite starts dozens of servers.

The child gets PR_SET_PDEATHSIG=SIGKILL, so it never outlives the test process. Several servers
can be launched first and waited for afterwards (`launch` + `wait_ready`), so their start-up
overlaps.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from redis_server import free_port

from server.bench.processes import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_API_KEYS = ("key-alpha", "key-beta")
"""Keys the end-to-end servers are started with (``T2MIR_API_KEYS``)."""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One ``python -m t2mir_model.cli serve`` subprocess on 127.0.0.1."""

    def __init__(
        self,
        checkpoints: Sequence[str | os.PathLike[str]],
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.checkpoints = [str(c) for c in checkpoints]
        self.redis_url = redis_url
        self.args = list(args)
        self.env = dict(env or {})
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="t2mir-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL of the server."""
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [
            sys.executable,
            "-m",
            "t2mir_model.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        for c in self.checkpoints:
            cmd += ["--checkpoint", c]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if "--act-deadline-ms" not in self.args:
            cmd += ["--act-deadline-ms", "0"]
        if "--compile" not in self.args:
            cmd += ["--compile", "off"]
        return cmd + self.args

    @classmethod
    def start_all(cls, servers: Sequence[ServerProcess], timeout: float = 120.0) -> list[ServerProcess]:
        """Launch several servers at once, then wait for each (their start-up overlaps)."""
        for server in servers:
            server.launch()
        try:
            for server in servers:
                server.wait_ready(timeout)
        except Exception:
            for server in servers:
                server.close()
            raise
        return list(servers)

    def launch(self) -> ServerProcess:
        """Start the process without waiting for readiness."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("T2MIR_")}  # only what the test says
        env.update({"T2MIR_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env})
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        """Block until ``/readyz`` answers 200; raise with the logs if the process dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited early ({self.proc and self.proc.returncode}):\n{self.logs()[-4000:]}"
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.logs()[-4000:]}")

    def start(self, timeout: float = 120.0) -> ServerProcess:
        """`launch` then `wait_ready`."""
        return self.launch().wait_ready(timeout)

    def ready(self) -> bool:
        """True if ``GET /readyz`` answers 200 now."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        """True while the process exists."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        return terminate(self.proc, timeout)

    def logs(self) -> str:
        """Everything the process has written so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Stop the process and delete the log file."""
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerClient:
    """A minimal synchronous HTTP client for tests (httpx), speaking the act protocol."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def create(self, **body: object):
        """POST /sessions."""
        return self.http.post("/sessions", json=body)

    def session(self, session_id: str):
        """GET /sessions/{id}."""
        return self.http.get(f"/sessions/{session_id}")

    def delete(self, session_id: str):
        """DELETE /sessions/{id}."""
        return self.http.delete(f"/sessions/{session_id}")

    def act(
        self, session_id: str, step: int, observation: object, reward: float | None = None, done: bool = False
    ):
        """POST /sessions/{id}/act (reward and done sent only when given)."""
        body: dict[str, object] = {"step": step, "observation": observation}
        if reward is not None:
            body["reward"] = reward
        if done:
            body["done"] = True
        return self.http.post(f"/sessions/{session_id}/act", json=body)

    def metrics(self) -> str:
        """GET /metrics as text."""
        return self.http.get("/metrics").text

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def without_timings(answer: dict) -> dict:
    """An act answer without its ``timings`` (which differ between a step and its retry)."""
    return {k: v for k, v in answer.items() if k != "timings"}
