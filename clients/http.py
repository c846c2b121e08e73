"""HTTP clients for the t2mir server: `T2MIRClient` (sync) and `AsyncT2MIRClient` (asyncio).

Both keep one connection pool (httpx), send ``Authorization: Bearer KEY`` when given a key, and
retry with backoff (see `clients.retry`). A retried act resends the same ``step`` with the same
body, so it is applied at most once; the server answers the duplicate with the stored response::

    with T2MIRClient("http://localhost:8000") as client:
        info = client.create_session(model="darkroom-t2mir-ad")
        result = client.act(info.session_id, step=0, observation=obs)
        result.action                                  # int (discrete) or list of floats
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from clients.errors import ConnectionFailed, T2MIRClientError, error_from_body, parse_retry_after
from clients.protocol import ActResult, SessionInfo, SessionState, act_body, create_body, dumps
from clients.retry import MAYBE_SENT_ERRORS, NOT_SENT_ERRORS, Attempts, RetryPolicy, worth_retrying

USER_AGENT = "t2mir-client/0.1"


@dataclass(frozen=True)
class _Call:
    """One logical request; every attempt of it sends exactly these bytes."""

    method: str
    path: str
    body: bytes | None = None
    idempotent: bool = True
    accept: frozenset[int] = frozenset()
    """Non-2xx statuses returned to the caller instead of raised."""


def _session_path(session_id: str, suffix: str = "") -> str:
    return f"/sessions/{quote(str(session_id), safe='')}{suffix}"


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class _ClientBase:
    """Settings, request building and answer handling shared by the sync and async clients."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        *,
        max_backoff: float = 2.0,
        max_retry_after: float = 10.0,
        max_elapsed: float | None = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.policy = RetryPolicy(retries, backoff, max_backoff, max_retry_after, max_elapsed)
        self.headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    # -- request builders -------------------------------------------------------------------------

    @staticmethod
    def _create_call(
        model: str | None,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        sampling: str | None,
        action_noise: float | None,
        task: str | None,
        prompt: Any,
        target_return: float | None,
    ) -> _Call:
        body = create_body(model, session_id, metadata, sampling, action_noise, task, prompt, target_return)
        return _Call("POST", "/sessions", dumps(body), idempotent=False)

    @staticmethod
    def _act_call(session_id: str, step: Any, observation: Any, reward: Any, done: bool) -> _Call:
        body = dumps(act_body(step, observation, reward, done))
        return _Call("POST", _session_path(session_id, "/act"), body)

    # -- answer handling --------------------------------------------------------------------------

    def _after_response(
        self, call: _Call, response: httpx.Response, attempts: Attempts, maybe_applied: bool
    ) -> float | None:
        """None if ``response`` is the answer; else seconds to wait before retrying; or raise."""
        status = response.status_code
        if 200 <= status < 300 or status in call.accept:
            return None
        if call.method == "DELETE" and status == 404 and maybe_applied:
            return None  # an earlier attempt deleted it and lost the answer
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        error = error_from_body(status, _decode(response), retry_after=retry_after)
        if worth_retrying(error, call.idempotent):
            delay = attempts.next_delay(getattr(error, "retry_after", None))
            if delay is not None:
                return delay
        raise error

    def _after_exception(self, call: _Call, exc: httpx.TransportError, attempts: Attempts) -> float:
        """Seconds to wait before retrying after ``exc``; or raise `ConnectionFailed`."""
        retryable = NOT_SENT_ERRORS + (MAYBE_SENT_ERRORS if call.idempotent else ())
        code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
        delay = attempts.next_delay() if isinstance(exc, retryable) else None
        if delay is not None:
            return delay
        raise ConnectionFailed(
            f"{call.method} {self.base_url}{call.path} failed after {attempts.made} attempt(s): "
            f"{type(exc).__name__}: {exc}",
            code=code,
        ) from exc

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        body = _decode(response)
        if response.status_code != 204 and not isinstance(body, dict | list):
            raise T2MIRClientError(
                f"expected JSON, got {str(body)[:200]!r}", status=response.status_code, code="bad_response"
            )
        return body


