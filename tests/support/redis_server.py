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


def redis_cli_binary() -> str | None:
    """Path of ``redis-cli`` (env ``REDIS_CLI`` wins), or None if not installed."""
    return os.environ.get("REDIS_CLI") or shutil.which("redis-cli")


def redis_command(port: int, *args: str, timeout: float = 5.0) -> str:
    """Run one command with ``redis-cli`` against 127.0.0.1:``port``; its output ('' if down)."""
    cli = redis_cli_binary()
    if cli is None:
        raise RuntimeError("redis-cli not found (set REDIS_CLI)")
    try:
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def info_fields(text: str) -> dict[str, str]:
    """``key:value`` lines of an INFO / CLUSTER INFO answer as a dict."""
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters with one replica each, on free loopback ports.

        with RedisClusterServers(tmp_path) as cluster:
            cluster.url                        # redis://127.0.0.1:<first port>/0 (a seed node)
            port = cluster.master_of_key("t2mir:{s1}:meta")
            cluster.node(port).kill()          # SIGKILL a master
            cluster.wait_master_elsewhere(port, key)   # its replica took over
            cluster.node(port).start()         # comes back (empty) as the new master's replica
            cluster.wait_healthy()

    Args:
        data_dir: parent of one directory per node.
        masters: number of masters (each gets one replica).
        node_timeout_ms: ``cluster-node-timeout`` (how soon a dead master is failed over).
        *extra_args: more ``redis-server`` options for every node.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        masters: int = 3,
        node_timeout_ms: int = 1000,
        *extra_args: str,
    ) -> None:
        base = Path(data_dir)
        self.masters = masters
        options = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-replica-validity-factor", "0",  # a replica always may take over
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",  # a (re)joining replica syncs at once, not after 5 s
            *extra_args,
        ]  # fmt: skip
        # the cluster bus gets its own free port (default: port + 10000, which may be taken)
        self.nodes = [
            RedisServer(base / f"node-{i}", *options, "--cluster-port", str(free_port()))
            for i in range(2 * masters)
        ]

    @property
    def url(self) -> str:
        """URL of the first node that is up (any node serves as a seed)."""
        port = next((n.port for n in self.nodes if n.running), self.nodes[0].port)
        return f"redis://127.0.0.1:{port}/0"

    def node(self, port: int) -> RedisServer:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        """Start every node, join them (``redis-cli --cluster create``) and wait until healthy."""
        for node in self.nodes:
            node.start()
        cli = redis_cli_binary()
        if cli is None:
            raise RuntimeError("redis-cli not found (set REDIS_CLI)")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self.wait_healthy(timeout)
        return self

    def roles(self) -> dict[int, str]:
        """Port -> ``master`` / ``slave`` of every node that answers."""
        out = {}
        for node in self.nodes:
            role = info_fields(redis_command(node.port, "INFO", "replication")).get("role")
            if role:
                out[node.port] = role
        return out

    def healthy(self) -> bool:
        """Every node up, cluster_state ok everywhere, ``masters`` masters each with a synced replica."""
        if not all(n.running for n in self.nodes):
            return False
        masters = 0
        for node in self.nodes:
            if info_fields(redis_command(node.port, "CLUSTER", "INFO")).get("cluster_state") != "ok":
                return False
            info = info_fields(redis_command(node.port, "INFO", "replication"))
            if info.get("role") == "master":
                masters += 1
                if info.get("connected_slaves") != "1":
                    return False
            elif info.get("master_link_status") != "up":
                return False
        return masters == self.masters

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll until `healthy`; raise after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not healthy after {timeout} s: roles {self.roles()}")
            time.sleep(0.05)

    def master_of_key(self, key: str) -> int:
        """Port of the live master that owns ``key``'s slot (asked of a live master)."""
        for node in self.nodes:
            if not node.running:
                continue
            slot = redis_command(node.port, "CLUSTER", "KEYSLOT", key).strip()
            for line in redis_command(node.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "master" not in fields[2] or "fail" in fields[2] or not slot:
                    continue
                for ranges in fields[8:]:
                    lo, _, hi = ranges.partition("-")
                    if lo.isdigit() and int(lo) <= int(slot) <= int(hi or lo):
                        return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master owns {key!r}")

    def wait_master_elsewhere(self, dead_port: int, key: str, timeout: float = 30.0) -> int:
        """Poll until a live node other than ``dead_port`` is master of ``key``'s slot; its port."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError):
                port = self.master_of_key(key)
                if (
                    port != dead_port
                    and self.node(port).running
                    and redis_command(port, "INFO", "replication").find("role:master") >= 0
                ):
                    return port
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover of {key!r} within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill every node and remove their data."""
        for node in self.nodes:
            node.close()
            shutil.rmtree(node.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_replicated(
    master_dir: Path, replica_dir: Path, timeout: float = 20.0
) -> tuple[RedisServer, RedisServer]:
    """A master and one replica of it (no persistence, replication starts at once), started and
    polled until the replica is synced; the caller closes both."""
    master = RedisServer(master_dir, "--appendonly", "no", "--repl-diskless-sync-delay", "0").start()
    replica = RedisServer(
        replica_dir, "--appendonly", "no", "--replicaof", "127.0.0.1", str(master.port)
    ).start()
    try:
        deadline = time.monotonic() + timeout
        while (
            info_fields(redis_command(replica.port, "INFO", "replication")).get("master_link_status") != "up"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("redis replica never synced")
            time.sleep(0.05)
    except BaseException:
        replica.close()
        master.close()
        raise
    return master, replica
