"""Clients of the two servers under test, on aiohttp (httpx is too slow at 64 connections).

`T2MIRBackend` follows the act protocol of DESIGN.md over HTTP (``POST /sessions/{id}/act``) or a
WebSocket per session (``/sessions/{id}/ws``, JSON text frames). `BaselineBackend` sends the
session's whole context to the naive server with every act and closes episodes locally (a
stateless server has nothing to close). Both answer `Answer` (action + the server's timings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from server.bench.episodes import Action, ClientHistory
from server.sessions import derive_seed
from server.store.models import Retention

JSON_HEADERS = {"Content-Type": "application/json"}


class ActError(RuntimeError):
    """A server answered an act with an error (or the connection failed)."""


class Shed(ActError):
    """The server refused the act as overloaded (503 ``overloaded``): nothing was stored, and the
    same step may be sent again after ``retry_after`` seconds (None: the answer carried none)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


OVERLOADED = "overloaded"


def _error_code(raw: bytes | str) -> str | None:
    """The ``error.code`` of an error body (None if it has none)."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _seconds(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ModelInfo:
    """What the load generator needs to know about the served model."""

    name: str
    version: str
    backbone: str
    observation_dim: int
    action: dict[str, Any]
    max_episode_steps: int
    context_episodes: int

    @property
    def retention(self) -> Retention:
        """The closed episodes the session store keeps."""
        return Retention.for_backbone(self.backbone, self.context_episodes)

    def new_history(self) -> ClientHistory:
        """An empty client-side history with this model's retention."""
        return ClientHistory(retention=self.retention)


@dataclass(frozen=True)
class Answer:
    """One act's answer: the action (None for ``done``) and the server's timings in ms."""

    action: Action | None
    timings: dict[str, float]


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _post(http: aiohttp.ClientSession, url: str, body: Any, expect: int = 200) -> dict[str, Any]:
    async with http.post(url, data=_dumps(body), headers=JSON_HEADERS) as response:
        raw = await response.read()
        if response.status != expect:
            message = f"POST {url} -> {response.status}: {raw[:300].decode(errors='replace')}"
            if response.status == 503 and _error_code(raw) == OVERLOADED:
                raise Shed(message, _seconds(response.headers.get("Retry-After")))
            raise ActError(message)
    return json.loads(raw)


async def fetch_model_info(http: aiohttp.ClientSession, base_url: str, model: str | None = None) -> ModelInfo:
    """The current version of ``model`` on a t2mir server (default: its first current model)."""
    async with http.get(base_url + "/models") as response:
        if response.status != 200:
            raise ActError(f"GET /models -> {response.status}")
        models = (await response.json())["models"]
    current = [m for m in models if m.get("current") and model in (None, m["name"])]
    if not current:
        raise ActError(f"the server has no model{f' {model!r}' if model else ''} loaded")
    m = current[0]
    return ModelInfo(
        name=m["name"],
        version=str(m["version"]),
        backbone=m["backbone"],
        observation_dim=int(m["observation_dim"]),
        action=dict(m["action"]),
        max_episode_steps=int(m["max_episode_steps"]),
        context_episodes=int(m["context_episodes"]),
    )


class T2MIRBackend:
    """The t2mir server: sessions that sample their actions (the default), acts over HTTP or WebSocket."""

    def __init__(
        self, http: aiohttp.ClientSession, base_url: str, transport: str = "http", model: str | None = None
    ) -> None:
        if transport not in ("http", "ws"):
            raise ValueError(f"transport must be 'http' or 'ws', got {transport!r}")
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.transport = transport
        self.model = model
        self._sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}

    async def create(self, session_id: str) -> None:
        """Create a session (seeded sampling) and, for WebSocket transport, open its socket."""
        body: dict[str, Any] = {
            "session_id": session_id,
            "sampling": "sample",
            "metadata": {"client": "t2mir-bench"},
        }
        if self.model is not None:
            body["model"] = self.model
        await _post(self.http, self.base_url + "/sessions", body, expect=201)
        if self.transport == "ws":
            ws_url = self.base_url.replace("http", "ws", 1) + f"/sessions/{session_id}/ws"
            self._sockets[session_id] = await self.http.ws_connect(ws_url, max_msg_size=0)

    async def _send(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.transport == "http":
            return await _post(self.http, f"{self.base_url}/sessions/{session_id}/act", body)
        ws = self._sockets[session_id]
        await ws.send_str(_dumps(body).decode())
        message = await ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ActError(f"websocket of {session_id}: unexpected {message.type!r}")
        answer = json.loads(message.data)
        if "error" in answer:
            text = f"websocket act of {session_id}: {answer['error']}"
            if answer.get("status") == 503 and answer["error"].get("code") == OVERLOADED:
                raise Shed(text, _seconds(answer.get("retry_after")))
            raise ActError(text)
        return answer

    async def act(self, session_id: str, step: int, history: ClientHistory, reward: float | None) -> Answer:
        """Act on the latest state of ``history`` (s_t with the previous action's reward)."""
        body: dict[str, Any] = {"step": step, "observation": history.obs[-1]}
        if reward is not None:
            body["reward"] = reward
        answer = await self._send(session_id, body)
        return Answer(answer["action"], answer["timings"])

    async def done(self, session_id: str, step: int, obs: list[float], reward: float) -> Answer:
        """Close the episode (last reward; the final observation is not part of the context)."""
        answer = await self._send(
            session_id, {"step": step, "observation": obs, "reward": reward, "done": True}
        )
        return Answer(None, answer["timings"])

    async def stored_step(self, session_id: str) -> int:
        """The session's next step as the server stores it (``GET /sessions/{id}``)."""
        async with self.http.get(f"{self.base_url}/sessions/{session_id}") as response:
            raw = await response.read()
            if response.status != 200:
                raise ActError(f"GET /sessions/{session_id} -> {response.status}: {raw[:300]!r}")
            return int(json.loads(raw)["step"])

    async def delete(self, session_id: str) -> None:
        """Close the socket (if any) and delete the session."""
        ws = self._sockets.pop(session_id, None)
        if ws is not None:
            await ws.close()
        async with self.http.delete(f"{self.base_url}/sessions/{session_id}") as response:
            await response.read()


class BaselineBackend:
    """The naive server: the whole context with every act; episodes close on the client."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def info(self) -> dict[str, Any]:
        """``GET /info`` of the baseline."""
        async with self.http.get(self.base_url + "/info") as response:
            return await response.json()

    async def create(self, session_id: str) -> None:
        """Nothing to create on a stateless server."""

    async def act(self, session_id: str, step: int, history: ClientHistory, reward: float | None) -> Answer:
        """Send the whole context and the step's sampling seed (as a t2mir session of this id would
        draw it); the server recomputes everything."""
        body = {**history.request_body(), "seed": derive_seed(session_id, step)}
        answer = await _post(self.http, self.base_url + "/act", body)
        return Answer(answer["action"], answer["timings"])

    async def done(self, session_id: str, step: int, obs: list[float], reward: float) -> Answer | None:
        """No call: the client keeps the history."""
        return None

    async def delete(self, session_id: str) -> None:
        """Nothing to delete."""


def new_http(connections: int, api_key: str | None = None, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    """An aiohttp session with room for ``connections`` keep-alive connections (and the API key)."""
    connector = aiohttp.TCPConnector(limit=max(connections, 1) + 4, limit_per_host=0)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
    )
