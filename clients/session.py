"""`Session` / `AsyncSession`: the act protocol and the step counter, kept for you.

    session = Session.create(client, model="darkroom-t2mir-ad")
    action = session.reset(obs)                 # first act of an episode: no reward
    while not finished:
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            session.end(obs, reward)            # done act: closes the episode, no action
        else:
            action = session.step(obs, reward)
    session.episode_returns                     # one float per closed episode

The counter moves only when the server confirmed an act. If an act gets no answer even after the
client's retries (`ConnectionFailed`, `ServiceUnavailable`), its exact body is kept as ``pending``
and the next call must be `retry()`: resending the same step is the only way to keep every reward
in the history exactly once, whether or not the lost attempt was applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from clients.errors import ConnectionFailed, ServiceUnavailable, T2MIRClientError
from clients.protocol import Action, ActResult, SessionInfo, act_body

_UNCONFIRMED = (ConnectionFailed, ServiceUnavailable)
Phase = Literal["idle", "running", "unknown"]


@dataclass(frozen=True)
class PendingAct:
    """An act that was sent but not confirmed; `retry()` resends exactly this."""

    kind: Literal["reset", "step", "end"]
    step: int
    observation: Any
    reward: float | None
    done: bool


class _Protocol:
    """Step counter, episode phase and returns: the part both session classes share."""

    def __init__(self, info: SessionInfo, step: int = 0, phase: Phase = "idle") -> None:
        self.info = info
        self.next_step = step
        self.phase: Phase = phase
        self.episode = 0
        self.episode_returns: list[float] = []
        self.current_return = 0.0
        self.pending: PendingAct | None = None
        self.last_result: ActResult | None = None
        self.busy = False

    def check_idle(self) -> None:
        if self.busy:
            raise RuntimeError("another act of this session is in flight")

    def prepare(self, kind: Literal["reset", "step", "end"], observation: Any, reward: Any) -> PendingAct:
        self.check_idle()
        if self.pending is not None:
            raise RuntimeError(
                f"step {self.pending.step} ({self.pending.kind}) was never confirmed; call retry() first"
            )
        if kind == "reset" and self.phase == "running":
            raise RuntimeError("an episode is running: end() it before reset()")
        if kind != "reset" and self.phase == "idle":
            raise RuntimeError(f"no episode is running: reset() before {kind}()")
        body = act_body(self.next_step, observation, reward, done=kind == "end")
        return PendingAct(kind, body["step"], body["observation"], body.get("reward"), kind == "end")

    def resync(self, next_step: int) -> None:
        """Continue from the server's ``next_step``, dropping any unconfirmed act."""
        self.next_step = next_step
        self.pending = None
        self.phase = "unknown"

    def commit(self, act: PendingAct, result: ActResult) -> Action | None:
        self.pending = None
        self.last_result = result
        self.next_step = act.step + 1
        self.episode = result.episode
        if act.kind == "reset":
            self.current_return = 0.0
        self.current_return += act.reward or 0.0
        if act.kind == "end":
            self.episode_returns.append(self.current_return)
            self.current_return = 0.0
            self.phase = "idle"
        else:
            self.phase = "running"
        return result.action


def _required(action: Action | None) -> Action:
    """The action of a step's answer (only the ``done`` act answers without one)."""
    if action is None:
        raise RuntimeError("the server answered a step without an action")
    return action


def channel_settings(client: Any, session_id: str, encoding: str) -> dict[str, Any]:
    """WebSocket channel arguments with the HTTP client's URL, key, timeout and retry policy."""
    policy = client.policy
    return {
        "base_url": client.base_url,
        "session_id": session_id,
        "api_key": client.api_key,
        "encoding": encoding,
        "timeout": client.timeout,
        "retries": policy.retries,
        "backoff": policy.backoff,
        "max_backoff": policy.max_backoff,
        "max_retry_after": policy.max_retry_after,
        "max_elapsed": policy.max_elapsed,
    }


class _SessionBase:
    def __init__(self, info: SessionInfo, step: int = 0, phase: Phase = "idle") -> None:
        self._protocol = _Protocol(info, step, phase)

    @property
    def info(self) -> SessionInfo:
        return self._protocol.info

    @property
    def session_id(self) -> str:
        return self._protocol.info.session_id

    @property
    def next_step(self) -> int:
        """The ``step`` the next act will carry."""
        return self._protocol.next_step

    @property
    def episode(self) -> int:
        """The server's episode index from the last answer."""
        return self._protocol.episode

    @property
    def in_episode(self) -> bool:
        return self._protocol.phase == "running"

    @property
    def episode_returns(self) -> list[float]:
        """Sum of rewards of every episode closed through this object."""
        return list(self._protocol.episode_returns)

    @property
    def pending(self) -> PendingAct | None:
        """The unconfirmed act `retry()` would resend, if any."""
        return self._protocol.pending

    @property
    def last_result(self) -> ActResult | None:
        """The last confirmed answer (``timings`` included)."""
        return self._protocol.last_result


