"""Redis session store: the source of truth when the server runs in compose / scaled out.

Layout (DESIGN.md decision 9; all keys of a session share the hash tag ``{session_id}``, so a
Redis Cluster keeps them in one slot and the Lua scripts may touch them together):

    <prefix>:{<sid>}:meta   hash   identity + progress fields, last_response (JSON)
    <prefix>:{<sid>}:cur    list   records of the open episode (JSON each)
    <prefix>:{<sid>}:eps    hash   episode index -> closed-episode JSON (retained ones only)
    <prefix>:{<sid>}:rank   zset   zero-padded episode index scored by return ("best" retention)
    <prefix>:{<sid>}:rets   list   every closed episode's return, in order

Every write is one Lua script (EVALSHA, falling back to SCRIPT LOAD on NOSCRIPT), so it is
atomic and never half-applied. `append_many` sends the append scripts of several sessions in one
pipeline (one round trip per node), each still its own atomic script with its own reply. Needs Redis >= 7 (script shebangs / flags).

Failure behaviour: connection and socket timeouts are short, redis-py retries ConnectionError /
TimeoutError ``retries`` times, and every call runs under an overall deadline; anything that
means "Redis cannot serve this now" surfaces as `StoreUnavailable`. The client reconnects by
itself, so the same store object works again once Redis is back.

Redis Cluster (``cluster=True``): the URL names any node; redis-py's `RedisCluster` finds the
others and routes each script by its keys (one slot per session). After a master fails, calls
answer `StoreUnavailable` until its replica is promoted and the client has refreshed its map.

Replica acknowledgement (``wait_replicas=N``): every create and append is followed by
``WAIT N timeout`` on the same connection (so it covers that write), and the call succeeds only
once N replicas confirmed it; otherwise `StoreUnavailable`. The write may then be stored: a retry
of the same step answers "duplicate" with the stored response, after waiting for the replicas
again (the duplicate branch of the append script writes, so its WAIT covers the original write).
A pipeline of appends is followed by one WAIT on its connection (on a cluster, where a WAIT covers
one node, each append of it gets its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from server import json_codec
from server.store import lua
from server.store.checked import CheckedAppend, CheckedStore
from server.store.errors import InvalidRecord, SessionExists, StoreError, StoreUnavailable
from server.store.meta_hash import meta_fields, parse_meta
from server.store.models import (
    AppendOutcome,
    Episode,
    SessionMeta,
    SessionState,
    StepRecord,
    encode_json,
)

T = TypeVar("T")

KEY_SUFFIXES = ("meta", "cur", "eps", "rank", "rets")
"""Per-session key suffixes, in the KEYS order of the Lua scripts."""

_UNAVAILABLE_CODES = frozenset(
    {"LOADING", "READONLY", "MASTERDOWN", "OOM", "BUSY", "TRYAGAIN", "CLUSTERDOWN"}
)
_UNAVAILABLE_TYPES = (
    rexc.ConnectionError,  # incl. BusyLoadingError, MaxConnectionsError, AuthenticationError
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    rexc.OutOfMemoryError,
    rexc.ClusterDownError,  # incl. MasterDownError
    rexc.TryAgainError,
    OSError,
    TimeoutError,  # the overall deadline (asyncio.timeout)
    rexc.RedisClusterException,  # no node reachable / slot not covered (cluster topology in flux)
)
_PROGRAMMING_ERRORS = (rexc.CrossSlotTransactionError, rexc.InvalidPipelineStack)


def is_unavailable_error(exc: BaseException) -> bool:
    """True if ``exc`` means Redis cannot serve the request now (-> 503 + Retry-After)."""
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return False
    if isinstance(exc, _UNAVAILABLE_TYPES):
        return True
    if isinstance(exc, rexc.ResponseError):
        code = str(exc).split(" ", 1)[0]
        return code in _UNAVAILABLE_CODES
    return False


def store_error(exc: Exception) -> StoreError:
    """The store error a Redis failure stands for: `StoreUnavailable` where Redis cannot serve now,
    `InvalidRecord` for an episode return the append script found non-finite, else `StoreError`."""
    if isinstance(exc, StoreError):
        return exc
    if is_unavailable_error(exc):
        return StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}")
    if "T2MIR_NONFINITE" in str(exc):
        return InvalidRecord("episode return overflowed to a non-finite value", field="reward")
    return StoreError(f"redis error: {type(exc).__name__}: {exc}")


def _append_outcome(reply: list[Any]) -> AppendOutcome:
    """The append script's reply as an `AppendOutcome`."""
    status = reply[0]
    if status == "appended":
        return AppendOutcome("appended")
    if status == "duplicate":
        return AppendOutcome("duplicate", response=json_codec.loads(reply[1]))
    if status == "conflict":
        return AppendOutcome("conflict", next_step=int(reply[1]))
    return AppendOutcome("missing")


