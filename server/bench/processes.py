"""Subprocesses a benchmark run owns: the t2mir server, the baseline and a private redis-server.

Each runs on a free loopback port with its output in a temporary log file, is waited for until it
answers, and is stopped with SIGTERM (SIGKILL after a timeout). Children get PR_SET_PDEATHSIG, so
none outlives the benchmark process even if it is killed. `cpu_seconds` reads a process's user +
system CPU time (psutil when installed, else ``/proc/<pid>/stat``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the benchmark process exits (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: GET ``url`` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    return check


def redis_ready(port: int) -> Callable[[], bool]:
    """A readiness check: a raw RESP PING answers +PONG."""

    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (None if unknown or gone)."""
    if pid is None:
        return None
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except ImportError:
        pass
    except Exception:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 (state) is index 0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def terminate(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM a child process, SIGKILL it after ``timeout`` seconds; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ManagedProcess:
    """One child process with a readiness check and a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], ready: Callable[[], bool], env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"t2mir-bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def launch(self) -> ManagedProcess:
        """Start the process without waiting."""
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    def wait_ready(self, timeout: float = 120.0) -> ManagedProcess:
        """Block until the readiness check passes; raise with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        return terminate(self.proc, timeout)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of everything the process wrote."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def close(self) -> None:
        """Stop the process and delete its log."""
        self.stop()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def _child_env(torch_threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("T2MIR_")}  # only what the bench says
    env.update(
        {
            "T2MIR_TORCH_THREADS": str(torch_threads),
            "T2MIR_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(torch_threads),
        }
    )
    return env


def t2mir_server(
    checkpoint: str,
    port: int,
    redis_url: str | None,
    torch_threads: int,
    extra_args: Sequence[str] = (),
    device: str = "cpu",
) -> ManagedProcess:
    """``t2mir serve`` on ``port`` (in-process store unless ``redis_url``)."""
    argv = [sys.executable, "-m", "t2mir_model.cli", "serve", "--checkpoint", checkpoint]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--device", device]
    if redis_url:
        argv += ["--redis-url", redis_url]
    argv += list(extra_args)
    url = f"http://127.0.0.1:{port}"
    return ManagedProcess("t2mir-serve", argv, http_ready(url + "/readyz"), _child_env(torch_threads))


def baseline_server(checkpoint: str, port: int, torch_threads: int, device: str = "cpu") -> ManagedProcess:
    """The naive baseline (`server.bench.baseline`) on ``port``."""
    argv = [sys.executable, "-m", "server.bench.baseline", "--checkpoint", checkpoint]
    argv += ["--port", str(port), "--torch-threads", str(torch_threads), "--device", device]
    url = f"http://127.0.0.1:{port}"
    return ManagedProcess("baseline", argv, http_ready(url + "/readyz"), _child_env(torch_threads))


def redis_server(port: int, data_dir: str) -> ManagedProcess:
    """A private ``redis-server`` without persistence; raises RuntimeError when it is not installed."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: install it, pass --redis-url URL, or use --store memory")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir]
    argv += ["--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"]
    return ManagedProcess("redis-server", argv, redis_ready(port))