class T2MIRClient(_ClientBase):
    """Synchronous client (one `httpx.Client`, connections reused). Use as a context manager.

    Args:
        base_url: server root, e.g. ``"http://localhost:8000"``.
        api_key: sent as ``Authorization: Bearer KEY``.
        timeout: seconds for connecting and for each read/write of one attempt.
        retries: extra attempts after connection errors, timeouts and 503/502/504.
        backoff: upper end of the first (jittered) wait between attempts; doubles each time, capped
            by ``max_backoff``; a 503's ``Retry-After`` is the least wait (capped by ``max_retry_after``).
        max_elapsed: no retry starts later than this many seconds after the first attempt.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        *,
        transport: httpx.BaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, **kwargs)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport
        )

    def _request(self, call: _Call) -> httpx.Response:
        attempts, maybe_applied = self.policy.attempts(), False
        headers = {"Content-Type": "application/json"} if call.body is not None else None
        while True:
            try:
                response = self._http.request(call.method, call.path, content=call.body, headers=headers)
            except httpx.TransportError as exc:
                delay = self._after_exception(call, exc, attempts)
                maybe_applied = maybe_applied or isinstance(exc, MAYBE_SENT_ERRORS)
            else:
                wait = self._after_response(call, response, attempts, maybe_applied)
                if wait is None:
                    return response
                delay = wait
            time.sleep(delay)

    def create_session(
        self,
        model: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        sampling: str | None = None,
        action_noise: float | None = None,
        task: str | None = None,
        prompt: Any = None,
        target_return: float | None = None,
    ) -> SessionInfo:
        """``POST /sessions``; every option left None takes the server's default.

        Args:
            model: model name (None: the server's only or default model).
            session_id: your own id (1-128 of ``[A-Za-z0-9_.:-]``); None: the server picks one.
            metadata: a JSON object stored with the session.
            sampling: discrete actions: ``"sample"`` (seeded by session id and step) or ``"greedy"``.
            action_noise: continuous actions: Gaussian exploration noise in half-ranges of the
                action box (0: deterministic).
            task: M3DT models: the task whose prompt, shipped with the model, the session uses.
            prompt: M3DT models: a task prompt instead of ``task``, a mapping of ``obs`` (P rows),
                ``actions`` (P rows), ``returns_to_go`` (P) and ``timesteps`` (P) to lists or arrays.
            target_return: M3DT models: the return to ask for (default for a shipped task: the
                model's; required with ``prompt``).
        """
        call = self._create_call(
            model, session_id, metadata, sampling, action_noise, task, prompt, target_return
        )
        return SessionInfo.from_dict(self._json(self._request(call)))

    def get_session(self, session_id: str) -> SessionState:
        """``GET /sessions/{id}``: next step, episode and returns of the closed episodes."""
        return SessionState.from_dict(self._json(self._request(_Call("GET", _session_path(session_id)))))

    def delete_session(self, session_id: str) -> None:
        """``DELETE /sessions/{id}``."""
        self._request(_Call("DELETE", _session_path(session_id)))

    def act(
        self, session_id: str, step: int, observation: Any, reward: Any = None, done: bool = False
    ) -> ActResult:
        """One act of the protocol (see DESIGN.md); retries resend this same ``step``."""
        call = self._act_call(session_id, step, observation, reward, done)
        return ActResult.from_dict(self._json(self._request(call)))

    def models(self) -> Any:
        """``GET /models`` as decoded JSON."""
        return self._json(self._request(_Call("GET", "/models")))

    def health(self) -> Any:
        """``GET /healthz`` as decoded JSON (raises if the server is not live)."""
        return self._json(self._request(_Call("GET", "/healthz")))

    def ready(self) -> bool:
        """``GET /readyz``: True when the models are loaded and the store is reachable."""
        response = self._request(_Call("GET", "/readyz", accept=frozenset({503}), idempotent=False))
        return response.status_code == 200

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> T2MIRClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncT2MIRClient(_ClientBase):
    """Asyncio client (one `httpx.AsyncClient`); same methods and arguments as `T2MIRClient`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, **kwargs)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport
        )

    async def _request(self, call: _Call) -> httpx.Response:
        attempts, maybe_applied = self.policy.attempts(), False
        headers = {"Content-Type": "application/json"} if call.body is not None else None
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.body, headers=headers
                )
            except httpx.TransportError as exc:
                delay = self._after_exception(call, exc, attempts)
                maybe_applied = maybe_applied or isinstance(exc, MAYBE_SENT_ERRORS)
            else:
                wait = self._after_response(call, response, attempts, maybe_applied)
                if wait is None:
                    return response
                delay = wait
            await asyncio.sleep(delay)

    async def create_session(
        self,
        model: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        sampling: str | None = None,
        action_noise: float | None = None,
        task: str | None = None,
        prompt: Any = None,
        target_return: float | None = None,
    ) -> SessionInfo:
        """``POST /sessions`` (the options of `T2MIRClient.create_session`)."""
        call = self._create_call(
            model, session_id, metadata, sampling, action_noise, task, prompt, target_return
        )
        return SessionInfo.from_dict(self._json(await self._request(call)))

    async def get_session(self, session_id: str) -> SessionState:
        response = await self._request(_Call("GET", _session_path(session_id)))
        return SessionState.from_dict(self._json(response))

    async def delete_session(self, session_id: str) -> None:
        await self._request(_Call("DELETE", _session_path(session_id)))

    async def act(
        self, session_id: str, step: int, observation: Any, reward: Any = None, done: bool = False
    ) -> ActResult:
        call = self._act_call(session_id, step, observation, reward, done)
        return ActResult.from_dict(self._json(await self._request(call)))

    async def models(self) -> Any:
        return self._json(await self._request(_Call("GET", "/models")))

    async def health(self) -> Any:
        return self._json(await self._request(_Call("GET", "/healthz")))

    async def ready(self) -> bool:
        call = _Call("GET", "/readyz", accept=frozenset({503}), idempotent=False)
        return (await self._request(call)).status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncT2MIRClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
