"""A real ``redis-server`` for tests: free loopback port, private temp dir, restartable.

    server = RedisServer(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    server.url            # redis://127.0.0.1:<port>/0
    server.kill()         # SIGKILL (crash); server.restart() comes back on the same port + dir
    server.pause() / server.resume()   # SIGSTOP / SIGCONT (a hung server)
    server.stop()         # SIGTERM, clean shutdown

The child gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the test process even if teardown
never runs. Readiness is checked with a raw RESP PING (no redis-py needed here).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL the child when the parent exits (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` (env ``REDIS_SERVER`` wins), or None if not installed."""
    return (
        os.environ.get("REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    )


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 with its data in ``data_dir``.

    Args:
        data_dir: working directory (AOF / RDB files); a fresh temp dir if None.
        *extra_args: more ``redis-server`` command-line options, e.g. ``"--appendonly", "yes"``.
        port: fixed port (default: a free one, kept across restarts).
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, *extra_args: str, port: int | None = None
    ):
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server not found (set REDIS_SERVER)")
        self.binary = binary
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the process exists (even if paused)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (same port and data dir as before) and wait until it answers PING."""
        if self.running:
            return self
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout} s")

    def ping(self, timeout: float = 0.5) -> bool:
        """True if the server answers ``+PONG`` (False while down, paused or loading)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _signal_and_wait(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """Clean shutdown (SIGTERM; the AOF is flushed)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash the server (SIGKILL): nothing is flushed beyond what was already fsynced."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop (if running) and start again on the same port with the same data dir."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove the data dir if this object created it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
