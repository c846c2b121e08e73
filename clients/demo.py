"""``t2mir demo``: serve the shipped checkpoint and drive held-out tasks over HTTP (``make demo``).

A client-side program: it starts ``t2mir serve`` as a separate process on a free loopback port
with the embedded in-process session store, waits until the server is ready, drives every task
as a separate client session in its own thread (so the server batches them) through the
gymnasium shim, prints the returns episode by episode as the agents improve in context and a
summary of expert use read from ``/metrics``, and stops the server. With ``--m3dt`` the checkpoint
is an M3DT one: every session names one of its shipped Meta-World task prompts and drives that task
on ``t2mir/MT50-v0``. The environments come from
the ``gymnasium.envs`` entry points (`clients.gym_shim.make_env`); the server, its dependencies
and the environments' must be installed (``pip install 't2mir[client,envs,server]'``).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from clients.errors import ConnectionFailed
from clients.gym_shim import EpisodeReport, make_env, run_episodes
from clients.http import T2MIRClient
from clients.session import Session

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "darkroom-t2mir-ad"
SERVE_COMMAND = (sys.executable, "-m", "t2mir_model.cli", "serve")
"""The ``t2mir serve`` console command, run with this interpreter."""
READY_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir demo``."""
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--tasks", type=int, default=6, help="held-out tasks, one client session each")
    parser.add_argument("--episodes", type=int, default=8, help="in-context episodes per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--m3dt",
        action="store_true",
        help="--checkpoint is an M3DT one: drive its shipped Meta-World tasks on t2mir/MT50-v0",
    )


MT50_ENV = "t2mir/MT50-v0"
"""The env of an M3DT demo: one Meta-World MT50 task (its name is the session's task prompt)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(checkpoint: str) -> Iterator[str]:
    """Run ``t2mir serve`` on ``checkpoint`` (in-process store, free loopback port) until the block
    ends; yields its URL once ``/readyz`` answers 200."""
    port = _free_port()
    command = [*SERVE_COMMAND, "--checkpoint", checkpoint, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen([*command, "--log-level", "warning"], stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with T2MIRClient(url, timeout=1.0, retries=0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the demo server exited with code {process.returncode} before it was ready"
                )
            try:
                if client.ready():
                    return
            except ConnectionFailed:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the demo server did not become ready within {READY_TIMEOUT_S:.0f} s")


def _drive(
    url: str,
    env: Any,
    task_name: str,
    episodes: int,
    seed: int,
    on_episode: Callable[[EpisodeReport], None],
    m3dt: bool = False,
) -> list[float]:
    with T2MIRClient(url) as client:
        # a fixed session id fixes the server's action sampling seeds: the demo prints the same every run
        session = Session.create(
            client,
            session_id=f"demo-{task_name.replace(':', '-')}-seed{seed}",
            task=task_name if m3dt else None,
        )
        return run_episodes(client, env, episodes, session=session, on_episode=on_episode, seed=seed)


def expert_use_summary(metrics_text: str) -> list[str]:
    """Lines describing token-router use by modality, task-router weights and soft-router (M3DT)
    top-expert shares from a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    token: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    task: dict[str, dict[str, float]] = defaultdict(dict)
    soft: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "t2mir_expert_tokens_total":
                token[(labels["layer"], labels["modality"])][labels["expert"]] = sample.value
            elif sample.name == "t2mir_task_expert_weight_total":
                task[labels["layer"]][labels["expert"]] = sample.value
            elif sample.name == "t2mir_expert_top_total":
                soft[labels["layer"]][labels["expert"]] = sample.value
    lines = [
        f"token router L{layer} {modality}: {_shares(counts)}"
        for (layer, modality), counts in sorted(token.items())
    ]
    lines += [f"task router  L{layer}: {_shares(weights)}" for layer, weights in sorted(task.items())]
    lines += [f"soft router  L{layer} top expert: {_shares(top)}" for layer, top in sorted(soft.items())]
    return lines


def _shares(values: dict[str, float]) -> str:
    total = sum(values.values()) or 1.0
    ordered = sorted(values.items(), key=lambda kv: int(kv[0]))
    return "  ".join(f"E{expert}:{100 * value / total:4.1f}%" for expert, value in ordered)


def _served_model(url: str) -> dict[str, Any]:
    with T2MIRClient(url) as client:
        model: dict[str, Any] = next(m for m in client.models()["models"] if m["current"])
        return model


def run(args: argparse.Namespace) -> int:
    """Serve, drive the tasks, print returns per episode and the expert-use summary."""
    with serving(args.checkpoint) as url:
        model = _served_model(url)
        env_id = MT50_ENV if args.m3dt else model["env_id"]
        print(
            f"serving {model['name']} ({model['variant']}, {model.get('parameters') or 0:,} parameters) "
            f"from {args.checkpoint} with the in-process session store"
        )
        if args.m3dt:  # its shipped Meta-World tasks (v3 names), goals of their test split
            names = [t for t in model.get("tasks", []) if t.endswith("-v3")][: args.tasks]
            if not names:
                raise RuntimeError(f"{args.checkpoint} ships no Meta-World task prompt")
        else:
            names = [f"test:{i}" for i in range(args.tasks)]
        envs = {name: make_env(env_id, task=name) for name in names}
        returns: dict[str, list[float]] = {name: [] for name in names}
        acts = dict.fromkeys(names, 0)
        lock = threading.Lock()

        def recorder(name: str) -> Callable[[EpisodeReport], None]:
            def on_episode(report: EpisodeReport) -> None:
                with lock:
                    returns[name].append(report.episode_return)
                    acts[name] += report.steps + 1

            return on_episode

        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                futures = [
                    pool.submit(_drive, url, envs[n], n, args.episodes, args.seed + i, recorder(n), args.m3dt)
                    for i, n in enumerate(names)
                ]
                for future in futures:
                    future.result()
        finally:
            for env in envs.values():
                env.close()
        elapsed = time.perf_counter() - started
        print(
            f"\n{env_id}: {len(names)} {'tasks on held-out goals' if args.m3dt else 'held-out tasks'}, "
            f"one HTTP session each, {args.episodes} episodes {'each' if args.m3dt else 'in context'}"
        )
        width = max(7, *(len(n) for n in names))
        print("episode  " + "  ".join(f"{n:>{width}}" for n in names) + "     mean")
        for e in range(args.episodes):
            row = [returns[n][e] for n in names]
            print(
                f"{e + 1:>7}  "
                + "  ".join(f"{r:>{width}.1f}" for r in row)
                + f"  {sum(row) / len(row):>7.1f}"
            )
        total_acts = sum(acts.values())
        print(f"\n{total_acts} acts over HTTP in {elapsed:.1f} s ({total_acts / elapsed:.0f} acts/s)")
        print("\nexpert use (from /metrics):")
        for line in expert_use_summary(httpx.get(f"{url}/metrics", timeout=5.0).text):
            print("  " + line)
    return 0
