"""``t2mir demo`` (what ``make demo`` runs): serve the shipped checkpoint, drive held-out tasks over HTTP.

The server runs in this process on a free loopback port with the embedded in-process session store;
every task is a separate client session in its own thread (so the server batches them), driven
through the gymnasium shim of ``clients``. Returns are printed episode by episode as the agents
improve in context, then a summary of expert use read from ``/metrics``.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from clients import Session, T2MIRClient
from clients.gym_shim import EpisodeReport, run_episodes
from server.app import create_app
from server.settings import ServerSettings

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "darkroom-t2mir-ad"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags of ``t2mir demo``."""
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--tasks", type=int, default=6, help="held-out tasks, one client session each")
    parser.add_argument("--episodes", type=int, default=8, help="in-context episodes per task")
    parser.add_argument("--seed", type=int, default=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(checkpoint: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    settings = ServerSettings(checkpoints=[checkpoint], port=port, log_level="warning")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="t2mir-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return server, thread, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the demo server did not become ready within 120 s")


def _drive(url: str, env_id: str, task_name: str, episodes: int, seed: int, on_episode) -> list[float]:
    from training.envs import make_env, resolve_task

    env = make_env(env_id, resolve_task(env_id, task_name))
    with T2MIRClient(url) as client:
        # a fixed session id fixes the server's action sampling seeds: the demo prints the same every run
        session = Session.create(client, session_id=f"demo-{task_name.replace(':', '-')}-seed{seed}")
        return run_episodes(client, env, episodes, session=session, on_episode=on_episode, seed=seed)


def expert_use_summary(metrics_text: str) -> list[str]:
    """Lines describing token-router use by modality and task-router weights from a /metrics scrape."""
    token: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    task: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "t2mir_expert_tokens_total":
                token[(labels["layer"], labels["modality"])][labels["expert"]] = sample.value
            elif sample.name == "t2mir_task_expert_weight_total":
                task[labels["layer"]][labels["expert"]] = sample.value
    lines = []
    for (layer, modality), counts in sorted(token.items()):
        total = sum(counts.values()) or 1.0
        shares = "  ".join(
            f"E{e}:{100 * v / total:4.1f}%" for e, v in sorted(counts.items(), key=lambda kv: int(kv[0]))
        )
        lines.append(f"token router L{layer} {modality}: {shares}")
    for layer, weights in sorted(task.items()):
        total = sum(weights.values()) or 1.0
        shares = "  ".join(
            f"E{e}:{100 * v / total:4.1f}%" for e, v in sorted(weights.items(), key=lambda kv: int(kv[0]))
        )
        lines.append(f"task router  L{layer}: {shares}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Serve, drive the tasks, print returns per episode and the expert-use summary."""
    from t2mir_model import read_card

    card = read_card(args.checkpoint)
    env_id = card["env_id"]
    print(
        f"serving {card.get('name')} ({card.get('variant')}, {card.get('parameters', 0):,} parameters) "
        f"from {args.checkpoint} with the in-process session store"
    )
    server, thread, url = _start_server(args.checkpoint)
    names = [f"test:{i}" for i in range(args.tasks)]
    returns: dict[str, list[float]] = {name: [] for name in names}
    acts = dict.fromkeys(names, 0)
    lock = threading.Lock()
    started = time.perf_counter()

    def recorder(name: str):
        def on_episode(report: EpisodeReport) -> None:
            with lock:
                returns[name].append(report.episode_return)
                acts[name] += report.steps + 1

        return on_episode

    try:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [
                pool.submit(_drive, url, env_id, n, args.episodes, args.seed + i, recorder(n))
                for i, n in enumerate(names)
            ]
            for future in futures:
                future.result()
        elapsed = time.perf_counter() - started
        print(
            f"\n{env_id}: {len(names)} held-out tasks, one HTTP session each, {args.episodes} episodes in context"
        )
        print("episode  " + "  ".join(f"{n:>7}" for n in names) + "     mean")
        for e in range(args.episodes):
            row = [returns[n][e] for n in names]
            print(f"{e + 1:>7}  " + "  ".join(f"{r:>7.1f}" for r in row) + f"  {sum(row) / len(row):>7.1f}")
        total_acts = sum(acts.values())
        print(f"\n{total_acts} acts over HTTP in {elapsed:.1f} s ({total_acts / elapsed:.0f} acts/s)")
        print("\nexpert use (from /metrics):")
        for line in expert_use_summary(httpx.get(f"{url}/metrics", timeout=5.0).text):
            print("  " + line)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return 0