class RedisSessionStore(CheckedStore):
    """`SessionStore` on Redis >= 7.

    Args:
        url: ``redis://host:port/db`` (ignored when ``client`` is given); with ``cluster``, any
            node of the cluster (``redis://host:port``).
        client: an existing ``redis.asyncio.Redis`` or ``RedisCluster`` created with
            ``decode_responses=True``; the store then does not close it.
        cluster: connect to a Redis Cluster (`RedisCluster`) instead of a single server.
        key_prefix: first part of every key (no ``{`` / ``}``).
        ttl_seconds: idle expiry of a session, refreshed by every `load` / `append` (None: never).
        socket_connect_timeout / socket_timeout: per-attempt limits in seconds.
        retries: redis-py retries after a connection error or timeout (appends are idempotent,
            so a retried append that had in fact run answers "duplicate").
        max_connections: connection-pool size (per node in a cluster).
        wait_replicas: replicas that must confirm every create / append before it is
            acknowledged (``WAIT``); 0: acknowledged once the master has it.
        wait_timeout_ms: how long to wait for them; then the call raises `StoreUnavailable`.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Redis | RedisCluster | None = None,
        cluster: bool = False,
        key_prefix: str = "t2mir",
        ttl_seconds: float | None = None,
        socket_connect_timeout: float = 0.5,
        socket_timeout: float = 0.5,
        retries: int = 1,
        max_connections: int = 64,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and free of braces, got {key_prefix!r}")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0 or None")
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ValueError("wait_replicas must be >= 0 and wait_timeout_ms >= 1")
        self._prefix = key_prefix
        self._ttl_ms = "0" if ttl_seconds is None else str(max(1, round(ttl_seconds * 1000)))
        self._owns_client = client is None
        # A WAIT holds the socket for up to its own timeout: the read timeout must outlast it.
        read_timeout = socket_timeout + (wait_timeout_ms / 1000 if wait_replicas else 0.0)
        if client is None:
            factory = RedisCluster.from_url if cluster else Redis.from_url
            client = factory(
                url,
                decode_responses=True,
                socket_connect_timeout=socket_connect_timeout,
                socket_timeout=read_timeout,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries),
                max_connections=max_connections,
            )
        self._client: Redis | RedisCluster = client
        self._wait = (wait_replicas, wait_timeout_ms)
        # Hard ceiling per call, on top of redis-py's own timeouts and retries (a WAIT blocks
        # the socket for up to its timeout, on every attempt).
        attempt = socket_connect_timeout + read_timeout
        self._deadline = (retries + 1) * attempt + 0.25
        self._create_lua = client.register_script(lua.CREATE)
        self._load_lua = client.register_script(lua.LOAD)
        self._get_meta_lua = client.register_script(lua.GET_META)
        self._append_lua = client.register_script(lua.APPEND)

    @property
    def client(self) -> Redis | RedisCluster:
        """The underlying redis-py client (for health checks and tests)."""
        return self._client

    def keys(self, session_id: str) -> list[str]:
        """The session's keys in script order: meta, cur, eps, rank, rets."""
        base = f"{self._prefix}:{{{session_id}}}:"
        return [base + suffix for suffix in KEY_SUFFIXES]

    async def _run(self, awaitable: Awaitable[T]) -> T:
        """Await a Redis call under the overall deadline, mapping failures to store errors."""
        try:
            async with asyncio.timeout(self._deadline):
                return await awaitable
        except StoreError:
            raise
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            raise store_error(exc) from exc

    async def _create(self, meta: SessionMeta, metadata_json: str) -> None:
        session_id = meta.session_id
        args = [self._ttl_ms]
        for name, value in meta_fields(meta, metadata_json).items():
            args += [name, value]
        created = await self._run(self._write(self._create_lua, self.keys(session_id), args))
        if not created:
            raise SessionExists(session_id)

    async def _load(self, session_id: str) -> SessionState | None:
        """Full state in one atomic read, or None; refreshes the TTL."""
        res = await self._run(self._load_lua(keys=self.keys(session_id), args=[self._ttl_ms]))
        if res is None:
            return None
        flat, rets, cur, eps = res
        episodes = sorted((Episode.from_dict(json_codec.loads(e)) for e in eps), key=lambda e: e.index)
        current = [StepRecord.from_dict(json_codec.loads(r)) for r in cur]
        return SessionState(parse_meta(flat, rets), episodes, current)

    async def _get_meta(self, session_id: str) -> SessionMeta | None:
        """Metadata with progress fields, or None; read-only (works on replicas)."""
        keys = self.keys(session_id)
        res = await self._run(self._get_meta_lua(keys=[keys[0], keys[4]], args=[]))
        return None if res is None else parse_meta(res[0], res[1])

    async def _append(
        self, session_id: str, rec: StepRecord, response_json: str, created_at: float | None
    ) -> AppendOutcome:
        """Atomic, idempotent append keyed on ``record.step``: one Lua script."""
        args = self._append_args(rec, response_json, created_at)
        return _append_outcome(await self._run(self._write(self._append_lua, self.keys(session_id), args)))

    async def _append_many(self, appends: list[CheckedAppend]) -> list[AppendOutcome | StoreError]:
        """One append script per append, all in one pipeline (one round trip per node)."""
        calls = [
            (self.keys(session_id), self._append_args(rec, response_json, created_at))
            for session_id, rec, response_json, created_at in appends
        ]
        results = await self._run(self._write_many(self._append_lua, calls))
        return [store_error(r) if isinstance(r, Exception) else _append_outcome(r) for r in results]

    def _append_args(self, rec: StepRecord, response_json: str, created_at: float | None) -> list[str]:
        """ARGV of the append script (`server.store.lua.APPEND`)."""
        return [
            str(rec.step),
            encode_json(rec.to_dict(), "record"),
            response_json,
            "" if rec.reward is None else repr(rec.reward),
            "1" if rec.done else "0",
            self._ttl_ms,
            "" if created_at is None else repr(float(created_at)),
        ]

    async def _write(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        """Run a writing script; with ``wait_replicas``, acknowledged only once replicas have it."""
        if not self._wait[0]:
            return await script(keys=keys, args=args)
        (result,) = await self._write_many(script, [(keys, args)])
        if isinstance(result, Exception):
            raise result
        return result

    async def _write_many(self, script: AsyncScript, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        """Run a writing script once per (keys, args), all in one pipeline; with ``wait_replicas``,
        acknowledged only once replicas have them (else `StoreUnavailable` for all). Returns each
        call's reply, or the error Redis answered for that call alone."""
        replicas, timeout_ms = self._wait
        if replicas and isinstance(self._client, RedisCluster) and len(calls) > 1:
            # a WAIT covers the writes of one node's connection: one pipeline per call
            each = await asyncio.gather(
                *(self._write_many(script, [c]) for c in calls), return_exceptions=True
            )
            replies: list[Any] = []
            for r in each:
                if isinstance(r, BaseException) and not isinstance(r, Exception):
                    raise r  # cancelled: not an answer of Redis
                replies.append(r if isinstance(r, BaseException) else r[0])
            return replies
        node: ClusterNode | None = None
        if replicas and isinstance(self._client, RedisCluster):
            await self._client.initialize()  # no-op once the slot map is loaded
            node = self._client.get_node_from_key(calls[0][0][0])
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):  # a second round, of the calls that found no script, after SCRIPT LOAD
            # the scripts and WAIT in one pipeline: one connection, so WAIT covers these writes
            pipe: Pipeline | ClusterPipeline = self._client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if replicas and node is None:
                pipe.execute_command("WAIT", replicas, timeout_ms)
            elif replicas:
                pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
            replies = await pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=False):  # WAIT's reply is last
                if isinstance(reply, rexc.NoScriptError):
                    missing.append(i)
                else:
                    results[i] = reply
            if replicas and len(missing) < len(todo):
                self._check_confirmed(replies[-1], node, calls[0][0][0])
            if not missing:
                return results
            await self._client.script_load(script.script)
            todo = missing
        raise StoreError("script missing on the server after SCRIPT LOAD")

    def _check_confirmed(self, confirmed: Any, node: ClusterNode | None, key: str) -> None:
        """Raise `StoreUnavailable` unless WAIT's reply confirms the writes before it."""
        replicas, timeout_ms = self._wait
        if isinstance(confirmed, Exception):
            raise StoreUnavailable(f"WAIT failed: {type(confirmed).__name__}: {confirmed}")
        if node is not None and self._moved(node, key):
            raise StoreUnavailable("the session's slot moved during the write; retry")
        if int(confirmed) < replicas:
            raise StoreUnavailable(
                f"{confirmed} of {replicas} replica(s) confirmed the write within {timeout_ms} ms"
            )

    def _moved(self, node: ClusterNode, key: str) -> bool:
        """True if ``key``'s slot is now served by another node than ``node`` (WAIT asked the old one)."""
        assert isinstance(self._client, RedisCluster)
        return self._client.get_node_from_key(key) != node

    async def _delete(self, session_id: str) -> bool:
        """Remove every key of the session; True if anything existed."""
        removed = await self._run(self._client.delete(*self.keys(session_id)))
        return bool(removed)

    async def ping(self) -> None:
        """PING Redis; raise `StoreUnavailable` if it does not answer."""
        await self._run(self._client.ping())

    async def aclose(self) -> None:
        """Close the connection pool (only if the store created the client)."""
        if self._owns_client:
            await self._client.aclose()
