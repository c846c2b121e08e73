"""The naive baseline: a stateless policy endpoint, the way most robot-policy servers are built.

It keeps nothing between calls. Every ``POST /act`` carries the session's whole context (kept
closed episodes + the open episode up to s_t, see `server.bench.episodes`); the server rebuilds
the model's input with `t2mir_model.ad_context_tokens` / `dpt_context_tokens` and recomputes the
full forward at batch 1, one request at a time (a lock in front of one worker thread, one uvicorn
worker). Discrete actions are the argmax, or with a ``"seed"`` in the body the same seeded
sample the t2mir engine draws (`t2mir_model.sample_discrete`); continuous ones the tanh mean. Given
the seed of a t2mir session's step (`server.sessions.derive_seed`), it must answer exactly what
the t2mir server answers for the same history.

Run it as ``python -m server.bench.baseline --checkpoint DIR --port P [--torch-threads N]``.

Endpoints: ``GET /readyz``, ``GET /info`` (spaces, backbone, retention the client must apply),
``POST /act`` -> ``{"action", "timings": {parse, queue_wait, forward, total} (ms)}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from server.store.models import Retention
from t2mir_model import (
    Episode,
    SessionHistory,
    T2MIRConfig,
    T2MIRPolicy,
    ad_context_tokens,
    dpt_context_tokens,
    sample_discrete,
)


class BadRequest(ValueError):
    """The body does not describe a valid context (answered with 422)."""


def _action(value: Any, config: T2MIRConfig) -> torch.Tensor:
    if config.action.is_discrete:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < config.action.width:
            raise BadRequest(f"invalid discrete action {value!r}")
        return torch.tensor(value, dtype=torch.long)
    tensor = torch.tensor(value, dtype=torch.float32)
    if tensor.shape != (config.action.width,):
        raise BadRequest(f"an action needs {config.action.width} values")
    return tensor


def _obs(values: list[list[float]], config: T2MIRConfig) -> list[torch.Tensor]:
    obs = torch.tensor(values, dtype=torch.float32)
    if obs.ndim != 2 or obs.shape[1] != config.observation.dim or not torch.isfinite(obs).all():
        raise BadRequest(f"observations must be finite lists of {config.observation.dim} numbers")
    return list(obs.unbind(0))


def history_from_body(data: Any, config: T2MIRConfig) -> SessionHistory:
    """The JSON context of one call -> a `SessionHistory` (raises BadRequest)."""
    try:
        episodes = []
        for e in data["episodes"]:
            n = len(e["rewards"])
            if n == 0 or len(e["obs"]) != n or len(e["actions"]) != n:
                raise BadRequest("a closed episode needs as many observations and actions as rewards")
            episodes.append(
                Episode(
                    index=int(e["index"]),
                    obs=torch.stack(_obs(e["obs"], config)),
                    actions=torch.stack([_action(a, config) for a in e["actions"]]),
                    rewards=torch.tensor(e["rewards"], dtype=torch.float32),
                )
            )
        obs, actions, rewards = data["obs"], data["actions"], data["rewards"]
        if not obs or len(actions) != len(obs) - 1 or len(rewards) != len(obs) - 1:
            raise BadRequest("the open episode needs s_0..s_t, a_0..a_{t-1} and r_0..r_{t-1}")
        if len(obs) > config.max_episode_steps:
            raise BadRequest(f"the open episode exceeds max_episode_steps={config.max_episode_steps}")
        history = SessionHistory(episode=int(data.get("episode", len(episodes))), episodes=episodes)
        history.obs = _obs(obs, config)
        history.actions = [_action(a, config) for a in actions]
        history.rewards = [float(r) for r in rewards]
        return history
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"malformed context: {type(exc).__name__}: {exc}") from exc


@dataclass
class NaivePolicy:
    """A policy that recomputes the whole context for each call, one call at a time."""

    policy: T2MIRPolicy
    executor: ThreadPoolExecutor
    lock: asyncio.Lock
    device: torch.device

    @property
    def config(self) -> T2MIRConfig:
        """The policy's config."""
        return self.policy.config

    @torch.inference_mode()
    def forward(self, history: SessionHistory, seed: int | None = None) -> Any:
        """Full forward at batch 1 over the rebuilt context; the action as JSON (discrete: sampled
        from ``seed``, or the argmax without one)."""
        config = self.config
        example = (
            torch.zeros((), dtype=torch.long)
            if config.action.is_discrete
            else torch.zeros(config.action.width)
        )
        if config.backbone == "ad":
            tokens = ad_context_tokens(config, history, example).to(self.device)
            head = self.policy(tokens, dense=True).head[:, -1]
        else:
            tokens, _ = dpt_context_tokens(history, example)
            head = self.policy(tokens.to(self.device)).head[:, -1]
        if config.action.is_discrete:
            return int(sample_discrete(head[0].float().cpu(), seed).item())
        action = self.policy.select_action(head)[0].cpu()
        return int(action.item()) if action.ndim == 0 else [float(x) for x in action.tolist()]

    def info(self) -> dict[str, Any]:
        """What a client needs: spaces, episode length and the retention of closed episodes."""
        c = self.config
        retention = Retention.for_backbone(c.backbone, c.context_episodes)
        action = (
            {"kind": "discrete", "n": c.action.n}
            if c.action.is_discrete
            else {"kind": "continuous", "dim": c.action.dim}
        )
        return {
            "backbone": c.backbone,
            "observation_dim": c.observation.dim,
            "action": action,
            "max_episode_steps": c.max_episode_steps,
            "context_episodes": c.context_episodes,
            "retention": {"mode": retention.mode, "count": retention.count},
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "invalid_request", "message": message}}, status_code=status)


def create_baseline_app(checkpoint: str | Path, torch_threads: int = 1, device: str = "cpu") -> FastAPI:
    """The naive app serving ``checkpoint`` (weights loaded now, on ``device``)."""
    torch.set_num_threads(torch_threads)
    policy = T2MIRPolicy.from_pretrained(checkpoint, map_location=device).eval()
    executor = ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="baseline",
        initializer=torch.set_num_threads,
        initargs=(torch_threads,),
    )
    naive = NaivePolicy(policy, executor, asyncio.Lock(), torch.device(device))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            executor.shutdown(wait=False)

    app = FastAPI(title="t2mir naive baseline", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return naive.info()

    @app.post("/act")
    async def act(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        try:
            data = json.loads(await request.body())
            history = history_from_body(data, naive.config)
            seed = data.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise BadRequest("seed must be an integer")
        except (BadRequest, ValueError) as exc:
            return _error(422, str(exc))
        t_parsed = time.perf_counter()
        loop = asyncio.get_running_loop()
        async with naive.lock:  # one request at a time
            t_run = time.perf_counter()
            action = await loop.run_in_executor(naive.executor, naive.forward, history, seed)
            t_done = time.perf_counter()
        timings = {
            "parse": (t_parsed - t0) * 1000.0,
            "queue_wait": (t_run - t_parsed) * 1000.0,
            "forward": (t_done - t_run) * 1000.0,
            "total": (time.perf_counter() - t0) * 1000.0,
        }
        return JSONResponse({"action": action, "timings": {k: round(v, 3) for k, v in timings.items()}})

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the baseline with uvicorn (one worker) until SIGINT/SIGTERM."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m server.bench.baseline", description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    app = create_baseline_app(args.checkpoint, args.torch_threads, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