class Session(_SessionBase):
    """Synchronous session over a `T2MIRClient` (or, with ``channel``, a `SyncWebSocketSession`).

    Args:
        client: the HTTP client (also used to delete the session).
        info: what ``create_session`` answered.
        channel: optional object with ``act(step, observation, reward, done)`` bound to this
            session, e.g. a `SyncWebSocketSession`; acts then go through it instead of HTTP.
        step: the next step (non-zero to continue a session someone else started).
    """

    def __init__(self, client: Any, info: SessionInfo, *, channel: Any = None, step: int = 0) -> None:
        super().__init__(info, step, "idle" if step == 0 else "unknown")
        self.client = client
        self.channel = channel

    @classmethod
    def create(
        cls,
        client: Any,
        *,
        model: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        sampling: str | None = None,
        action_noise: float | None = None,
        task: str | None = None,
        prompt: Any = None,
        target_return: float | None = None,
        websocket: bool = False,
        encoding: str = "json",
    ) -> Session:
        """Create a session on the server (the options of ``client.create_session``); with
        ``websocket=True`` its acts use a WebSocket with frames in ``encoding`` (json or msgpack)."""
        info = client.create_session(
            model=model,
            session_id=session_id,
            metadata=metadata,
            sampling=sampling,
            action_noise=action_noise,
            task=task,
            prompt=prompt,
            target_return=target_return,
        )
        channel = None
        if websocket:
            from clients.ws import SyncWebSocketSession

            channel = SyncWebSocketSession(**channel_settings(client, info.session_id, encoding))
        return cls(client, info, channel=channel)

    def _send(self, act: PendingAct) -> Action | None:
        self._protocol.check_idle()
        self._protocol.busy = True
        try:
            if self.channel is not None:
                result = self.channel.act(act.step, act.observation, act.reward, act.done)
            else:
                result = self.client.act(self.session_id, act.step, act.observation, act.reward, act.done)
        except T2MIRClientError as exc:  # an error answer: nothing was applied, unless unconfirmed
            if isinstance(exc, _UNCONFIRMED):
                self._protocol.pending = act
            raise
        except BaseException:  # interrupted or cancelled mid-flight: it may have been applied
            self._protocol.pending = act
            raise
        finally:
            self._protocol.busy = False
        return self._protocol.commit(act, result)

    def reset(self, observation: Any) -> Action:
        """First act of an episode (the reset observation, no reward); returns the action."""
        return _required(self._send(self._protocol.prepare("reset", observation, None)))

    def step(self, observation: Any, reward: Any) -> Action:
        """Next act: the new observation and the reward of the previous action."""
        return _required(self._send(self._protocol.prepare("step", observation, reward)))

    def end(self, observation: Any, reward: Any) -> None:
        """Final act (``done``): the last observation and reward; closes the episode."""
        self._send(self._protocol.prepare("end", observation, reward))

    def retry(self) -> Action | None:
        """Resend the unconfirmed act (same step, same body); returns its action (None for end)."""
        if self._protocol.pending is None:
            raise RuntimeError("nothing to retry")
        return self._send(self._protocol.pending)

    def resync(self) -> int:
        """Take the next step from the server (after a crash or a `StepConflict`); returns it."""
        state = self.client.get_session(self.session_id)
        self._protocol.resync(state.step)
        return state.step

    def close(self, delete: bool = False) -> None:
        """Close the WebSocket channel, if any, and delete the session on the server if asked."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if delete:
            self.client.delete_session(self.session_id)


class AsyncSession(_SessionBase):
    """Asyncio twin of `Session` over an `AsyncT2MIRClient` or a `WebSocketSession` channel."""

    def __init__(self, client: Any, info: SessionInfo, *, channel: Any = None, step: int = 0) -> None:
        super().__init__(info, step, "idle" if step == 0 else "unknown")
        self.client = client
        self.channel = channel

    @classmethod
    async def create(
        cls,
        client: Any,
        *,
        model: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        sampling: str | None = None,
        action_noise: float | None = None,
        task: str | None = None,
        prompt: Any = None,
        target_return: float | None = None,
        websocket: bool = False,
        encoding: str = "json",
    ) -> AsyncSession:
        """Create a session (the options of ``client.create_session``); ``websocket`` as for `Session`."""
        info = await client.create_session(
            model=model,
            session_id=session_id,
            metadata=metadata,
            sampling=sampling,
            action_noise=action_noise,
            task=task,
            prompt=prompt,
            target_return=target_return,
        )
        channel = None
        if websocket:
            from clients.ws import WebSocketSession

            channel = WebSocketSession(**channel_settings(client, info.session_id, encoding))
        return cls(client, info, channel=channel)

    async def _send(self, act: PendingAct) -> Action | None:
        send: Callable[..., Awaitable[ActResult]]
        send = self.channel.act if self.channel is not None else self._http_act
        self._protocol.check_idle()
        self._protocol.busy = True
        try:
            result = await send(act.step, act.observation, act.reward, act.done)
        except T2MIRClientError as exc:  # an error answer: nothing was applied, unless unconfirmed
            if isinstance(exc, _UNCONFIRMED):
                self._protocol.pending = act
            raise
        except BaseException:  # interrupted or cancelled mid-flight: it may have been applied
            self._protocol.pending = act
            raise
        finally:
            self._protocol.busy = False
        return self._protocol.commit(act, result)

    async def _http_act(self, step: int, observation: Any, reward: Any, done: bool) -> ActResult:
        return await self.client.act(self.session_id, step, observation, reward, done)

    async def reset(self, observation: Any) -> Action:
        return _required(await self._send(self._protocol.prepare("reset", observation, None)))

    async def step(self, observation: Any, reward: Any) -> Action:
        return _required(await self._send(self._protocol.prepare("step", observation, reward)))

    async def end(self, observation: Any, reward: Any) -> None:
        await self._send(self._protocol.prepare("end", observation, reward))

    async def retry(self) -> Action | None:
        if self._protocol.pending is None:
            raise RuntimeError("nothing to retry")
        return await self._send(self._protocol.pending)

    async def resync(self) -> int:
        """Take the next step from the server (after a crash or a `StepConflict`); returns it."""
        state = await self.client.get_session(self.session_id)
        self._protocol.resync(state.step)
        return state.step

    async def close(self, delete: bool = False) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if delete:
            await self.client.delete_session(self.session_id)
